"""cd4ml_nb: pair, run and track notebooks per git branch (Continuous Delivery for ML).

``import cd4ml_nb`` is cheap: mlflow, papermill, nbconvert and tornado load only when used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - source tree without a build
    __version__ = "dev"

if TYPE_CHECKING:
    from .runner import Callbacks, RunOptions, RunResult, run_notebook
    from .data import log_dataset
    from .tracking import track

__all__ = ["Callbacks", "RunOptions", "RunResult", "log_dataset", "run_notebook", "track", "__version__"]

_LAZY = {"run_notebook": "runner", "RunResult": "runner", "RunOptions": "runner", "Callbacks": "runner",
         "track": "tracking", "log_dataset": "data"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cd4ml_nb' has no attribute {name!r}")


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "cd4ml-nb"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cd4ml_nb"}]


def _load_jupyter_server_extension(server_app) -> None:
    from . import collab
    from .routes import setup_route_handlers
    from .schedule_loop import ScheduleLoop

    ext = setup_route_handlers(server_app)
    ext.schedules = ScheduleLoop(ext.root.project, server_app.log).start()  # fires due schedules, stops at exit
    collab.install(server_app.log)  # pairs under jupyter-collaboration, when it is installed
    server_app.log.info("Registered cd4ml_nb server extension at /cd4ml-nb/")
