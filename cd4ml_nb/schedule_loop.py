"""The Jupyter server's schedule loop: while Lab runs, fire due schedules (no extra daemon).

A daemon thread (never the server's event loop) looks every ``schedule_check_seconds`` for a due
slot (cheap: the configuration, the cron and the state files; no MLflow) and, when there is one,
runs ``cd4ml-nb schedule run-due`` as a child process, which claims each slot under its lock (so
the server, a second server and a system cron never fire one slot twice). :meth:`ScheduleLoop.stop`
(at the server's exit) ends the loop and the child (SIGTERM: its run ends KILLED, its slot stays
claimed).
"""
from __future__ import annotations

import atexit
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from . import schedules
from .exceptions import Cd4mlError
from .project import Project

STOP_TIMEOUT = 30.0  # seconds the child gets to end its run after SIGTERM


class ScheduleLoop:
    """The loop of one server: ``discover()`` gives the project of the server's root each time."""

    def __init__(self, discover: Callable[[], Project], log: Any) -> None:
        self.discover, self.log = discover, log
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None
        self.reported: set[str] = set()  # problems already logged (once each)
        self.thread = threading.Thread(target=self.loop, name="cd4ml-schedules", daemon=True)

    def start(self) -> "ScheduleLoop":
        self.thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """End the loop and a running ``run-due`` child; idempotent."""
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(STOP_TIMEOUT)

    def loop(self) -> None:
        interval = 30.0
        while not self.stopping.is_set():
            try:
                interval = self.tick()
            except (Cd4mlError, OSError, ValueError) as e:  # a bad pyproject.toml: say it once, look again later
                self.once(f"cd4ml_nb: schedules: {e}")
            if interval <= 0 or self.stopping.wait(interval):
                return

    def once(self, message: str) -> None:
        if message not in self.reported:
            self.reported.add(message)
            self.log.warning(message)

    def tick(self) -> float:
        """One look: fire what is due (in a child process, waited for); the seconds to the next look."""
        project = self.discover()
        interval = project.config.schedule_check_seconds
        if interval <= 0 or not project.config.schedules:
            return interval
        found, problems = schedules.load(project)
        for problem in problems:
            self.once(f"cd4ml_nb: schedule not fired: {problem}")
        if problems or not schedules.any_due(project, found):
            return interval
        self.run_due(project)
        return interval

    def run_due(self, project: Project) -> None:
        """``cd4ml-nb schedule run-due`` in the project, its output appended to .cd4ml/schedules/run-due.log."""
        command = [sys.executable, "-m", "cd4ml_nb.cli", "schedule", "run-due"]
        if not project.is_embedded_store:
            command += ["--tracking-uri", project.tracking_uri]
        log_file = schedules.state_dir(project) / "run-due.log"
        with open(log_file, "ab") as out:
            if self.stopping.is_set():
                return
            self.child = subprocess.Popen(command, cwd=project.root, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        code = self.child.wait()
        self.child = None
        self.log.info("cd4ml_nb: schedule run-due exited %s (log: %s)", code, Path(log_file))
