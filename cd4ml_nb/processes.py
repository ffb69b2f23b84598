"""Whether a process recorded earlier still runs: its pid and its start time (a pid alone proves
nothing, the system reuses them)."""
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
