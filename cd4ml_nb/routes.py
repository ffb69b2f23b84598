"""HTTP adapter: thin tornado handlers under ``/cd4ml-nb/`` over the core modules.

- **Boundary.** Every path in the API is relative to Jupyter's root (the contents manager's
  ``root_dir``) and confined to it: realpath, no symlink escape, hidden files per
  ``ContentsManager.allow_hidden``. The project (git, ``pyproject.toml``, ``.cd4ml/``) is
  discovered from the notebook's folder, so it may reach above the root; what the API shows stays
  relative to the root, and error messages carry no absolute server path.
- **The event loop stays free.** Handlers are ``async``: they parse the request on the loop, then
  run the blocking part (git, files, MLflow, the tracking health check, the store lock) on one of
  the extension's two small thread pools (:class:`Extension`): the cheap routes (``status``, a
  job's state and its cancel, a pair's state) on their own, so that a flood of listings never
  delays them; each route holds at most all of its pool's threads but one.
- **Bodies are judged on the headers** (:mod:`.http_bodies`): at most ``max_request_bytes`` is
  kept; a body declared far over it is refused (413) before it is read.
- **Errors.** Every verb is ``@tornado.web.authenticated`` and ``@authorized``. Malformed input is
  a 4xx with a JSON ``message``; core errors map to HTTP statuses in one place
  (:meth:`BaseHandler.write_error`) and are logged as one line, never as a traceback. The work
  behind each route is :mod:`.lab`; the MLflow UI proxy is :mod:`.mlflow_proxy`.
"""
from __future__ import annotations

import asyncio
import functools
import json
import math
from typing import Any, Callable, TypeVar

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from . import lab, lab_pipelines
from .exceptions import BadInput, Cd4mlError, PairConflict
from .http_bodies import BoundedBody
from .lab import AUTH_RESOURCE, MLFLOW_PATH, NAMESPACE, Extension
from .mlflow_proxy import MlflowProxyHandler
from .server_root import MAX_PATH_CHARS

MAX_PAGE = 500  # runs and jobs per page
MAX_TEXT_CHARS = 1000  # other query values: branch, page_token
MAX_DEPTH = 32  # nesting of a JSON body
HTML_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"

T = TypeVar("T")


# --- requests -----------------------------------------------------------------------------------


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _check_json(value: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings that are not valid Unicode (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadInput(f"{what} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            keys = list(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            keys = []
            stack.extend((v, depth + 1) for v in item)
        else:
            keys = [item] if isinstance(item, str) else []
        for text in keys:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput(f"{what} has a string that is not valid Unicode (a lone surrogate)") from None


@tornado.web.stream_request_body
class BaseHandler(BoundedBody, APIHandler):
    """Shared behaviour: blocking work off the loop, request parsing, error mapping and logging."""

    auth_resource = AUTH_RESOURCE

    @property
    def ext(self) -> Extension:
        return self.settings["cd4ml_nb"]

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the pool of the expensive routes; the event loop serves others meanwhile."""
        return await self._on_pool(False, functools.partial(fn, *args))

    async def quick(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the pool of the cheap routes, which no listing ever holds."""
        return await self._on_pool(True, functools.partial(fn, *args))

    async def _on_pool(self, control: bool, call: Callable[[], T]) -> T:
        pool, slots = self.ext.lane(f"{type(self).__name__}.{self.request.method}", control)
        async with slots:
            return await asyncio.get_running_loop().run_in_executor(pool, call)

    def text_arg(self, name: str) -> str | None:
        """A query value (not stripped); None when absent or empty; 400 when too long."""
        value = self.get_query_argument(name, None, strip=False)
        if value and len(value) > (MAX_PATH_CHARS if name in ("path", "notebook") else MAX_TEXT_CHARS):
            raise BadInput(f"{name!r} is too long ({len(value)} characters)")
        return value or None

    def int_arg(self, name: str, default: int, low: int, high: int, *, clamp: bool = False) -> int:
        text = self.get_query_argument(name, None)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise BadInput(f"{name!r} must be an integer") from None
        if clamp:
            return min(high, max(low, value))
        if not low <= value <= high:
            raise BadInput(f"{name!r} must be between {low} and {high} (got {value})")
        return value

    def body(self) -> dict[str, Any]:
        """The JSON object of the request body (empty: ``{}``), within max_request_bytes (413 above)."""
        raw = self.body_in.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
        except RecursionError:
            raise BadInput(f"the request body is nested more than {MAX_DEPTH} levels deep") from None
        except ValueError as e:  # includes UnicodeDecodeError
            raise BadInput(f"the request body is not JSON ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(data, dict):
            raise BadInput("the request body must be a JSON object")
        _check_json(data, "the request body")
        return data

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Cd4mlError):
            scrub = self.ext.root.scrub
            payload = {"message": scrub(str(exc)), "error": type(exc).__name__}
            if isinstance(exc, PairConflict):
                payload["diff"] = scrub(exc.diff)
            self.set_status(exc.http_status)
            self.finish(json.dumps(payload))
            return
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        """Errors of ours are expected (bad input, a store away): one line, no traceback."""
        if isinstance(value, Cd4mlError):
            message = self.ext.root.scrub(str(value)).splitlines() or [""]
            self.log.warning("cd4ml-nb %s %s: %d %s: %s", self.request.method, self.request.path,
                             value.http_status, type(value).__name__, message[0][:500])
            return
        super().log_exception(typ, value, tb)


# --- handlers -----------------------------------------------------------------------------------


class StatusHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.quick(lab.status_of, self.ext.root))


class PairingHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.quick(lab.read_pairing, self.ext.root, self.text_arg("path")))

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        self.reply(await self.off_loop(lab.pair, self.ext.root, self.body().get("path")))


class PairingSyncHandler(BaseHandler):
    """Sync a pair as ``cd4ml-nb sync`` does; ``keep`` chooses the side when both changed."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        from . import collab

        data = self.body()
        live = await collab.sync_live(self.serverapp, self.ext.root, data.get("path"), data.get("keep"))
        if live is not None:  # a collaboration room holds the pair: it merges and saves, no direct write
            self.reply(live)
            return
        self.reply(await self.off_loop(lab.sync, self.ext.root, data.get("path"), data.get("keep")))


class ParamsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.off_loop(lab.contract, self.ext.root, self.text_arg("path")))


class ParamsCheckHandler(BaseHandler):
    """The form's texts checked by the same parser the runner uses (no second parser in the browser)."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        data = self.body()
        self.reply(await self.off_loop(lab.check_values, self.ext.root, data.get("path"), data.get("texts")))


class JobsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_arg("limit", 50, 1, MAX_PAGE)
        offset = self.int_arg("offset", 0, 0, 10**9)
        self.reply(await self.off_loop(lab.list_jobs, self.ext, limit, offset))

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        data = self.body()
        self.reply(await self.off_loop(lab.submit, self.ext, data.get("path"), data.get("parameters")), status=202)


class JobHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.reply(await self.quick(lab.job, self.ext, job_id))

    @tornado.web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        self.reply(await self.quick(lab.cancel, self.ext, job_id))


class JobHtmlHandler(BaseHandler):
    """The executed notebook rendered as HTML, sandboxed (its outputs are untrusted)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        html = await self.off_loop(lab.job_html, self.ext, job_id)
        self.set_header("Content-Security-Policy", HTML_CSP)
        self.finish(html, set_content_type="text/html; charset=utf-8")


class RunsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_arg("max_results", 50, 1, MAX_PAGE, clamp=True)
        self.reply(await self.off_loop(lab.runs_of, self.ext.root, self.text_arg("branch"), self.text_arg("notebook"),
                                       limit, self.text_arg("page_token")))


class CompareHandler(BaseHandler):
    """Selected runs compared: what ``cd4ml-nb diff`` and ``cd4ml-nb gate`` compute."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        self.reply(await self.off_loop(lab.compare_runs, self.ext.root, self.body()))


class RunHtmlHandler(BaseHandler):
    """A run's executed notebook rendered as HTML, sandboxed like a job's."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        html = await self.off_loop(lab.run_html, self.ext.root, run_id)
        self.set_header("Content-Security-Policy", HTML_CSP)
        self.finish(html, set_content_type="text/html; charset=utf-8")


class PipelinesHandler(BaseHandler):
    """Pipeline runs of a branch with their steps (status, cache hit, duration)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_arg("limit", 20, 1, MAX_PAGE, clamp=True)
        self.reply(await self.off_loop(lab_pipelines.list_pipelines, self.ext.root, self.text_arg("branch"), limit))


class PipelineFileHandler(BaseHandler):
    """The pipeline file's steps and parameters (the project's cd4ml-pipeline.yaml unless ``path``)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.off_loop(lab_pipelines.describe, self.ext.root, self.text_arg("path")))


class PipelineJobsHandler(BaseHandler):
    """Start ``pipeline run`` as a background job (its state and cancel: ``jobs/ID``)."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        self.reply(await self.off_loop(lab_pipelines.submit, self.ext, self.body()), status=202)


class BranchesHandler(BaseHandler):
    """Every branch experiment with its state (``cd4ml-nb branches``); runs of one: ``runs?branch=``."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.off_loop(lab.branches_of, self.ext.root))


ROUTES = [
    ("status", StatusHandler),
    ("pairing", PairingHandler),
    ("pairing/sync", PairingSyncHandler),
    ("params", ParamsHandler),
    ("params/check", ParamsCheckHandler),
    ("jobs", JobsHandler),
    (r"jobs/([^/]+)", JobHandler),
    (r"jobs/([^/]+)/html", JobHtmlHandler),
    ("runs", RunsHandler),
    (r"runs/([^/]+)/html", RunHtmlHandler),
    ("compare", CompareHandler),
    ("branches", BranchesHandler),
    ("pipelines", PipelinesHandler),
    ("pipelines/file", PipelineFileHandler),
    ("pipelines/jobs", PipelineJobsHandler),
    (rf"{MLFLOW_PATH}/(.*)", MlflowProxyHandler),
]


def setup_route_handlers(server_app) -> Extension:
    """Register the routes; start-up work (orphaned runs, queued jobs) runs on the thread pool."""
    web_app = server_app.web_app
    base_url = web_app.settings["base_url"]
    ext = Extension(server_app, url_path_join(base_url, NAMESPACE, MLFLOW_PATH))
    web_app.settings["cd4ml_nb"] = ext
    web_app.add_handlers(".*$", [(url_path_join(base_url, NAMESPACE, path), handler) for path, handler in ROUTES])
    ext.executor.submit(ext.start)
    return ext
