"""What a tracking server's answers mean to team mode's sender (:mod:`cd4ml_nb.forwarder`): try again
later (:class:`ServerUnreachable`, after a :class:`Backoff` delay) or never (:class:`Refused`)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .exceptions import TrackingError


class ServerUnreachable(TrackingError):
    """The server did not take a request for a reason that is not the request's (no answer, 5xx, 408,
    429, 401/403, an answer that is not MLflow's): try again later, after ``retry_after`` seconds when
    it said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def down(self) -> bool:
        """Nothing listens at the server's address (no process there to come back within seconds)."""
        return "Connection refused" in str(self)


class Refused(TrackingError):
    """The server refused a request for good (a 4xx with MLflow's error about the request itself, e.g.
    INVALID_PARAMETER_VALUE); ``code`` is MLflow's error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Backoff:
    """Delays between tries while a server does not answer: ``first``, doubling up to ``cap`` seconds,
    each shortened at random by up to ``jitter`` of itself (runners that lost one server do not retry
    in step); a server's ``Retry-After`` is honoured up to the cap."""

    first: float = 0.5
    cap: float = 10.0
    jitter: float = 0.5
    _base: float = field(default=0.0, init=False, repr=False)

    def next(self, retry_after: float | None = None) -> float:
        """The delay before the next try."""
        base = min(self._base or self.first, self.cap)
        self._base = min(base * 2, self.cap)
        delay = base * (1 - random.uniform(0, self.jitter))
        return min(max(delay, retry_after or 0.0), self.cap)

    def reset(self) -> None:
        """Start from ``first`` again (after a success)."""
        self._base = 0.0


def meaning(error: Exception) -> TrackingError:
    """What an exception of MLflow's client means: Refused for a 4xx about the request, else unreachable."""
    from mlflow.exceptions import RestException

    message = (str(error).splitlines() or [type(error).__name__])[0]
    response = getattr(error, "response", None)  # requests' HTTPError (artifact repositories raise it)
    if response is not None and getattr(response, "status_code", None):
        status = response.status_code
        if 400 <= status < 500 and status not in (401, 403, 408, 429):
            return Refused(message, f"HTTP {status}")
        return ServerUnreachable(message)
    if isinstance(error, RestException):
        status = error.get_http_status_code()
        if 400 <= status < 500 and status not in (401, 403, 408, 429):
            return Refused(message, error.error_code)
    return ServerUnreachable(message)
