"""Servers in the foreground: the MLflow UI on the project's store, and a team tracking server."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import project_at, say

def cmd_ui(args: argparse.Namespace) -> int:

    project = project_at(".", args.tracking_uri)
    if not project.tracking_uri.startswith("sqlite:"):
        say(f"the tracking server has its own UI: {project.mlflow_ui_url or project.tracking_uri}")
        return 0
    from .. import tracking

    tracking.client(project)  # create the store first, under the lock
    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", project.tracking_uri,
               "--default-artifact-root", project.artifact_root.as_uri(), "--host", "127.0.0.1",
               "--port", str(args.port), "--workers", "1"]
    say(f"MLflow UI on {project.tracking_uri}: {url} (Ctrl-C to stop)")
    return serve(command, None if args.no_browser else url)


def cmd_server(args: argparse.Namespace) -> int:
    from .. import store

    project = project_at(".")
    folder = project.ensure_state_dir() / "server"
    folder.mkdir(exist_ok=True)
    backend = args.backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI") or store.uri_of(folder / "mlflow.db")
    artifacts = Path(args.artifacts or folder / "artifacts").resolve()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", args.host,
               "--port", str(args.port), "--workers", str(args.workers)]
    if backend.startswith("sqlite:"):  # born complete before MLflow's workers open it
        backend = store.absolute_uri(backend, Path.cwd())
        store.ensure_sqlite(backend, "mlflow-artifacts:/")
    uri = f"http://{args.host}:{args.port}"
    say(f"MLflow tracking server: backend {backend}, artifacts {artifacts}")
    say(f"use it with: export MLFLOW_TRACKING_URI={uri}   (or --tracking-uri {uri}); Ctrl-C stops it")
    return serve(command)


def serve(command: list[str], open_url: str | None = None) -> int:
    """Run a server in the foreground; Ctrl-C or SIGTERM stop it and every process it started
    (MLflow's workers and job consumers), then return 130 (interrupted). A server that ends by
    itself gives its own exit code."""
    import subprocess

    from ..runner import signals_as_interrupts

    with signals_as_interrupts():
        server = subprocess.Popen(command)  # same process group: a kill of the group reaches it too
        try:
            if open_url:
                import webbrowser

                webbrowser.open(open_url)
            return server.wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (failures.Terminated)
            return 130
        finally:
            if server.poll() is None:  # never signal a pid the system may have given to another process
                from ..mlflow_ui import stop_tree

                stop_tree(server.pid)


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("server", cmd_server, "start an MLflow tracking server for the team (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", metavar="URI", help="sqlite:///... or postgresql://... "
                   "(default: .cd4ml/server/mlflow.db)")
    p.add_argument("--artifacts", metavar="DIR", help="artifact folder (default: .cd4ml/server/artifacts)")
    p.add_argument("--workers", type=int, default=2)

    p = add("ui", cmd_ui, "open the MLflow UI on the project's store (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--tracking-uri", metavar="URI")
