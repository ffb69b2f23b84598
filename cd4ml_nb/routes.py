"""HTTP adapter: thin tornado handlers under ``/cd4ml-nb/`` over the core modules.

- **Boundary.** Every path in the API is relative to Jupyter's root (the contents manager's
  ``root_dir``) and confined to it: realpath, no symlink escape, hidden files per
  ``ContentsManager.allow_hidden``. The project (git, ``pyproject.toml``, ``.cd4ml/``) is
  discovered from the notebook's folder, so it may reach above the root; what the API shows stays
  relative to the root, and error messages carry no absolute server path.
- **The event loop stays free.** Handlers are ``async``: they parse the request on the loop, then
  run the blocking part (git, files, MLflow, the tracking health check, the store lock) on the one
  small thread pool the extension owns (:class:`Extension`).
- **Errors.** Every verb is ``@tornado.web.authenticated`` and ``@authorized``. Malformed input is
  a 4xx with a JSON ``message``; core errors map to HTTP statuses in one place
  (:meth:`BaseHandler.write_error`) and are logged as one line, never as a traceback.
"""
from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, TypeVar

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join

from . import __version__, gitinfo
from .config import Cd4mlConfig
from .exceptions import BadInput, Cd4mlError, Forbidden, NotFound, PairConflict, TooLarge, TrackingError
from .project import Project

NAMESPACE = "cd4ml-nb"
AUTH_RESOURCE = "cd4ml-nb"
MAX_PAGE = 500  # runs and jobs per page
WORKERS = 4  # threads for blocking work, shared by every request
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX)
MAX_TEXT_CHARS = 1000  # other query values: branch, page_token
MAX_DEPTH = 32  # nesting of a JSON body
HTML_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
MAX_DIFF_CHARS = 200_000  # a pair's diff shown in the panel
MLFLOW_PATH = "mlflow"  # the proxied MLflow UI: /cd4ml-nb/mlflow/

T = TypeVar("T")


@dataclass(frozen=True)
class Status:
    version: str
    branch: str | None
    base_branch: str
    tracking_uri: str
    mlflow_ui_url: str | None
    mlflow_ui_proxy: str | None  # path under the server's base URL of the proxied UI of a SQLite store


def project_status(project: Project) -> Status:
    """What the frontend shows: the branch and where runs go."""
    from . import store

    return Status(
        version=__version__,
        branch=gitinfo.current_branch(project.root) if project.in_git else None,
        base_branch=project.base_branch,
        tracking_uri=project.tracking_uri,
        mlflow_ui_url=project.mlflow_ui_url,
        mlflow_ui_proxy=f"{NAMESPACE}/{MLFLOW_PATH}/" if store.is_sqlite(project.tracking_uri) else None,
    )


# --- the server root: where user paths resolve -------------------------------------------------


def _shown(text: str, limit: int = 80) -> str:
    """A user-given value for a message: quoted, clipped, surrogates escaped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(text if len(text) <= limit else text[:limit] + "…")


class ServerRoot:
    """Jupyter's root as the API sees it: paths are given relative to it and confined to it."""

    def __init__(self, server_app) -> None:
        self.app = server_app
        self.contents = getattr(server_app, "contents_manager", None)
        given = getattr(self.contents, "root_dir", None) or server_app.root_dir
        self.path = Path(os.path.realpath(given))
        self._prefixes = self._scrub_prefixes(Path(os.path.abspath(given)))

    @property
    def allow_hidden(self) -> bool:
        return bool(getattr(self.contents, "allow_hidden", False))

    def project(self, start: Path | None = None) -> Project:
        """The project of ``start`` (a file under the root; default: the root itself)."""
        return Project.discover(start or self.path, parent=self.app)

    def relative(self, path: Path | str) -> str | None:
        """``path`` relative to the root (POSIX form), or None when it is outside."""
        real = Path(os.path.realpath(path))
        if real == self.path:
            return "."
        if self.path not in real.parents:
            return None
        return real.relative_to(self.path).as_posix()

    def inside(self, path: Path, what: str = "file", *, hidden: bool = False) -> str:
        """``path`` relative to the root; Forbidden when it is outside, or hidden (unless allowed)."""
        rel = self.relative(path)
        if rel is None:
            raise Forbidden(f"the {what} {_shown(self.scrub(str(path)))} is outside the server root")
        parts = PurePosixPath(rel).parts
        if not (hidden or self.allow_hidden) and any(part.startswith(".") for part in parts if part != "."):
            raise Forbidden(f"the {what} {rel!r} is hidden, and hidden files are not allowed")
        return rel

    def file(self, text: Any, what: str = "path") -> Path:
        """The real path of the existing file ``text`` names (relative to the root), checked.

        BadInput (400) for a value that is not a usable relative path, Forbidden (403) for one
        that leaves the root (``..``, a symlink) or is hidden, NotFound (404) for no such file.
        """
        if text is None or text == "":
            raise BadInput(f"missing {what!r}")
        if not isinstance(text, str):
            raise BadInput(f"{what!r} must be a string: a path relative to the server root")
        if len(text) > MAX_PATH_CHARS:
            raise BadInput(f"{what!r} is too long ({len(text)} characters, at most {MAX_PATH_CHARS})")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"{what!r} is not valid Unicode text (a lone surrogate)") from None
        shown = _shown(text)
        if "\0" in text:
            raise BadInput(f"{shown}: a path cannot contain a NUL character")
        if text.startswith(("/", "\\")) or "\\" in text or re.match(r"^[A-Za-z]:[\\/]", text):
            raise BadInput(f"{shown}: give a path relative to the server root")
        parts = text.split("/")
        if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
            raise BadInput(f"{shown}: a name in it is too long (at most {MAX_NAME_BYTES} bytes)")
        if not self.allow_hidden and any(p.startswith(".") and p not in (".", "..") for p in parts):
            raise Forbidden(f"{shown}: hidden files and folders are not allowed")
        real = Path(os.path.realpath(self.path / text))
        if self.relative(real) is None:  # `..` or a symlink leads out
            raise Forbidden(f"{shown}: outside the server root")
        self.inside(real)  # hidden, once symlinks are resolved
        try:
            found = real.is_file()
        except OSError:
            found = False
        if not found:
            raise NotFound(f"{shown}: no such file")
        return real

    @staticmethod
    def _scrub_prefixes(root: Path) -> list[tuple[re.Pattern, str]]:
        """Absolute forms of the root and its ancestors, and the relative text that replaces them."""
        roots = {root: "", Path(os.path.realpath(root)): ""}
        for base in list(roots):
            for depth, parent in enumerate(base.parents, start=1):
                if parent != Path(parent.anchor):
                    roots.setdefault(parent, "../" * depth)
        found = []
        for path, rel in sorted(roots.items(), key=lambda item: -len(str(item[0]))):
            # a whole path, not the tail of a longer name or of a URL's host (`http://host/tmp`)
            pattern = re.compile(r"(?<![\w.~-])" + re.escape(str(path)) + r"(/|(?![\w.-]))")
            found.append((pattern, rel))
        return found

    def scrub(self, text: str) -> str:
        """``text`` with absolute paths under the root's ancestors made relative to the root."""
        for pattern, rel in self._prefixes:
            text = pattern.sub(lambda m, rel=rel: rel if m.group(1) == "/" else (rel.rstrip("/") or "."), text)
        return text


# --- the extension's state ----------------------------------------------------------------------


class Extension:
    """What the server extension owns: the root, one thread pool, the job managers, request limits."""

    def __init__(self, server_app) -> None:
        self.root = ServerRoot(server_app)
        self.limits = Cd4mlConfig(parent=server_app)  # server-wide: c.Cd4mlConfig.max_request_bytes
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="cd4ml-nb")
        self.log = server_app.log
        base_url = server_app.web_app.settings.get("base_url", "/") if getattr(server_app, "web_app", None) else "/"
        from .mlflow_ui import MlflowUi

        self.mlflow_ui = MlflowUi(url_path_join(base_url, NAMESPACE, MLFLOW_PATH))
        self._managers: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def jobs(self, project: Project):
        """The job manager of ``project`` (one per project, made on first use)."""
        from .jobs import JobManager

        with self._lock:
            if project.root not in self._managers:
                self._managers[project.root] = JobManager(project, root=self.root.path)
            return self._managers[project.root]

    def all_jobs(self) -> list:
        """The root project's job manager first, then those of other projects met since start."""
        first = self.jobs(self.root.project())
        with self._lock:
            return [first, *(m for m in self._managers.values() if m is not first)]

    def start(self) -> None:
        """At server start: runs left RUNNING by dead job processes become FAILED, queued jobs start."""
        try:
            from . import tracking

            project = self.root.project()
            fixed = tracking.reconcile_orphans(project)
            if fixed:
                self.log.info("cd4ml_nb: marked %d orphaned run(s) FAILED", len(fixed))
            self.jobs(project).resume()
        except Exception as e:  # never break the server start
            self.log.warning("cd4ml_nb: start-up (orphaned runs, queued jobs): %s", self.root.scrub(str(e)))


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


def _check_parameters(values: Any, limit: int) -> dict[str, Any]:
    """The ``parameters`` of a request: an object whose values' JSON is at most ``limit`` bytes each."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BadInput("'parameters' must be an object of name: value")
    for name, value in values.items():
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > limit:
            raise TooLarge(f"parameter {_shown(name)}: its value is {size} bytes of JSON, over the limit of "
                           f"{limit} bytes (max_parameter_bytes)")
    return values


class BaseHandler(APIHandler):
    """Shared behaviour: blocking work off the loop, request parsing, error mapping and logging."""

    auth_resource = AUTH_RESOURCE

    @property
    def ext(self) -> Extension:
        return self.settings["cd4ml_nb"]

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the extension's thread pool; the event loop serves others meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.ext.executor, functools.partial(fn, *args))

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
        """The JSON object of the request body (empty: ``{}``), within max_request_bytes."""
        raw = self.request.body or b""
        limit = self.ext.limits.max_request_bytes
        if len(raw) > limit:
            raise TooLarge(f"the request body is {len(raw)} bytes, over the limit of {limit} bytes "
                           "(max_request_bytes)")
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


# --- the core calls behind each route (run on the thread pool) ----------------------------------


def _status(root: ServerRoot) -> dict[str, Any]:
    return asdict(project_status(root.project()))


def _pairing_state(root: ServerRoot, project: Project, real: Path) -> dict[str, Any]:
    from . import pairing

    rel = root.inside(real)
    pair = pairing.find_pair(real, project)
    if pair is None:
        return {"path": rel, "paired": False, "ipynb": None, "text": None, "formats": None, "in_sync": None,
                "newer": None, "conflict": False, "missing": None, "basis": None, "diff": None}
    compared = pairing.compare(pair, project)
    state = compared.to_json(project)
    state.update(ipynb=root.inside(pair.ipynb, "paired file"), text=root.inside(pair.text, "paired file"))
    diff = None
    if not compared.in_sync and compared.missing is None:  # what a sync would settle, for the panel
        diff = root.scrub(pairing.diff(pair))
        if len(diff) > MAX_DIFF_CHARS:
            diff = diff[:MAX_DIFF_CHARS] + f"\n… (cut at {MAX_DIFF_CHARS} characters)\n"
    return {"path": rel, "paired": True, **state, "diff": diff}


def _read_pairing(root: ServerRoot, text: Any) -> dict[str, Any]:
    real = root.file(text)
    return _pairing_state(root, root.project(real), real)


def _pair(root: ServerRoot, text: Any) -> dict[str, Any]:
    from . import pairing

    real = root.file(text)
    project = root.project(real)
    pair = pairing.find_pair(real, project, default=True)
    if pair is not None:  # both sides must be inside the root before anything is written
        root.inside(pair.ipynb, "paired file")
        root.inside(pair.text, "paired file")
    pairing.pair_notebook(real, project)
    return _pairing_state(root, project, real)


def _sync(root: ServerRoot, text: Any, keep: Any) -> dict[str, Any]:
    """Sync the pair of ``text``: from the side that changed, or from ``keep`` (settles a conflict)."""
    from . import pairing

    if keep not in (None, "ipynb", "text"):
        raise BadInput("'keep' must be \"ipynb\", \"text\" or absent")
    real = root.file(text)
    project = root.project(real)
    pair = pairing.find_pair(real, project)
    if pair is None:
        raise BadInput(f"{_shown(root.inside(real))} is not paired: pair it first")
    root.inside(pair.ipynb, "paired file")  # both sides inside the root before anything is written
    root.inside(pair.text, "paired file")
    done = pairing.sync_pair(pair, project, keep=keep)
    return {**_pairing_state(root, project, real), "done": root.scrub(done)}


def _contract(root: ServerRoot, text: Any) -> dict[str, Any]:
    from . import notebooks, params

    real = root.file(text)
    contract = params.read_contract(notebooks.read(real).node, root.inside(real))
    return {**contract.to_json(), "schema": params.json_schema(contract)}


def _check_values(root: ServerRoot, text: Any, texts: Any) -> dict[str, Any]:
    """The form's texts checked against the notebook's contract: typed values and a reason per misfit."""
    from . import notebooks, params

    real = root.file(text)
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise BadInput("'texts' must be an object of name: text")
    contract = params.read_contract(notebooks.read(real).node, root.inside(real))
    values, errors = params.check_texts(contract, texts)
    return {"values": values, "errors": errors}


def _submit(ext: Extension, text: Any, values: Any) -> dict[str, Any]:
    real = ext.root.file(text)
    project = ext.root.project(real)
    values = _check_parameters(values, project.config.max_parameter_bytes)
    job = ext.jobs(project).submit(ext.root.inside(real), values)
    return {"id": job.id}


def _list_jobs(ext: Extension, limit: int, offset: int) -> dict[str, Any]:
    managers = ext.all_jobs()
    if len(managers) == 1:
        jobs, total = managers[0].list_page(limit, offset)
    else:  # several projects under the root: merge their newest-first pages
        jobs, total = [], 0
        for manager in managers:
            page, count = manager.list_page(offset + limit, 0)
            jobs += page
            total += count
        jobs = sorted(jobs, key=lambda j: j.created, reverse=True)[offset:offset + limit]
    return {"jobs": [job.to_json() for job in jobs], "total": total, "limit": limit, "offset": offset}


def _find_job(ext: Extension, job_id: str):
    """The manager that holds job ``job_id``, and the job."""
    from .jobs import JOB_ID

    if JOB_ID.match(job_id):
        for manager in ext.all_jobs():
            try:
                return manager, manager.get(job_id)
            except NotFound:
                continue
    raise NotFound(f"no job {_shown(job_id, 40)}")


def _job(ext: Extension, job_id: str) -> dict[str, Any]:
    return _find_job(ext, job_id)[1].to_json()


def _cancel(ext: Extension, job_id: str) -> dict[str, Any]:
    manager, _ = _find_job(ext, job_id)
    job = manager.cancel(job_id)
    return {"id": job.id, "state": job.state}


def _job_html(ext: Extension, job_id: str) -> bytes:
    manager, _ = _find_job(ext, job_id)
    path = manager.html_path(job_id)
    ext.root.inside(Path(path), "HTML render", hidden=True)
    try:
        return Path(path).read_bytes()
    except OSError:
        raise NotFound(f"job {job_id}: its HTML render is gone") from None


def _runs(root: ServerRoot, branch: str | None, notebook: str | None, limit: int,
          page_token: str | None) -> dict[str, Any]:
    from . import pairing, tracking

    tag = None
    if notebook:
        real = root.file(notebook, "notebook")
        project = root.project(real)
        tag = pairing.notebook_id(project, real)  # one name for both sides of a pair
    else:
        project = root.project()
    experiment = tracking.branch_experiment(project, branch)
    try:
        if not page_token:  # heartbeats expire while Lab runs too: the first page shows them orphaned
            tracking.reconcile_orphans(project, experiment)
        page = tracking.runs_page(project, experiment, tag, limit, page_token)
    except Cd4mlError:
        raise
    except Exception as e:  # MLflow's own errors (a server that answers 5xx, a store it cannot read)
        from mlflow.exceptions import MlflowException

        if not isinstance(e, MlflowException):
            raise
        raise TrackingError(f"MLflow store {project.tracking_uri}: {str(e).splitlines()[0][:300]}") from None
    runs = []
    for run in page.runs:
        shown = asdict(run)
        shown["notebook"] = root.relative(project.root / run.notebook) if run.notebook else None
        runs.append(shown)
    return {"experiment": experiment, "runs": runs, "next_page_token": page.next_page_token}


MAX_COMPARED = 10  # runs one comparison takes


def _run_links(root: ServerRoot, project: Project, run) -> dict[str, Any]:
    """Where a run's executed notebook and HTML render are, relative to the root (None when gone or outside)."""
    from . import tracking

    out_dir, notebook = run.data.tags.get(tracking.OUTPUT_DIR), run.data.tags.get(tracking.NOTEBOOK)
    links: dict[str, Any] = {"executed": None, "html": None}
    if out_dir and notebook:
        executed = Path(out_dir) / f"{PurePosixPath(notebook).stem}.ipynb"
        for key, path in (("executed", executed), ("html", executed.with_suffix(".html"))):
            if path.is_file():
                links[key] = root.relative(path)
    return links


def _run_summary(root: ServerRoot, project: Project, run) -> dict[str, Any]:
    from . import tracking

    shown = asdict(tracking.summarize(run))
    shown["branch"] = run.data.tags.get(tracking.GIT_BRANCH)
    shown["notebook"] = root.relative(project.root / shown["notebook"]) if shown["notebook"] else None
    return {**shown, **_run_links(root, project, run)}


def _gate_verdict(project: Project, run, metric: str, tolerance: str) -> dict[str, Any]:
    """What ``cd4ml-nb gate`` says of the run's branch against the base, for one metric."""
    from . import compare, tracking

    branch = run.data.tags.get(tracking.GIT_BRANCH)
    notebook = run.data.tags.get(tracking.NOTEBOOK)
    verdict: dict[str, Any] = {"branch": branch, "base": project.base_branch, "metric": metric,
                               "max_regression": tolerance, "passed": None, "checks": [], "message": None}
    if not branch:
        verdict["message"] = "the run records no git branch: nothing to gate"
        return verdict
    value, relative = compare.parse_tolerance(tolerance)
    try:
        result = compare.gate(project, [compare.GateSpec(metric, "", value, relative)], branch=branch,
                              notebooks=[notebook] if notebook and (project.root / notebook).is_file() else [])
    except compare.CannotEvaluate as e:
        verdict["message"] = str(e)
        return verdict
    verdict.update(passed=result.passed, checks=[c.describe() for c in result.checks],
                   message="; ".join(s.describe() for s in result.skipped) or None)
    return verdict


def _compare_runs(root: ServerRoot, data: dict[str, Any]) -> dict[str, Any]:
    """Two or more runs against the first: ``cd4ml-nb diff`` per pair, metric deltas with each
    metric's goal, and ``cd4ml-nb gate`` of the last run's branch against the base."""
    from . import compare, repro, tracking

    ids = data.get("run_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not 2 <= len(ids) <= MAX_COMPARED:
        raise BadInput(f"'run_ids' must be a list of 2 to {MAX_COMPARED} run ids")
    metric, tolerance = data.get("metric"), data.get("max_regression", "0")
    if metric is not None and not isinstance(metric, str) or not isinstance(tolerance, str):
        raise BadInput("'metric' and 'max_regression' must be strings")
    project = root.project()
    c = tracking.client(project, create=False)
    ids = list(dict.fromkeys(tracking.resolve_run_id(c, i) for i in ids))
    if len(ids) < 2:
        raise BadInput("give two different runs to compare")
    runs = [c.get_run(i) for i in ids]
    reference, others = runs[0], runs[1:]
    diffs = [repro.diff_runs(project, ids[0], run.info.run_id).to_json() for run in others]
    names = sorted({m for run in runs for m in run.data.metrics})
    deltas = [
        {"run_id": run.info.run_id, **compare.MetricDelta(m, compare.goal_of(m), reference.data.metrics.get(m),
                                                          run.data.metrics.get(m)).to_json()}
        for run in others for m in names
    ]
    metric = metric or (names[0] if names else None)
    return {
        "reference": ids[0],
        "runs": [_run_summary(root, project, run) for run in runs],
        "goals": {m: compare.goal_of(m) for m in names},
        "deltas": deltas,
        "diffs": diffs,
        "gate": _gate_verdict(project, runs[-1], metric, tolerance) if metric else None,
    }


def _run_html(root: ServerRoot, run_id: str) -> bytes:
    from . import tracking

    project = root.project()
    c = tracking.client(project, create=False)
    run = c.get_run(tracking.resolve_run_id(c, run_id))
    html = _run_links(root, project, run)["html"]
    if html is None:
        raise NotFound(f"run {run_id[:12]}: no HTML render under the server root")
    path = root.path / html
    root.inside(path, "HTML render", hidden=True)
    return path.read_bytes()


# --- handlers -----------------------------------------------------------------------------------


class StatusHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.off_loop(_status, self.ext.root))


class PairingHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.off_loop(_read_pairing, self.ext.root, self.text_arg("path")))

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        self.reply(await self.off_loop(_pair, self.ext.root, self.body().get("path")))


class PairingSyncHandler(BaseHandler):
    """Sync a pair as ``cd4ml-nb sync`` does; ``keep`` chooses the side when both changed."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        data = self.body()
        self.reply(await self.off_loop(_sync, self.ext.root, data.get("path"), data.get("keep")))


class ParamsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.off_loop(_contract, self.ext.root, self.text_arg("path")))


class ParamsCheckHandler(BaseHandler):
    """The form's texts checked by the same parser the runner uses (no second parser in the browser)."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        data = self.body()
        self.reply(await self.off_loop(_check_values, self.ext.root, data.get("path"), data.get("texts")))


class JobsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_arg("limit", 50, 1, MAX_PAGE)
        offset = self.int_arg("offset", 0, 0, 10**9)
        self.reply(await self.off_loop(_list_jobs, self.ext, limit, offset))

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        data = self.body()
        self.reply(await self.off_loop(_submit, self.ext, data.get("path"), data.get("parameters")), status=202)


class JobHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.reply(await self.off_loop(_job, self.ext, job_id))

    @tornado.web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        self.reply(await self.off_loop(_cancel, self.ext, job_id))


class JobHtmlHandler(BaseHandler):
    """The executed notebook rendered as HTML, sandboxed (its outputs are untrusted)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        html = await self.off_loop(_job_html, self.ext, job_id)
        self.set_header("Content-Security-Policy", HTML_CSP)
        self.finish(html, set_content_type="text/html; charset=utf-8")


class RunsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_arg("max_results", 50, 1, MAX_PAGE, clamp=True)
        self.reply(await self.off_loop(_runs, self.ext.root, self.text_arg("branch"), self.text_arg("notebook"),
                                       limit, self.text_arg("page_token")))


class CompareHandler(BaseHandler):
    """Selected runs compared: what ``cd4ml-nb diff`` and ``cd4ml-nb gate`` compute."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        self.reply(await self.off_loop(_compare_runs, self.ext.root, self.body()))


class RunHtmlHandler(BaseHandler):
    """A run's executed notebook rendered as HTML, sandboxed like a job's."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        html = await self.off_loop(_run_html, self.ext.root, run_id)
        self.set_header("Content-Security-Policy", HTML_CSP)
        self.finish(html, set_content_type="text/html; charset=utf-8")


# --- the MLflow UI of the project's SQLite store, started on demand and proxied -------------------

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


class MlflowProxyHandler(JupyterHandler):
    """MLflow's UI and REST, of the embedded store, under ``/cd4ml-nb/mlflow/``.

    A JupyterHandler, not an APIHandler: the UI's own scripts and styles must run (an API's CSP is
    ``default-src 'none'``). Authenticated and authorized like every route. XSRF: MLflow's UI sends
    no token, so a write passes without one only when it is one of the UI's JSON REST calls, made
    by a page of this origin (``Sec-Fetch-Site: same-origin`` or an ``Origin`` equal to this
    server's); anything else needs Jupyter's XSRF token as usual. Every response but the UI's page
    and static files is sandboxed (artifacts are user content).
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

        ui = self.ext.mlflow_ui.running
        if ui is None:
            ui = await asyncio.get_running_loop().run_in_executor(self.ext.executor, _ensure_mlflow_ui, self.ext)
        headers = HTTPHeaders()
        for name in _PROXY_REQUEST_HEADERS:
            for value in self.request.headers.get_list(name):
                headers.add(name, value)
        method = self.request.method
        started = False
        status = (0, "")
        replaced = False  # an error page of MLflow's, answered as the API's JSON message instead

        def on_header(line: str) -> None:
            nonlocal started, status, replaced
            if line.startswith("HTTP/"):
                start = parse_response_start_line(line.strip())
                status = (start.code, start.reason)
                self.set_status(start.code, start.reason)
                self.clear_header("Content-Type")
                started, replaced = True, False
                return
            if not started:
                return
            if not line.strip():  # end of the headers
                replaced = status[0] >= 400 and not self._headers.get("Content-Type", "").startswith("application/json")
                if replaced:
                    self.clear_header("Content-Type")
                return
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if name.lower() in _PROXY_RESPONSE_HEADERS:
                if name.lower() == "location" and value.startswith(ui.origin):
                    value = value[len(ui.origin):] or "/"
                self.add_header(name, value)

        def on_chunk(chunk: bytes) -> None:
            if not replaced:
                self.write(chunk)
                self.flush()

        request = HTTPRequest(
            ui.origin + self.request.uri, method=method, headers=headers,
            body=self.request.body if method in ("POST", "PUT", "PATCH") else None,
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
    (rf"{MLFLOW_PATH}/(.*)", MlflowProxyHandler),
]


def setup_route_handlers(server_app) -> Extension:
    """Register the routes; start-up work (orphaned runs, queued jobs) runs on the thread pool."""
    ext = Extension(server_app)
    web_app = server_app.web_app
    web_app.settings["cd4ml_nb"] = ext
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, NAMESPACE, path), handler) for path, handler in ROUTES])
    ext.executor.submit(ext.start)
    return ext
