"""Team mode: runs against a tracking server are live on it and lose nothing when it goes away.

With an ``http(s)`` tracking URI the parent creates the run on the server, then points the kernel
at a local journal (:mod:`cd4ml_nb.journal`, ``<state_dir>/spool/<run id>/``): every call the
notebook makes is appended there first, never waiting for the network. A :class:`LiveForwarder`
thread in the runner sends what is new every half second (batched, ``fsync``\\ ed first) and keeps
``cd4ml.heartbeat`` fresh; when the server is down it keeps retrying and the journal keeps growing.
When the notebook ends the runner records the true status (``end.json``), sends the rest and the
artifacts, ends the server run and removes the folder. If the server is still unreachable the
folder stays and ``cd4ml-nb runs sync`` finishes it later, exactly once (see the journal's
acknowledged offset and in-doubt batch).

Spool folders of earlier versions (a SQLite store and ``pending.json``) are still uploaded by
``runs sync``.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from . import journal, tracking
from .project import Project

PENDING = "pending.json"  # legacy spool folders
LIVE_INTERVAL = 0.5  # seconds between two sends while the notebook runs
MAX_BACKOFF = 2.0  # seconds between tries while the server does not answer


class LiveForwarder(threading.Thread):
    """Forwards a journal while its notebook runs; holds the journal's lock until :meth:`stop`."""

    def __init__(self, folder: Path, held: int, heartbeat: float | None, timeout: float) -> None:
        super().__init__(name="cd4ml-forwarder", daemon=True)
        self.forwarder = journal.Forwarder(folder, heartbeat=heartbeat, timeout=timeout, held=held)
        self._halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        delay = 0.0
        while not self._halt.wait(delay):
            try:
                self.forwarder.step()
                self.error, delay = None, LIVE_INTERVAL
            except journal.ServerUnreachable as e:
                self.error, delay = str(e), min(max(delay * 2, LIVE_INTERVAL), MAX_BACKOFF)
            except Exception as e:  # an unexpected answer: keep the journal, try again
                self.error, delay = f"{type(e).__name__}: {e}", MAX_BACKOFF

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.forwarder.release()


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
    return project.tracking_uri.startswith(("http://", "https://"))


def create(project: Project, run, experiment_name: str | None = None) -> Spool:
    """The journal of server run ``run`` (an MLflow Run), forwarded live from now on."""
    journal.register()
    folder = project.ensure_state_dir() / "spool" / run.info.run_id
    uri, held = journal.create(folder, project.tracking_uri, run, experiment_name)
    live = LiveForwarder(folder, held, project.config.heartbeat_interval, project.config.health_timeout)
    live.start()
    return Spool(folder, run.info.run_id, uri, run.info.run_id, run.info.experiment_id, live)


def spool_client(spool: Spool):
    """An MlflowClient on the journal (what the runner logs at the end goes through it too)."""
    from mlflow.tracking import MlflowClient

    journal.register()
    return MlflowClient(tracking_uri=spool.uri, registry_uri=spool.live.forwarder.server_uri)


def finish(spool: Spool, status: str, tags: dict[str, Any], timeout: float,
           warn: Callable[[str], None] | None = None) -> bool:
    """Record the run's true ending, send the rest and end the server run; False (folder kept for
    ``runs sync``) when the server does not answer."""
    journal.write_json(spool.folder / journal.END, {
        "status": status, "tags": {k: str(v) for k, v in tags.items() if v is not None}})
    spool.live.stop()
    journal.forget(spool.uri)
    return journal.complete(spool.folder, timeout, warn)


def pending(project: Project) -> list[journal.Pending]:
    """Journals not yet wholly on their server (live ones included)."""
    root = project.state_dir / "spool"
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if (folder / journal.MANIFEST).is_file():
            found.append(journal.Forwarder(folder).pending())
        elif (folder / PENDING).is_file():
            p = json.loads((folder / PENDING).read_text())
            found.append(journal.Pending(folder, p["server_run_id"], p["tracking_uri"], -1, -1, p["status"], False))
    return found


def sync(project: Project, wait: bool = False, on_error: Callable[[str], None] | None = None,
         poll: float = 1.0) -> tuple[int, int]:
    """Upload every pending journal no runner holds; returns (uploaded, still pending). With
    ``wait``, keep going until none is pending (live ones included)."""
    done = 0
    while True:
        for p in pending(project):
            if p.live:
                continue
            if (p.folder / PENDING).is_file():
                done += _upload_legacy(p.folder, project.config.health_timeout)
            else:
                done += journal.complete(p.folder, project.config.health_timeout, on_error)
        left = len(pending(project))
        if not wait or not left:
            return done, left
        time.sleep(poll)


# --- spool folders of earlier versions (a SQLite store uploaded at the end) ----------------------


def _upload_legacy(folder: Path, health_timeout: float) -> bool:
    """Upload one legacy spool to its server run and end it; False (kept) when unreachable."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from .exceptions import TrackingError

    p = json.loads((folder / PENDING).read_text())
    try:
        tracking.check_server(p["tracking_uri"], health_timeout)
    except TrackingError:
        return False
    local = MlflowClient(tracking_uri=p["spool_uri"], registry_uri=p["spool_uri"])
    server = MlflowClient(tracking_uri=p["tracking_uri"])
    run_id, spooled = p["server_run_id"], local.get_run(p["spool_run_id"])
    existing = server.get_run(run_id)
    params = [Param(k, v) for k, v in spooled.data.params.items() if existing.data.params.get(k) is None]
    tags = [RunTag(k, v) for k, v in spooled.data.tags.items()
            if not k.startswith(("mlflow.", "cd4ml.spool.")) and existing.data.tags.get(k) != v]
    metrics = []
    for key in spooled.data.metrics:
        seen = {(m.step, m.timestamp, m.value) for m in server.get_metric_history(run_id, key)}
        metrics += [Metric(key, m.value, m.timestamp, m.step) for m in local.get_metric_history(spooled.info.run_id, key)
                    if (m.step, m.timestamp, m.value) not in seen]
    tracking.log_batches(server, run_id, metrics=metrics, params=params, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(local.download_artifacts(spooled.info.run_id, "", tmp))
        if any(artifacts.iterdir()):
            server.log_artifacts(run_id, str(artifacts))
    done = {m.name for m in server.search_logged_models(
        [existing.info.experiment_id], filter_string=f"source_run_id = '{run_id}'") if "READY" in str(m.status)}
    for model in local.search_logged_models([p["experiment_id"]],
                                            filter_string=f"source_run_id = '{spooled.info.run_id}'"):
        if model.name not in done:
            created = server.create_logged_model(existing.info.experiment_id, name=model.name, source_run_id=run_id,
                                                 params=model.params or None, model_type=model.model_type)
            server.log_model_artifacts(created.model_id, unquote(urlparse(model.artifact_location).path))
            server.finalize_logged_model(created.model_id, "READY")
    tracking.end_run(server, run_id, p["status"], p["tags"])
    shutil.rmtree(folder)
    return True
