"""Why a run did not finish: papermill's and nbclient's errors, Ctrl-C and SIGTERM read as a terminal
status (FAILED, KILLED), a reason and the cell of the source notebook it happened in."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from . import params

IOPUB_TIMEOUT = "Timeout waiting for IOPub output"  # nbclient's message when the rest of a cell's output is late


class Terminated(KeyboardInterrupt):
    """SIGTERM received: handled like Ctrl-C, recorded as such."""


@dataclass(frozen=True)
class Failure:
    """Why a run did not finish."""

    status: str
    reason: str
    message: str
    cell: int | None = None
    ename: str | None = None
    evalue: str | None = None




ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill drops these cells before executing


def kept_cells(node) -> list[int]:
    """Source indices of the cells papermill executes, in order (its own error markers dropped)."""
    return [i for i, cell in enumerate(node.cells) if ERROR_MARKER_TAG not in cell.get("metadata", {}).get("tags", [])]


def _source_index(exec_index: int, kept: list[int], contract: params.Contract, injected_params: bool) -> int | None:
    """Map a cell index of the executed copy back to the source notebook."""
    index = exec_index
    if injected_params and contract.cell_index in kept and index > kept.index(contract.cell_index):
        index -= 1
    return kept[index] if 0 <= index < len(kept) else None


def _last_started_cell(executed: Path) -> int | None:
    """The last cell of the executed copy papermill started (its metadata has a start time)."""
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    started = [i for i, c in enumerate(nb.get("cells", [])) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def classify(error: BaseException, executed: Path, kept: list[int], contract: params.Contract,
             injected: bool, iopub_timeout: float) -> Failure:
    """Why papermill stopped: ``error`` read as a terminal status, a reason and the source cell."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, Terminated):
        return Failure("KILLED", "terminated", "stopped by SIGTERM")
    if isinstance(error, KeyboardInterrupt):
        return Failure("KILLED", "interrupted", "interrupted (Ctrl-C)")
    if isinstance(error, PapermillExecutionError):
        if error.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel's process group too
            return Failure("KILLED", "interrupted", "interrupted (Ctrl-C)")
        cell = _source_index(error.cell_index, kept, contract, injected)
        return Failure("FAILED", "cell-exception", f"cell index {cell} raised {error.ename}: {error.evalue}",
                       cell, error.ename, error.evalue)
    started = _last_started_cell(executed)
    cell = _source_index(started, kept, contract, injected) if started is not None else None
    where = f" in cell index {cell}" if cell is not None else ""
    if isinstance(error, DeadKernelError):
        return Failure("FAILED", "kernel-died", f"the kernel died{where}", cell)
    if isinstance(error, CellTimeoutError) and IOPUB_TIMEOUT in str(error):  # replied, output still coming
        return Failure("FAILED", "output-timeout", f"the output of the cell{where} did not all arrive within "
                       f"iopub_timeout ({iopub_timeout:g} s); raise iopub_timeout in [tool.cd4ml_nb] on a busy "
                       "machine", cell)
    if isinstance(error, CellTimeoutError):
        return Failure("FAILED", "timeout", f"cell timed out{where}: {str(error).splitlines()[0]}", cell)
    if type(error).__name__ == "SetupError":  # attach.SetupError: the kernel could not be set up for tracking
        return Failure("FAILED", "tracking", f"could not attach the kernel to MLflow: {error}")
    if isinstance(error, (RuntimeError, TimeoutError)) and "kernel" in str(error).lower():
        return Failure("FAILED", "kernel-start", f"the kernel did not start: {str(error).splitlines()[0]}")
    return Failure("FAILED", "error", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def with_kernel_words(failure: Failure, log: Path) -> Failure:
    """``failure`` with the last line a dead kernel wrote to its stderr (``log``): often the why
    (``No module named ipykernel_launcher``)."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return failure
    last = next((line for line in reversed(lines) if line), None)
    if last is None:
        return failure
    return replace(failure, message=f"{failure.message}; the kernel's stderr ends: {last[:300]} (all of it: {log})")
