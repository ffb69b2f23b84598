"""HTTP adapter: thin tornado handlers under ``/cd4ml-nb/`` over the core modules.

Every handler is authenticated and authorized; errors of the core are mapped to HTTP statuses
in one place (:meth:`BaseHandler.write_error`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from . import __version__, gitinfo
from .exceptions import Cd4mlError
from .project import Project

NAMESPACE = "cd4ml-nb"
AUTH_RESOURCE = "cd4ml-nb"


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
    """Shared behaviour: project discovery and error mapping."""

    auth_resource = AUTH_RESOURCE

    @property
    def project(self) -> Project:
        app = self.settings["cd4ml_nb_server_app"]
        return Project.discover(app.root_dir, parent=app)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Cd4mlError):
            self.set_status(exc.http_status)
            self.finish(json.dumps({"message": str(exc), "error": type(exc).__name__}))
            return
        super().write_error(status_code, **kwargs)


class StatusHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        self.finish(json.dumps(asdict(project_status(self.project))))


ROUTES = [("status", StatusHandler)]


def setup_route_handlers(server_app) -> None:
    web_app = server_app.web_app
    web_app.settings["cd4ml_nb_server_app"] = server_app
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, NAMESPACE, path), handler) for path, handler in ROUTES])
