"""A guard process that ends the MLflow runs of a process that died without ending them.

The owner (a ``cd4ml-nb run``, a sweep, a kernel under :func:`cd4ml_nb.track`) starts one guard
and tells it, through a pipe, each run id it creates. When the owner has ended its runs it says
``done`` and the guard exits. If the owner dies first (SIGKILL, OOM, a killed kernel) the pipe
reaches end-of-file at once and the guard sets every listed run that is still RUNNING to a
terminal status — within seconds, on this host or any other, with no polling. The guard imports
nothing heavy until it has to act, and lives in its own session so that a signal to the owner's
process group does not take it down too.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading


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
    """End each listed run still RUNNING with ``status`` and the tags saying why (as ``end_run``)."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    message = f"the process that ran it ({owner}) ended without ending it"
    for run_id in run_ids:
        try:
            if c.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
                c.log_batch(run_id, tags=[RunTag("cd4ml.status.reason", reason),
                                          RunTag("cd4ml.status.message", message)])
                c.set_terminated(run_id, status)
        except Exception as e:  # one run that cannot be ended must not keep the others RUNNING
            print(f"cd4ml-nb guard: run {run_id} could not be ended: {e}", file=sys.stderr)


def main(argv: list[str]) -> int:
    tracking_uri, status, reason, owner = argv
    run_ids: list[str] = []
    for line in sys.stdin:
        word, _, value = line.strip().partition(" ")
        if word == "done":
            return 0
        if word == "run" and value:
            run_ids.append(value)
    if run_ids:  # end of input without "done": the owner died
        _end(tracking_uri, run_ids, status, reason, owner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
