"""Request bodies within their limit, judged on the headers: every route of the extension (the MLflow
proxy included) receives its body piece by piece (tornado's ``stream_request_body``) and keeps at
most ``max_request_bytes`` of it in memory.

- A ``Content-Length`` over the limit by more than :data:`DRAIN_BYTES` is answered 413 before any
  of the body is read, and the connection is closed.
- One over the limit by less is read and dropped as it arrives, then answered 413 on a connection
  that stays usable: a client that sends its whole body before it reads (urllib, requests) sees the
  413 rather than a reset connection.
- A chunked body is counted as it arrives: dropped once over the limit, cut off (413, connection
  closed) once over it by more than :data:`DRAIN_BYTES`.

:class:`BodyLimit` is the bookkeeping, without tornado; :class:`BoundedBody` plugs it into a handler.
"""
from __future__ import annotations

from .exceptions import TooLarge

DRAIN_BYTES = 4 * 1024 * 1024  # read and dropped past the limit, so that a simple client gets its 413


class BodyLimit:
    """One request's body, received piece by piece, kept only while within ``limit`` bytes."""

    def __init__(self, limit: int, declared: str | None) -> None:
        self.limit = limit
        self.received = 0
        self._parts = bytearray()
        text = (declared or "").strip()  # tornado itself refuses a malformed length
        self.declared = int(text) if text.isascii() and text.isdigit() else None

    @property
    def over(self) -> bool:
        """The body is over the limit: declared so, or more of it has arrived."""
        return (self.declared or 0) > self.limit or self.received > self.limit

    def refuse_at_once(self) -> bool:
        """Its declared length is so far over the limit that not a byte of it is worth reading."""
        return self.declared is not None and self.declared > self.limit + DRAIN_BYTES

    def add(self, chunk: bytes) -> bool:
        """Take the next piece; False when the body is now too far over the limit to read on."""
        self.received += len(chunk)
        if self.over:
            self._parts = bytearray()
            return self.received <= self.limit + DRAIN_BYTES
        self._parts += chunk
        return True

    def error(self) -> TooLarge:
        """The 413 of a body over the limit, naming the limit and the setting."""
        size = self.declared if self.declared is not None else self.received
        more = "" if self.declared is not None else "at least "
        return TooLarge(f"the request body is {more}{size} bytes, over the limit of {self.limit} bytes "
                        "(max_request_bytes)")

    def body(self) -> bytes:
        """The whole body; TooLarge when it was over the limit."""
        if self.over:
            raise self.error()
        return bytes(self._parts)


class BoundedBody:
    """Mixin (first base) of a handler decorated with ``tornado.web.stream_request_body``: the body
    is judged on the headers, after authentication, and kept within :meth:`body_limit` (read it
    with ``self.body_in.body()``)."""

    body_in: BodyLimit

    def body_limit(self) -> int:
        """The largest body this handler accepts: the server's ``max_request_bytes``."""
        return self.settings["cd4ml_nb"].limits.max_request_bytes  # type: ignore[attr-defined]

    async def prepare(self) -> None:
        """Authenticate (Jupyter's ``prepare``), then refuse a declared length far over the limit."""
        self.body_in = BodyLimit(self.body_limit(), self.request.headers.get("Content-Length"))  # type: ignore[attr-defined]
        await super().prepare()  # type: ignore[misc]
        if self.body_in.refuse_at_once():
            raise self.body_in.error()

    async def data_received(self, chunk: bytes) -> None:
        """Keep the piece while within the limit; cut the request off when far over it."""
        if not self.body_in.add(chunk):
            error = self.body_in.error()
            self.log_exception(TooLarge, error, None)  # type: ignore[attr-defined]
            self.send_error(error.http_status, exc_info=(TooLarge, error, None))  # type: ignore[attr-defined]
