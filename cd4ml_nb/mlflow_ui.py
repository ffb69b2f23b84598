"""The MLflow UI of a project's SQLite store, started on demand for the Jupyter server to proxy.

One ``mlflow server`` process per Jupyter server: on 127.0.0.1 and a free port, ``--workers 1``,
its pages and REST under ``--static-prefix`` (the path the Jupyter server proxies, so the UI's
relative links resolve through the proxy). It starts on the first request, after
``tracking.client(project)`` has created the store complete, and its whole process tree ends
with the Jupyter server (:meth:`MlflowUi.stop`, also registered with :mod:`atexit`).

What reaches it through the proxy (:func:`upstream_target`, :func:`local_location`): the path as the
browser sent it and the query without Jupyter's own parameters (``token``, ``_xsrf``: MLflow logs
every request line, and its log is in the project); redirects only to this same UI. Its log
``.cd4ml/mlflow-ui.log`` is created 0600.

No tornado here: the proxying handler lives in ``mlflow_proxy.py``.
"""
from __future__ import annotations

import atexit
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .exceptions import NotFound, TrackingError
from .processes import stop_tree
from .project import Project

START_TIMEOUT = 120.0  # seconds for `mlflow server` to answer /health on a busy machine
STOP_TIMEOUT = 20.0
LOG_NAME = "mlflow-ui.log"
LOG_MODE = 0o600  # MLflow logs every request line: nobody else reads it
JUPYTER_QUERY = frozenset({"token", "_xsrf"})  # Jupyter's credentials, never passed on
_URL_NOISE = re.compile(r"[\t\n\r]")  # what browsers drop inside a URL
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))  # and around it


def upstream_target(path: str, query: str) -> str:
    """The path and query the proxy asks of the MLflow UI: ``path`` as given (still percent-encoded)
    and ``query`` without Jupyter's parameters (any case), the others left as they were encoded."""
    kept = [part for part in query.split("&")
            if part and urllib.parse.unquote_plus(part.partition("=")[0]).lower() not in JUPYTER_QUERY]
    return path + ("?" + "&".join(kept) if kept else "")


def local_location(value: str, origin: str) -> str | None:
    """A ``Location`` of the MLflow UI (at ``origin``) as the browser should follow it: a path of this
    server (an absolute URL of the UI made relative), or None when it leads anywhere else (another
    host or port, a scheme-relative ``//host``, ``javascript:``), read as a browser reads it."""
    text = _URL_NOISE.sub("", value.strip(_C0_AND_SPACE))
    seen = text.replace("\\", "/")
    parts = urllib.parse.urlsplit(seen)
    if not parts.scheme and not parts.netloc and not seen.startswith("//"):
        return text
    if f"{parts.scheme}://{parts.netloc}".lower() == origin.lower():
        rest = seen[len(origin):]
        return rest if rest.startswith("/") and not rest.startswith("//") else "/" + rest.lstrip("/")
    return None


@dataclass(frozen=True)
class UiProcess:
    """A running MLflow UI: where it listens and which store it shows."""

    pid: int
    port: int
    prefix: str
    tracking_uri: str

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowUi:
    """The on-demand MLflow UI of one Jupyter server, serving under the URL path ``prefix``
    (as the browser sends it, percent-encoded)."""

    def __init__(self, prefix: str, start_timeout: float = START_TIMEOUT) -> None:
        # MLflow routes on decoded paths: a base URL such as `/a%40b/` is `/a@b/` to it.
        self.prefix = "/" + urllib.parse.unquote(prefix).strip("/")
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._running: UiProcess | None = None
        self._exit_hook = False

    @property
    def running(self) -> UiProcess | None:
        """The UI process, when one was started and is still alive."""
        proc, running = self._proc, self._running
        return running if proc is not None and proc.poll() is None else None

    def ensure(self, project: Project) -> UiProcess:
        """The running UI of ``project``'s store: started (and the store created) when needed.

        NotFound when the store is an MLflow server (it has its own UI); TrackingError when
        ``mlflow server`` does not come up, with the last line it logged.
        """
        from . import store

        uri = project.tracking_uri
        if not store.is_sqlite(uri):
            shown = project.mlflow_ui_url or uri
            raise NotFound(f"runs go to the MLflow server {shown}: open its own UI there")
        with self._lock:
            running = self.running
            if running is not None and running.tracking_uri == uri:
                return running
            self._stop_locked()
            from . import tracking

            tracking.client(project)  # the store is born complete before MLflow opens it
            return self._start_locked(project)

    def _start_locked(self, project: Project) -> UiProcess:
        state = project.ensure_state_dir()
        log_path = state / LOG_NAME
        port = free_port()
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", project.tracking_uri,
            "--default-artifact-root", project.artifact_root.as_uri(),
            "--no-serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--static-prefix", self.prefix,
        ]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with _private_log(log_path) as log:
            proc = subprocess.Popen(command, cwd=state, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
        self._proc = proc
        self._running = UiProcess(pid=proc.pid, port=port, prefix=self.prefix, tracking_uri=project.tracking_uri)
        if not self._exit_hook:
            atexit.register(self.stop)
            self._exit_hook = True
        try:
            self._wait_ready(proc, f"{self._running.origin}{urllib.parse.quote(self.prefix)}/health", log_path)
        except BaseException:
            self._stop_locked()
            raise
        return self._running

    def _wait_ready(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                raise TrackingError(f"the MLflow UI exited with {proc.returncode} at start: {_last_line(log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise TrackingError(f"the MLflow UI did not answer within {self.start_timeout:.0f} s: "
                                    f"{_last_line(log_path)}")
            time.sleep(0.2)

    def stop(self) -> None:
        """End the UI's whole process tree (MLflow's server and its workers), if it runs; also
        while a start is still waiting for it (that start then fails)."""
        locked = self._lock.acquire(timeout=5)
        try:
            self._stop_locked()
        finally:
            if locked:
                self._lock.release()

    def _stop_locked(self) -> None:
        proc, self._proc, self._running = self._proc, None, None
        if proc is not None and proc.poll() is None:  # never signal a pid the system may have reused
            stop_tree(proc.pid, STOP_TIMEOUT)
        if proc is not None:
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass


def _private_log(path: Path):
    """``path`` truncated and opened for writing, 0600 (also when an older, wider file is there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), LOG_MODE)
    os.fchmod(fd, LOG_MODE)
    return os.fdopen(fd, "wb")


def _last_line(log_path: Path) -> str:
    try:
        lines = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(nothing logged)"
