"""Team mode: runs against a tracking server are live on it and lose nothing when it goes away.

With an ``http(s)`` tracking URI the parent creates the run on the server, then points the kernel
at a local journal (:mod:`cd4ml_nb.journal`, ``<state_dir>/spool/<run id>/``): every call the
notebook makes is appended there first, never waiting for the network. A :class:`LiveForwarder`
thread in the runner sends what is new every half second (:mod:`cd4ml_nb.forwarder`: batched,
``fsync``\\ ed first) and keeps ``cd4ml.heartbeat`` fresh; when the server is down it retries with a
capped exponential backoff and the journal keeps growing. When the notebook ends the runner records
the true status (``end.json``), sends the rest and the artifacts, ends the server run and removes the
folder. If the server is still unreachable the folder stays and ``cd4ml-nb runs sync`` finishes it
later, exactly once (see the journal's acknowledged offset and in-doubt batch). Records the server
refused for good stay in the folder (``refused.jsonl``), listed by ``cd4ml-nb runs``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import forwarder, journal_folder  # not journal (the kernel's store): it imports MLflow, `runs` stays light
from .project import Project

LIVE_INTERVAL = 0.5  # seconds between two sends while the notebook runs
MAX_BACKOFF = 10.0  # at most this many seconds between tries while the server does not answer
FINISH_PATIENCE = 30.0  # a runner retries its journal's end this long while the server answers errors


class LiveForwarder(threading.Thread):
    """Forwards a journal while its notebook runs; holds the journal's lock until :meth:`stop`."""

    def __init__(self, folder: Path, held: int, heartbeat: float | None, timeout: float) -> None:
        super().__init__(name="cd4ml-forwarder", daemon=True)
        self.forwarder = forwarder.Forwarder(folder, heartbeat=heartbeat, timeout=timeout, held=held)
        self._halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        """Send what is new every LIVE_INTERVAL; while the server does not answer, back off."""
        backoff = forwarder.Backoff(first=LIVE_INTERVAL, cap=MAX_BACKOFF)
        delay = 0.0
        while not self._halt.wait(delay):
            try:
                self.forwarder.step()
                self.error, delay = None, LIVE_INTERVAL
                backoff.reset()
            except forwarder.ServerUnreachable as e:
                self.error, delay = str(e), backoff.next(e.retry_after)
            except Exception as e:  # an unexpected answer: keep the journal, try again
                self.error, delay = f"{type(e).__name__}: {e}", backoff.next()

    def stop(self) -> int | None:
        """Stop forwarding (after the pass under way); returns the journal's lock, still held, for the
        caller to complete the journal with (no other process can take it in between)."""
        self._halt.set()
        self.join()
        return self.forwarder.hand_over()


@dataclass(frozen=True)
class Spool:
    """One run's journal while the runner owns it."""

    folder: Path
    server_run_id: str
    uri: str  # the kernel's tracking URI (cd4ml-journal:///…)
    run_id: str  # the run the kernel logs to: the server run itself
    experiment_id: str
    live: LiveForwarder


def uses_spool(project: Project) -> bool:
    """Whether runs of ``project`` log through a journal (its tracking URI is a server's)."""
    return project.tracking_uri.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Pending:
    """A journal not yet wholly on the server, or one whose server refused records (for ``cd4ml-nb runs``)."""

    folder: Path
    run_id: str
    server_uri: str
    bytes_pending: int
    artifacts_pending: int
    ended: str | None  # the status the runner ended with, None while running or when it died
    live: bool  # a runner (or a sync) holds it now
    refused: tuple[dict, ...] = ()  # records the server refused for good: {"offset", "record", "error"}
    uploaded: bool = False  # the rest is on the server and the run ended: only the refused records are left


def create(project: Project, run, experiment_name: str | None = None) -> Spool:
    """The journal of server run ``run`` (an MLflow Run), forwarded live from now on."""
    from . import journal

    journal.register()
    folder = project.ensure_state_dir() / "spool" / run.info.run_id
    uri, held = journal_folder.create(folder, project.tracking_uri, run, experiment_name)
    live = LiveForwarder(folder, held, project.config.heartbeat_interval, project.config.health_timeout)
    live.start()
    return Spool(folder, run.info.run_id, uri, run.info.run_id, run.info.experiment_id, live)


def spool_client(spool: Spool):
    """An MlflowClient on the journal (what the runner logs at the end goes through it too)."""
    from mlflow.tracking import MlflowClient

    from . import journal

    journal.register()
    return MlflowClient(tracking_uri=spool.uri, registry_uri=spool.live.forwarder.server_uri)


def finish(spool: Spool, status: str, tags: dict[str, Any], timeout: float,
           warn: Callable[[str], None] | None = None) -> bool:
    """Record the run's true ending, send the rest and end the server run, retrying for up to
    FINISH_PATIENCE seconds while the server answers with errors; False (folder kept for ``runs sync``,
    the reason told to ``warn``) when it still does not take it. The journal stays locked by this
    runner from its creation to its end: a reader never stands in the way."""
    from . import journal

    journal_folder.write_json(spool.folder / journal_folder.END, {
        "status": status, "tags": {k: str(v) for k, v in tags.items() if v is not None}})
    held = spool.live.stop()
    journal.forget(spool.uri)
    return forwarder.complete(spool.folder, timeout, warn, held=held, patience=max(FINISH_PATIENCE, timeout))


def pending(project: Project) -> list[Pending]:
    """Journals not yet wholly on their server (live ones included), and those whose server refused records."""
    root = project.state_dir / "spool"
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if not (folder / journal_folder.MANIFEST).is_file():
            continue
        ended = journal_folder.read_json(folder / journal_folder.END)
        status = ended["status"] if ended else None
        kept = tuple(journal_folder.refused(folder))
        if journal_folder.is_settled(folder):
            manifest = journal_folder.read_json(folder / journal_folder.MANIFEST)
            found.append(Pending(folder, manifest["run_id"], manifest["server_uri"], 0, 0, status, False, kept, True))
            continue
        fw = forwarder.Forwarder(folder)
        journal_bytes, artifacts = fw.backlog()
        found.append(Pending(folder, fw.run_id, fw.server_uri, journal_bytes, artifacts, status, fw.is_live(), kept))
    return found


def sync(project: Project, wait: bool = False, on_error: Callable[[str], None] | None = None,
         poll: float = 1.0) -> tuple[int, int]:
    """Upload every pending journal no runner holds; returns (uploaded, still pending). With
    ``wait``, keep going (backing off up to MAX_BACKOFF seconds) until none is pending, live ones included."""
    done = 0
    backoff = forwarder.Backoff(first=poll, cap=max(poll, MAX_BACKOFF))
    while True:
        for p in pending(project):
            if not (p.live or p.uploaded) and forwarder.complete(p.folder, project.config.health_timeout, on_error):
                done += 1
                backoff.reset()
        left = sum(not p.uploaded for p in pending(project))
        if not wait or not left:
            return done, left
        time.sleep(backoff.next())
