"""Servers in the foreground: the MLflow UI on the project's store, and a team tracking server."""
from __future__ import annotations

import argparse
import os
import sys

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
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}  # no job runner unless asked for
    return serve(command, None if args.no_browser else url, env=env)


def cmd_server(args: argparse.Namespace) -> int:
    from .. import team_server

    options = team_server.ServerOptions(host=args.host, port=args.port, workers=args.workers,
                                        backend_store_uri=args.backend_store_uri, artifacts=args.artifacts,
                                        auth=args.auth, insecure=args.insecure)
    team_server.refuse_open(options)  # before anything is created or started
    folder = project_at(".").ensure_state_dir() / "server"
    folder.mkdir(exist_ok=True)
    launch = team_server.prepare(options, folder, os.environ)  # refuses before anything starts
    for line in launch.banner:
        say(line)
    return serve(launch.command, env=launch.env, umask=launch.umask)


def serve(command: list[str], open_url: str | None = None, env: dict[str, str] | None = None,
          umask: int | None = None) -> int:
    """Run a server in the foreground (with ``env`` and ``umask`` when given); Ctrl-C or SIGTERM
    stop it and every process it started (MLflow's workers), then return 130 (interrupted). A
    server that ends by itself gives its own exit code."""
    import subprocess

    from ..runner import signals_as_interrupts

    with signals_as_interrupts():
        # same process group: a kill of the group reaches it too
        server = subprocess.Popen(command, env=env, umask=-1 if umask is None else umask)
        try:
            if open_url:
                import webbrowser

                webbrowser.open(open_url)
            return server.wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (failures.Terminated)
            return 130
        finally:
            if server.poll() is None:  # never signal a pid the system may have given to another process
                from ..team_server import stop_server

                stop_server(server.pid)


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("server", cmd_server, "start an MLflow tracking server for the team (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1", help="listen address; one that is not loopback (e.g. "
                   "0.0.0.0) needs --auth or --insecure")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", metavar="URI", help="sqlite:///... or postgresql://... (psycopg 3, "
                   "the postgres extra); default: MLFLOW_BACKEND_STORE_URI, else .cd4ml/server/mlflow.db. A URI "
                   "with a password is better given in MLFLOW_BACKEND_STORE_URI (never on a command line)")
    p.add_argument("--artifacts", metavar="DIR", help="artifact folder (default: .cd4ml/server/artifacts)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--auth", action="store_true", help="require sign-in (MLflow's basic-auth app; the admin "
                   "is MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, else generated in .cd4ml/server/admin.env)")
    p.add_argument("--insecure", action="store_true", help="allow a host that is not loopback without --auth "
                   "(a trusted network only)")

    p = add("ui", cmd_ui, "open the MLflow UI on the project's store (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--tracking-uri", metavar="URI")
