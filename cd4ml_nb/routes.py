"""HTTP adapter: thin tornado handlers under ``/cd4ml-nb/`` over the core modules.

Every verb is ``@tornado.web.authenticated`` and ``@authorized``; every path is confined to the
server root (realpath, no symlink escape, hidden files per ``ContentsManager.allow_hidden``).
Core errors map to HTTP statuses in one place (:meth:`BaseHandler.write_error`).
"""
from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from . import __version__, gitinfo
from .exceptions import BadInput, Cd4mlError, NotFound, PairConflict
from .project import Project

NAMESPACE = "cd4ml-nb"
AUTH_RESOURCE = "cd4ml-nb"
MAX_PAGE = 500


@dataclass(frozen=True)
class Status:
    version: str
    branch: str | None
    base_branch: str
    tracking_uri: str
    mlflow_ui_url: str | None


def project_status(project: Project) -> Status:
    """What the frontend shows: the branch and where runs go."""
    return Status(
        version=__version__,
        branch=gitinfo.current_branch(project.root) if project.in_git else None,
        base_branch=project.base_branch,
        tracking_uri=project.tracking_uri,
        mlflow_ui_url=project.mlflow_ui_url,
    )


class BaseHandler(APIHandler):
    """Shared behaviour: the project, confined paths, JSON bodies, error mapping."""

    auth_resource = AUTH_RESOURCE

    @functools.cached_property
    def project(self) -> Project:
        """Discovered once per request (git and pyproject.toml are read each time it is made)."""
        app = self.settings["cd4ml_nb_server_app"]
        return Project.discover(app.root_dir, parent=app)

    @property
    def jobs(self):
        return self.settings["cd4ml_nb_jobs"](self.project)

    def user_path(self, text: str | None) -> str:
        """A server-root-relative path, checked: exists inside the root, not hidden unless allowed."""
        if not text:
            raise BadInput("missing 'path'")
        project = self.project
        allow_hidden = getattr(self.settings.get("contents_manager"), "allow_hidden", False)
        if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text) or "\\" in text:
            raise BadInput(f"{text!r}: give a path relative to the server root")
        real = project.confine(text, allow_hidden=allow_hidden)
        if not real.is_file():
            raise NotFound(f"{text}: no such file")
        return project.relative(real)

    def body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise BadInput("request body is not JSON") from None
        if not isinstance(data, dict):
            raise BadInput("request body must be a JSON object")
        return data

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Cd4mlError):
            payload = {"message": str(exc), "error": type(exc).__name__}
            if isinstance(exc, PairConflict):
                payload["diff"] = exc.diff
            self.set_status(exc.http_status)
            self.finish(json.dumps(payload))
            return
        super().write_error(status_code, **kwargs)


class StatusHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        self.reply(asdict(project_status(self.project)))


def _pairing_state(project: Project, rel: str) -> dict[str, Any]:
    from . import pairing

    pair = pairing.find_pair(project.root / rel, project)
    if pair is None:
        return {"path": rel, "paired": False, "ipynb": None, "text": None, "formats": None, "in_sync": None,
                "newer": None, "conflict": False, "missing": None, "basis": None}
    state = pairing.compare(pair, project).to_json(project)
    return {"path": rel, "paired": True, **state}


class PairingHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        rel = self.user_path(self.get_query_argument("path", None))
        self.reply(_pairing_state(self.project, rel))

    @tornado.web.authenticated
    @authorized
    def post(self) -> None:
        from . import pairing

        rel = self.user_path(self.body().get("path"))
        project = self.project
        pairing.pair_notebook(project.root / rel, project)
        self.reply(_pairing_state(project, rel))


class ParamsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        from . import notebooks, params

        rel = self.user_path(self.get_query_argument("path", None))
        nb = notebooks.read(self.project.root / rel)
        self.reply(params.read_contract(nb.node, rel).to_json())


class JobsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        self.reply({"jobs": [job.to_json() for job in self.jobs.list()]})

    @tornado.web.authenticated
    @authorized
    def post(self) -> None:
        data = self.body()
        rel = self.user_path(data.get("path"))
        values = data.get("parameters") or {}
        if not isinstance(values, dict):
            raise BadInput("'parameters' must be an object of name: value")
        job = self.jobs.submit(rel, values)
        self.reply({"id": job.id}, status=202)


class JobHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self, job_id: str) -> None:
        self.reply(self.jobs.get(job_id).to_json())

    @tornado.web.authenticated
    @authorized
    def delete(self, job_id: str) -> None:
        job = self.jobs.cancel(job_id)
        self.reply({"id": job.id, "state": job.state})


class JobHtmlHandler(BaseHandler):
    """The executed notebook rendered as HTML, sandboxed (its outputs are untrusted)."""

    @tornado.web.authenticated
    @authorized
    def get(self, job_id: str) -> None:
        path = self.jobs.html_path(job_id)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:")
        self.finish(path.read_bytes())


class RunsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        from . import tracking

        project = self.project
        branch = self.get_query_argument("branch", None)
        notebook = self.get_query_argument("notebook", None)
        if notebook:
            notebook = self.user_path(notebook)
        try:
            limit = min(MAX_PAGE, max(1, int(self.get_query_argument("max_results", "50"))))
        except ValueError:
            raise BadInput("max_results must be an integer") from None
        experiment = tracking.branch_experiment(project, branch)
        page = tracking.runs_page(project, experiment, notebook, limit, self.get_query_argument("page_token", None))
        self.reply({"experiment": experiment, "runs": [asdict(r) for r in page.runs],
                    "next_page_token": page.next_page_token})


ROUTES = [
    ("status", StatusHandler),
    ("pairing", PairingHandler),
    ("params", ParamsHandler),
    ("jobs", JobsHandler),
    (r"jobs/([^/]+)", JobHandler),
    (r"jobs/([^/]+)/html", JobHtmlHandler),
    ("runs", RunsHandler),
]


def setup_route_handlers(server_app) -> None:
    """Register the routes; job managers are made on first use, one per project root."""
    from .jobs import JobManager

    managers: dict[str, JobManager] = {}
    lock = threading.Lock()

    def jobs_for(project: Project) -> JobManager:
        with lock:
            key = str(project.root)
            if key not in managers:
                managers[key] = JobManager(project)
            return managers[key]

    web_app = server_app.web_app
    web_app.settings["cd4ml_nb_server_app"] = server_app
    web_app.settings["cd4ml_nb_jobs"] = jobs_for
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, NAMESPACE, path), handler) for path, handler in ROUTES])
    threading.Thread(target=_reconcile, args=(server_app,), name="cd4ml-reconcile", daemon=True).start()


def _reconcile(server_app) -> None:
    """On server start: runs left RUNNING by dead job processes become FAILED (orphaned)."""
    try:
        project = Project.discover(server_app.root_dir, parent=server_app)
        from . import tracking

        fixed = tracking.reconcile_orphans(project)
        if fixed:
            server_app.log.info("cd4ml_nb: marked %d orphaned run(s) FAILED", len(fixed))
    except Exception as e:  # never break the server start
        server_app.log.warning("cd4ml_nb: could not reconcile orphaned runs: %s", e)
