"""Processes this package starts or records: whether one recorded earlier still runs (its pid and
its start time: a pid alone proves nothing, the system reuses them), and stopping a server's tree."""
from __future__ import annotations

from typing import Any

CREATE_TIME_SLACK = 1.0  # seconds: the boot time behind create_time moves when the clock is stepped


def process_start(pid: int) -> float:
    """The start time of process ``pid`` (``psutil.Process(pid).create_time()``)."""
    import psutil

    return psutil.Process(pid).create_time()


def launched_process(launch: dict) -> "Any | None":
    """The ``psutil.Process`` a ``launch.json`` names when it still runs, else None.

    The pid alone proves nothing (the system reuses pids): the process must also have started
    when the launch record says. A zombie (exited, not reaped by its parent) no longer runs.
    """
    import psutil

    pid = launch.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    expected = launch.get("create_time")
    if not isinstance(expected, (int, float)) or isinstance(expected, bool):
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - expected) > CREATE_TIME_SLACK or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return proc


def stop_tree(pid: int, timeout: float, root_grace: float | None = None) -> None:
    """SIGTERM process ``pid`` and all its descendants; SIGKILL the descendants alive after
    ``timeout``, then the root if it is still alive ``root_grace`` (default ``timeout``) seconds
    later — a server whose workers have ended need not be waited for through its teardown."""
    import psutil

    try:
        root = psutil.Process(pid)
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in (root, *descendants):
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    for group, grace in ((descendants, timeout), ([root], timeout if root_grace is None else root_grace)):
        _, alive = psutil.wait_procs(group, timeout=grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=timeout)
