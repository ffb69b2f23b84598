"""What `cd4ml-nb gc` removes besides ended Lab jobs: old run folders of the CLI and the socket
folders of kernels whose runner was killed; and the file-tree helpers pruning shares."""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import kernels
from .exceptions import BadInput
from .processes import launched_process
from .project import Project


@dataclass(frozen=True)
class Removed:
    """What pruning removed (or, in a dry run, would remove): one job, run folder or socket folder."""

    kind: str  # "job", "run" or "socket" (a kernel's socket folder)
    name: str  # the job id, or the folder's name
    paths: tuple[Path, ...]  # the folders removed
    bytes: int  # space freed
    detail: str = ""  # e.g. "nb.ipynb, finished"


def tree_bytes(path: Path) -> int:
    """The bytes of every file under ``path`` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def last_change(path: Path) -> float:
    """The latest modification time of ``path`` or anything in it."""
    latest = 0.0
    for folder, _, files in os.walk(path):
        for name in (".", *files):
            try:
                latest = max(latest, os.lstat(os.path.join(folder, name)).st_mtime)
            except OSError:
                pass
    return latest


def remove_tree(path: Path) -> None:
    """Remove a folder: first renamed aside (readers see it gone at once), then deleted."""
    aside = path.with_name(f".{path.name}.removing-{uuid.uuid4().hex[:6]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def check_retention(keep: int | None, days: float | None) -> None:
    """BadInput for a negative ``keep`` or ``days``."""
    if keep is not None and keep < 0:
        raise BadInput(f"keep must be 0 or more (got {keep})")
    if days is not None and days < 0:
        raise BadInput(f"days must be 0 or more (got {days})")


def prune_runs(project: Project, keep: int | None = None, days: float | None = None, *,
               dry_run: bool = False) -> list[Removed]:
    """Remove the CLI's run output folders (``<state_dir>/runs/*``) beyond the newest ``keep`` or
    last changed more than ``days`` ago (defaults: the job retention settings). The MLflow runs
    and their artifacts stay.

    A folder whose run ended (its ``*.source.py`` is written when the run ends) counts towards
    ``keep``; one without it may still be running, so only its age can remove it.
    """
    check_retention(keep, days)
    keep = project.config.job_retention_count if keep is None else keep
    days = project.config.job_retention_days if days is None else days
    folder = project.state_dir / "runs"
    if not folder.is_dir():
        return []
    now = time.time()
    found = []
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
            ended = any(p.name.endswith(".source.py") for p in child.iterdir()) \
                and not (child / ".run.json").exists()
            found.append((last_change(child), child.name, child, ended))
    found.sort(reverse=True)
    removed, kept = [], 0
    for last, _, child, ended in found:
        if not (days and now - last > days * 86400):  # not too old: kept if unfinished or among the newest
            if not ended:
                continue
            if kept < keep:
                kept += 1
                continue
        removed.append(Removed("run", child.name, (child,), tree_bytes(child), "ended" if ended else "unfinished"))
        if not dry_run:
            remove_tree(child)
    return removed


def prune_socket_folders(*, dry_run: bool = False) -> list[Removed]:
    """Remove the kernel socket folders (:func:`kernels.socket_folders`) whose owner process has
    ended without removing its own (SIGKILL, out of memory). The folder of a live process is kept.

    The owner is its recorded pid *and* start time (a pid the system reused is no owner); a folder
    whose record is missing (being written, or its writer killed first) is kept while its pid lives.
    """
    import psutil

    removed = []
    for folder, owner in kernels.socket_folders():
        if owner["create_time"] is not None:
            alive = launched_process(owner) is not None
        else:
            alive = psutil.pid_exists(owner["pid"])
        if alive:
            continue
        removed.append(Removed("socket", folder.name, (folder,), tree_bytes(folder), f"process {owner['pid']} ended"))
        if not dry_run:
            remove_tree(folder)
    return removed
