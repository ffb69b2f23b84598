"""A guard process that ends the MLflow runs of a process that died without ending them.

The owner (a ``cd4ml-nb run``, a sweep, a kernel under :func:`cd4ml_nb.track`) starts one guard
and tells it, through a pipe, each run id it creates. When the owner has ended its runs it says
``done`` and the guard exits. If the owner dies first (SIGKILL, OOM, a killed kernel) the pipe
reaches end-of-file at once and the guard sets every listed run that is still RUNNING — and every
RUNNING run tagged with the owner as its ``cd4ml.runner``, which covers a run created just before
the owner died, before it could say so — to a terminal status: within seconds, on this host or any
other, with no polling. The guard imports nothing heavy until it has to act, and lives in its own
session so that a signal to the owner's process group does not take it down too.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time


class Guard:
    """The owner's side: ``add`` run ids as they are created, ``release`` once they are ended."""

    def __init__(self, tracking_uri: str, status: str = "FAILED", reason: str = "orphaned") -> None:
        self._lock = threading.Lock()
        owner = f"{socket.gethostname()}:{os.getpid()}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cd4ml_nb.guard", tracking_uri, status, reason, owner],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, text=True,
        )

    def add(self, run_id: str) -> None:
        self._send(f"run {run_id}\n")

    def release(self) -> None:
        """The owner ended its runs: the guard exits without touching them."""
        self._send("done\n")
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            except (OSError, ValueError):  # the guard is gone: reconcile_orphans remains
                pass


def _end(tracking_uri: str, run_ids: list[str], status: str, reason: str, owner: str) -> None:
    """End each listed or owned run still RUNNING with ``status`` and the tags saying why (as ``end_run``).

    The store may be busy (a SQLite file another process writes): each step is tried a few times.
    """
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    message = f"the process that ran it ({owner}) ended without ending it"
    for run_id in dict.fromkeys([*run_ids, *_retried(lambda: _owned(c, owner), "search", [])]):
        _retried(lambda: _end_one(c, run_id, status, [RunTag("cd4ml.status.reason", reason),
                                                     RunTag("cd4ml.status.message", message)]), f"run {run_id}")


def _owned(c, owner: str) -> list[str]:
    """The RUNNING runs, in any experiment, whose ``cd4ml.runner`` tag names ``owner``."""
    ids = [e.experiment_id for e in c.search_experiments()]
    if not ids:
        return []
    found = c.search_runs(ids, filter_string=f"attributes.status = 'RUNNING' and tags.`cd4ml.runner` = '{owner}'",
                          max_results=1000)
    return [r.info.run_id for r in found]


def _end_one(c, run_id: str, status: str, tags: list) -> None:
    if c.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        c.log_batch(run_id, tags=tags)
        c.set_terminated(run_id, status)


def _retried(step, what: str, default=None, attempts: int = 5):
    """``step()``, retried with back-off; after the last failure, say so on stderr and return ``default``."""
    for attempt in range(attempts):
        try:
            return step()
        except Exception as e:  # a busy or briefly unreachable store: try again, then report
            if attempt == attempts - 1:
                print(f"cd4ml-nb guard: {what} failed: {e}", file=sys.stderr)
                return default
            time.sleep(0.5 * 2 ** attempt)


def _store_exists(tracking_uri: str) -> bool:
    """False only for a local SQLite store that was never created (the guard creates no store)."""
    prefix = "sqlite:///"
    return not tracking_uri.startswith(prefix) or os.path.exists(tracking_uri[len(prefix):])


def main(argv: list[str]) -> int:
    tracking_uri, status, reason, owner = argv
    run_ids: list[str] = []
    for line in sys.stdin:
        word, _, value = line.strip().partition(" ")
        if word == "done":
            return 0
        if word == "run" and value:
            run_ids.append(value)
    if run_ids or _store_exists(tracking_uri):  # end of input without "done": the owner died
        _end(tracking_uri, run_ids, status, reason, owner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
