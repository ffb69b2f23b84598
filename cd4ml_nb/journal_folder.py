"""A run's journal folder on disk: its files, its records, its lock and the records its server refused."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from .files import fsync_dir, write_atomic

SCHEME = "cd4ml-journal"
JOURNAL = "journal.jsonl"
MANIFEST = "manifest.json"
STATE = "state.json"
END = "end.json"
LOCK = "lock"
REFUSED = "refused.jsonl"
ARTIFACTS = "artifacts"
# The folder: manifest.json (the server run; written last, it makes the folder a journal), journal.jsonl
# (one JSON record a line, appended by the kernel's store, journal.py), state.json (what the forwarder,
# forwarder.py, has acknowledged), end.json (the status the runner recorded), refused.jsonl (records the
# server refused for good, kept when the rest is removed), artifacts/, models/<id>/artifacts/, lock.


def uri_for(folder: Path) -> str:
    """The tracking URI that makes MLflow log into the journal in ``folder``."""
    return f"{SCHEME}://{Path(folder).resolve().as_posix()}"


def folder_of(uri: str) -> Path:
    """The journal folder a ``cd4ml-journal:`` URI names."""
    return Path(unquote(urlparse(uri).path))


def write_json(path: Path, data: Any) -> None:
    """Atomically and durably replace ``path`` with ``data`` as JSON (the rename synced too)."""
    write_atomic(path, json.dumps(data), durable=True)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def lock(folder: Path, block: bool = False) -> int | None:
    """An open, exclusively ``flock``-ed file descriptor on the journal's lock (a writer: a runner, a
    sync); None when another process holds it, or when the journal is gone (uploaded and removed)."""
    return _flock(folder, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))


def _flock(folder: Path, how: int, create: bool = False) -> int | None:
    """The lock file, opened and ``flock``-ed; only :func:`create` makes it (anyone else re-making it in a
    folder being removed would leave a stray folder, and a lock on a file nobody else shares)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_writer(folder: Path, patience: float = 2.0) -> int | None:
    """:func:`lock` for a writer that may meet readers: while only readers hold the lock (shared, for an
    instant each, :func:`is_held`) wait for them up to ``patience`` seconds; None at once when a writer
    holds it (a runner forwarding, a sync)."""
    deadline = time.monotonic() + patience
    while True:
        fd = lock(folder)
        if fd is not None:
            return fd
        if not (folder / LOCK).exists() or is_held(folder) or time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def is_held(folder: Path) -> bool:
    """Whether a writer (a runner, a sync) holds the journal's lock now. A reader's check: it takes the
    lock *shared* for an instant, so readers never exclude each other, and a writer that meets one
    waits for it (:func:`lock_writer`)."""
    if not (folder / LOCK).exists():
        return False
    fd = _flock(folder, fcntl.LOCK_SH | fcntl.LOCK_NB)
    if fd is None:
        return (folder / LOCK).exists()  # gone meanwhile: nobody holds it
    os.close(fd)
    return False


def create(folder: Path, server_uri: str, run, experiment_name: str | None = None) -> tuple[str, int]:
    """Make the journal folder of the server run ``run`` (an MLflow Run), locked by the caller;
    returns its URI and the lock (the manifest, written last, is what makes it a journal)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARTIFACTS).mkdir(exist_ok=True)
    (folder / JOURNAL).touch()
    held = _flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB, create=True)
    info = run.info
    write_json(folder / MANIFEST, {
        "server_uri": server_uri, "run_id": info.run_id, "experiment_id": info.experiment_id,
        "experiment_name": experiment_name, "user_id": info.user_id, "start_time": info.start_time,
        "run_name": info.run_name, "tags": dict(run.data.tags), "params": dict(run.data.params),
    })
    return uri_for(folder), held


def records(folder: Path, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, dict]]:
    """(offset, next offset, record) for each complete line of the journal from byte ``start``;
    a torn or unreadable line is skipped."""
    with open(folder / JOURNAL, "rb") as f:
        f.seek(start)
        offset = start
        for line in f:
            if not line.endswith(b"\n") or (end is not None and offset >= end):
                return
            nxt = offset + len(line)
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                yield offset, nxt, rec
            offset = nxt


def refused(folder: Path) -> list[dict]:
    """The records the server refused for good, each ``{"offset", "record", "error"}``, once each."""
    found: dict[int, dict] = {}
    try:
        lines = (folder / REFUSED).read_bytes().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # torn by a crash mid-write: the record is still in the journal, refused again
        if isinstance(entry, dict) and entry.get("offset") not in found:
            found[entry.get("offset")] = entry
    return list(found.values())


def quarantine(folder: Path, offset: int, record: dict, error: str) -> None:
    """Keep a record the server refused (at journal byte ``offset``) in ``refused.jsonl``, durably,
    once: a replay after a crash refuses it again without adding it twice."""
    if any(entry.get("offset") == offset for entry in refused(folder)):
        return
    path = folder / REFUSED
    new = not path.exists()
    line = json.dumps({"offset": offset, "record": record, "error": error}, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line  # end a line torn by a crash mid-write
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(folder)


def settle(folder: Path) -> None:
    """Remove a journal the server has wholly; when it refused records, keep them (``refused.jsonl``,
    the manifest, the recorded end, and the files of refused models and artifacts)."""
    kept = refused(folder)
    if not kept:
        shutil.rmtree(folder, ignore_errors=True)
        return
    models = {e["record"]["id"] for e in kept if e["record"].get("t") == "mc"}
    files = {e["record"]["path"] for e in kept if e["record"].get("t") == "artifact"}
    (folder / JOURNAL).unlink(missing_ok=True)  # first: a folder without a journal is settled
    fsync_dir(folder)
    for path in folder.iterdir():
        if path.name in (MANIFEST, END, REFUSED):
            continue
        if path.name == "models" and path.is_dir():
            for model in path.iterdir():
                if model.name not in models:
                    shutil.rmtree(model)
        elif path.name == ARTIFACTS and path.is_dir():
            for file in [f for f in path.rglob("*") if f.is_file()]:
                if file.relative_to(path).as_posix() not in files:
                    file.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def is_settled(folder: Path) -> bool:
    """Whether a journal folder holds only what its server refused (the rest is on the server)."""
    return (folder / MANIFEST).is_file() and not (folder / JOURNAL).exists()


def pending_run_ids(spool: Path) -> set[str]:
    """The server runs whose journal, in a folder of ``spool``, is not yet wholly on the server: their
    end is the journal's to set (a runner's, or ``runs sync``'s), never an orphan verdict's."""
    found = set()
    for folder in spool.iterdir() if spool.is_dir() else ():
        manifest = read_json(folder / MANIFEST)
        if manifest and not is_settled(folder):
            found.add(manifest["run_id"])
    return found
