"""A local spool for runs against a tracking server, so that a server that dies mid-run loses nothing.

With an ``http(s)`` tracking URI the parent still creates the run on the server (the team sees it
RUNNING), but the kernel logs into a local SQLite store in ``<state_dir>/spool/<run id>/``. When
the notebook ends, the parent uploads the spooled parameters, metric history, tags and artifacts to
the server run and sets its status. If the server cannot be reached then, the spool stays on disk
and ``cd4ml-nb runs sync`` uploads it later. Uploads are idempotent: metric points already on the
server are skipped, artifacts overwrite themselves, so a sync repeated after a crash duplicates
nothing.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from . import store, tracking
from .project import Project

PENDING = "pending.json"


@dataclass(frozen=True)
class Spool:
    """One run's local store."""

    folder: Path
    server_run_id: str
    uri: str
    run_id: str
    experiment_id: str


def uses_spool(project: Project) -> bool:
    return project.tracking_uri.startswith(("http://", "https://"))


def create(project: Project, server_run_id: str) -> Spool:
    """A local store and run that the kernel logs into instead of the server."""
    from mlflow.tracking import MlflowClient

    folder = project.ensure_state_dir() / "spool" / server_run_id
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    store.ensure_sqlite(uri, (folder / "artifacts").as_uri())
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = c.get_experiment_by_name("spool")
    experiment_id = found.experiment_id if found else c.create_experiment(
        "spool", artifact_location=(folder / "artifacts").as_uri())
    run = c.create_run(experiment_id, tags={"cd4ml.spool.server_run": server_run_id})
    return Spool(folder, server_run_id, uri, run.info.run_id, experiment_id)


def spool_client(spool: Spool):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spool.uri, registry_uri=spool.uri)


def mark_pending(spool: Spool, tracking_uri: str, status: str, tags: dict[str, Any]) -> None:
    """Record what the upload must finish with (written before any upload is tried)."""
    (spool.folder / PENDING).write_text(json.dumps({
        "tracking_uri": tracking_uri, "server_run_id": spool.server_run_id, "spool_uri": spool.uri,
        "spool_run_id": spool.run_id, "experiment_id": spool.experiment_id, "status": status,
        "tags": {k: str(v) for k, v in tags.items() if v is not None},
    }, indent=1))


def upload(folder: Path, health_timeout: float) -> bool:
    """Upload one pending spool to its server run and end it; False (spool kept) when unreachable."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from .exceptions import TrackingError

    pending = json.loads((folder / PENDING).read_text())
    try:
        tracking.check_server(pending["tracking_uri"], health_timeout)
    except TrackingError:
        return False
    local = MlflowClient(tracking_uri=pending["spool_uri"], registry_uri=pending["spool_uri"])
    server = MlflowClient(tracking_uri=pending["tracking_uri"])
    run_id, spooled = pending["server_run_id"], local.get_run(pending["spool_run_id"])
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
        _upload_models(local, server, pending["experiment_id"], spooled.info.run_id, existing)
    tracking.end_run(server, run_id, pending["status"], pending["tags"])
    shutil.rmtree(folder)
    return True


def _upload_models(local, server, spool_experiment: str, spool_run: str, server_run) -> None:
    """Recreate the run's logged models on the server (skipping those a previous sync made)."""
    done = {m.name for m in server.search_logged_models(
        [server_run.info.experiment_id], filter_string=f"source_run_id = '{server_run.info.run_id}'")
        if str(m.status) in ("READY", "LoggedModelStatus.READY")}
    for model in local.search_logged_models([spool_experiment], filter_string=f"source_run_id = '{spool_run}'"):
        if model.name in done:
            continue
        created = server.create_logged_model(server_run.info.experiment_id, name=model.name,
                                             source_run_id=server_run.info.run_id, params=model.params or None,
                                             model_type=model.model_type)
        server.log_model_artifacts(created.model_id, unquote(urlparse(model.artifact_location).path))
        server.finalize_logged_model(created.model_id, "READY")


def pending_spools(project: Project) -> list[Path]:
    root = project.state_dir / "spool"
    return sorted(p for p in root.iterdir() if (p / PENDING).is_file()) if root.is_dir() else []


def sync(project: Project) -> tuple[int, int]:
    """Upload every pending spool; returns (uploaded, still pending)."""
    done = sum(upload(folder, project.config.health_timeout) for folder in pending_spools(project))
    return done, len(pending_spools(project))
