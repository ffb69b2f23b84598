"""The MLflow UI of the project's SQLite store under ``/cd4ml-nb/mlflow/``: started on demand
(:mod:`.mlflow_ui`) and proxied by one authenticated handler.

What MLflow gets: the path, the query without Jupyter's ``token`` and ``_xsrf``, the request
headers in ``_PROXY_REQUEST_HEADERS``, a body within ``max_request_bytes`` (:mod:`.http_bodies`).
What the browser gets: MLflow's answer, but a redirect that leads off this UI is answered 502."""
from __future__ import annotations

import asyncio
import json
import re

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler

from .exceptions import Cd4mlError, TrackingError
from .http_bodies import BoundedBody
from .lab import AUTH_RESOURCE, Extension
from .mlflow_ui import local_location, upstream_target


# What the proxy passes on: request headers MLflow reads, response headers the browser needs.
# Not passed: cookies, Authorization (Jupyter's credentials stay here), Origin/Referer/Host (MLflow
# sees a local client; Jupyter has checked the request), hop-by-hop headers, lengths and encodings
# (the body is re-framed here).
_PROXY_REQUEST_HEADERS = ("Accept", "Accept-Language", "Content-Type", "If-Match", "If-None-Match",
                          "If-Modified-Since", "Range")
_PROXY_RESPONSE_HEADERS = {"content-type", "cache-control", "etag", "last-modified", "expires",
                           "content-disposition", "content-range", "accept-ranges", "location", "vary"}
# The only requests of MLflow's UI that change state: its JSON REST calls (fetch, same origin).
_MLFLOW_UI_WRITES = re.compile(r"^(ajax-api/[0-9.]+/mlflow/|graphql$)")
_MLFLOW_UI_PAGES = re.compile(r"^(|static-files/.*)$")  # the UI itself; all else is data (sandboxed)


def _ensure_mlflow_ui(ext: Extension):
    return ext.mlflow_ui.ensure(ext.root.project())


@tornado.web.stream_request_body
class MlflowProxyHandler(BoundedBody, JupyterHandler):
    """MLflow's UI and REST, of the embedded store, under ``/cd4ml-nb/mlflow/``.

    A JupyterHandler, not an APIHandler: the UI's own scripts and styles must run (an API's CSP is
    ``default-src 'none'``). Authenticated and authorized like every route. XSRF: MLflow's UI sends
    no token, so a write passes without one only when it is one of the UI's JSON REST calls, made
    by a page of this origin (``Sec-Fetch-Site: same-origin`` or an ``Origin`` equal to this
    server's); anything else needs Jupyter's XSRF token as usual. Every response but the UI's page
    and static files is sandboxed (artifacts are user content). Jupyter's token in the query string
    authenticates the request here and goes no further.
    """

    auth_resource = AUTH_RESOURCE

    @property
    def ext(self) -> Extension:
        return self.settings["cd4ml_nb"]

    def get_login_url(self) -> str:
        raise tornado.web.HTTPError(403)  # no login page redirect: 403, like the API routes

    def _same_origin(self) -> bool:
        site = self.request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        origin = self.request.headers.get("Origin")
        return origin is not None and origin == f"{self.request.protocol}://{self.request.host}"

    def check_xsrf_cookie(self):
        path = self.path_args[0] if self.path_args else ""
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if (getattr(self, "_jupyter_current_user", None) is not None and self.request.method in ("POST", "PATCH", "DELETE")
                and _MLFLOW_UI_WRITES.match(path) and content_type == "application/json" and self._same_origin()):
            return None
        return super().check_xsrf_cookie()

    async def _proxy(self, path: str) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
        from tornado.httputil import HTTPHeaders, parse_response_start_line

        method = self.request.method
        body = self.body_in.body() if method in ("POST", "PUT", "PATCH") else None  # 413 when over the limit
        ui = self.ext.mlflow_ui.running
        if ui is None:
            pool, slots = self.ext.lane("MlflowProxyHandler.start")
            async with slots:
                ui = await asyncio.get_running_loop().run_in_executor(pool, _ensure_mlflow_ui, self.ext)
        headers = HTTPHeaders()
        for name in _PROXY_REQUEST_HEADERS:
            for value in self.request.headers.get_list(name):
                headers.add(name, value)
        started = False
        status = (0, "")
        replaced = False  # an error page of MLflow's, answered as the API's JSON message instead
        offsite = False  # a redirect away from the UI, answered 502 instead

        def on_header(line: str) -> None:
            nonlocal started, status, replaced, offsite
            if line.startswith("HTTP/"):
                start = parse_response_start_line(line.strip())
                status = (start.code, start.reason)
                self.set_status(start.code, start.reason)
                self.clear_header("Content-Type")
                self.clear_header("Location")
                started, replaced, offsite = True, False, False
                return
            if not started:
                return
            if not line.strip():  # end of the headers
                replaced = offsite or (status[0] >= 400
                                       and not self._headers.get("Content-Type", "").startswith("application/json"))
                if replaced:
                    self.clear_header("Content-Type")
                    self.clear_header("Location")
                return
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if name.lower() in _PROXY_RESPONSE_HEADERS:
                if name.lower() == "location":
                    local = local_location(value, ui.origin)
                    offsite = offsite or local is None
                    value = local or ""
                self.add_header(name, value)

        def on_chunk(chunk: bytes) -> None:
            if not replaced:
                self.write(chunk)
                self.flush()

        request = HTTPRequest(
            ui.origin + upstream_target(self.request.path, self.request.query), method=method, headers=headers,
            body=body,
            follow_redirects=False, allow_nonstandard_methods=True, decompress_response=True,
            connect_timeout=10, request_timeout=600, header_callback=on_header, streaming_callback=on_chunk,
        )
        if not _MLFLOW_UI_PAGES.match(path):
            self.set_header("Content-Security-Policy", self.content_security_policy + "; sandbox")
        try:
            await AsyncHTTPClient().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as e:
            if started:
                raise
            raise TrackingError(f"the MLflow UI did not answer ({e})") from None
        if not started:
            raise TrackingError("the MLflow UI did not answer")
        if offsite:
            self.set_status(502)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": f"MLflow UI: a redirect ({status[0]}) off this server, not followed",
                                    "error": "MlflowUi"}))
            return
        if replaced:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": f"MLflow UI: {status[0]} {status[1]}", "error": "MlflowUi"}))
            return
        self.finish()

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Cd4mlError):
            self.clear_header("Content-Security-Policy")
            self.set_header("Content-Security-Policy", self.content_security_policy + "; sandbox")
            self.set_status(exc.http_status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": self.ext.root.scrub(str(exc)), "error": type(exc).__name__}))
            return
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, Cd4mlError):
            self.log.warning("cd4ml-nb %s %s: %d %s: %s", self.request.method, self.request.path,
                             value.http_status, type(value).__name__, str(value).splitlines()[0][:500])
            return
        super().log_exception(typ, value, tb)

    @tornado.web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self._proxy(path)

    @tornado.web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self._proxy(path)

    @tornado.web.authenticated
    @authorized
    async def patch(self, path: str) -> None:
        await self._proxy(path)

    @tornado.web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self._proxy(path)
