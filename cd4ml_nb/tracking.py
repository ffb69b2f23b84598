"""MLflow: the project's store, one experiment per git branch, runs and their lifecycle.

Nothing here imports mlflow at module import time; each function imports it when called.
"""
from __future__ import annotations

import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import BadInput, NoStore, TrackingError
from . import gitinfo, history, lines, pairing, store
from .gitinfo import GitInfo
from .project import Project

# Tags (MLflow system tags the MLflow UI shows natively, and ours under `cd4ml.`).
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
RUN_NAME = "mlflow.runName"
DIRTY = "cd4ml.git.dirty"
DIFF_TRUNCATED = "cd4ml.git.diff_truncated"
SOURCE_SHA = "cd4ml.notebook.source_sha256"
NOTEBOOK = history.NOTEBOOK
REASON = "cd4ml.status.reason"
FAILED_CELL = "cd4ml.failed_cell"
FAILED_ENAME = "cd4ml.failed_cell.ename"
FAILED_EVALUE = "cd4ml.failed_cell.evalue"
OUTPUT_DIR = "cd4ml.output_dir"
RUNNER = "cd4ml.runner"  # host:pid of the process that owns the run
HEARTBEAT = "cd4ml.heartbeat"  # UTC ISO time, refreshed by the runner of a run on a tracking server
KERNEL = "cd4ml.kernel"
PARAMS_DEFAULTS = "cd4ml.params.defaults"  # parameters the run left at the notebook's defaults

HEALTH_TIMEOUT = 10.0
MAX_TAG_VALUE = 5000
MAX_PARAM_VALUE = 6000


@dataclass(frozen=True)
class RunSummary:
    """A run as listed by ``cd4ml-nb runs`` (serialises to JSON for the frontend)."""

    run_id: str
    experiment: str
    status: str
    start_time: float | None
    end_time: float | None
    notebook: str | None
    commit: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    kind: str = history.RUN
    parent_run_id: str | None = None
    failed_cell: int | None = None
    message: str | None = None  # why a run did not finish, in a line
    trial: int | None = None  # a sweep's or study's trial number (``cd4ml.trial``)

    def why(self) -> str:
        """A FAILED or KILLED run's reason, failed cell and message, in one line ('' when none)."""
        if not self.reason:
            return ""
        cell = f" at cell {self.failed_cell}" if self.failed_cell is not None else ""
        return f"{self.reason}{cell}: {self.message}" if self.message else f"{self.reason}{cell}"


def experiment_name(project: Project, git: GitInfo | None) -> str:
    """The experiment this branch's runs go to (:func:`lines.experiment_for`)."""
    branch = git.branch if git else None
    if branch is None:
        branch = "detached" if git else "no-git"
    return lines.experiment_for(project, branch, writing=True, connect=lambda: _reader(project))


def _reader(project: Project):
    """:func:`read_client`, or None when there is no store yet."""
    try:
        return read_client(project)
    except NoStore:
        return None


def check_store(project: Project) -> None:
    """Before any kernel starts: a tracking server answers, a SQLite store is not damaged."""
    check_server(project.tracking_uri, project.config.health_timeout)
    store.refuse_damaged(project.tracking_uri)


def check_server(uri: str, timeout: float = HEALTH_TIMEOUT) -> None:
    """For an http(s) tracking URI, raise TrackingError unless the server answers in time."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        problem = f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        problem = str(getattr(e, "reason", e))
    raise TrackingError(
        f"MLflow tracking server {uri} is not reachable ({problem}); start it (`cd4ml-nb ui` for the "
        "local store, or `mlflow server`) or set --tracking-uri / MLFLOW_TRACKING_URI"
    )


def client(project: Project, *, create: bool = True):
    """An MlflowClient on the project's store. A SQLite store is created complete first (under a
    lock beside it); with ``create=False`` a missing store is :class:`NoStore` (reads write nothing)."""
    from mlflow.tracking import MlflowClient

    uri = project.tracking_uri
    check_server(uri, project.config.health_timeout)
    if store.is_sqlite(uri) and not store.ensure_sqlite(uri, project.artifact_root.as_uri(), create=create):
        raise NoStore(f"no MLflow store at {project.store_path} yet: start a run to create it")
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as e:
        raise TrackingError(f"MLflow store {uri}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def run_client(project: Project):
    """The client a run writes through: without MLflow's import (:mod:`.sqlite_client`) for a local
    SQLite store it knows, else :func:`client`."""
    path = store.sqlite_path(project.tracking_uri) if store.is_sqlite(project.tracking_uri) else None
    if path is not None and store.state(path) == "complete":
        from .sqlite_client import open_client

        light = open_client(path, project.tracking_uri, project.config.store_writes)
        if light is not None:
            return light
    return client(project)


def read_client(project: Project):
    """The client the read-only commands read through: without MLflow's import
    (:mod:`.sqlite_client`) for a complete local SQLite store it knows (as :func:`run_client`), else
    ``client(project, create=False)``; never creates a store (a missing one is :class:`NoStore`)."""
    path = store.sqlite_path(project.tracking_uri) if store.is_sqlite(project.tracking_uri) else None
    if path is not None and store.state(path) == "complete":
        from .sqlite_client import open_client

        light = open_client(path, project.tracking_uri, project.config.store_writes)
        if light is not None:
            return light
    return client(project, create=False)


def _entities(c):
    """The parameter and tag types ``c.log_batch`` takes (MLflow's entities, or the light client's)."""
    from .sqlite_client import Param, SqliteClient, Tag

    if isinstance(c, SqliteClient):
        return Param, Tag
    from mlflow.entities import Param, RunTag

    return Param, RunTag


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


def ensure_experiment(c, project: Project, name: str, branch: str | None = None) -> str:
    """The id of experiment ``name``, created (with the project's artifact root, and tagged as the
    experiment of ``branch``, default the checked-out one) if missing."""
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            c.restore_experiment(found.experiment_id)
        return found.experiment_id
    from mlflow.exceptions import MlflowException

    location = (project.artifact_root / _slug(name)).as_uri() if store.is_sqlite(project.tracking_uri) else None
    try:
        created = c.create_experiment(name, artifact_location=location)
        lines.tag_created(c, project, name, created, branch)
        return created
    except MlflowException:  # created meanwhile by another process
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def clip(value: Any, limit: int = MAX_TAG_VALUE) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def create_run(c, experiment_id: str, run_name: str, tags: dict[str, Any], params: dict[str, Any],
               defaults: tuple[str, ...] = ()):
    """Create a RUNNING run with its tags and every parameter value; returns the MLflow Run."""
    run = c.create_run(experiment_id, run_name=run_name, tags={k: clip(v) for k, v in tags.items() if v is not None})
    log_batches(c, run.info.run_id, params=_params(c, params), tags=_params_tags(c, params, defaults))
    return run


def adopt_run(c, run_id: str, tags: dict[str, Any], params: dict[str, Any], defaults: tuple[str, ...] = ()):
    """Use a run created beforehand (a sweep trial): mark it RUNNING and give it tags and params."""
    _, tag = _entities(c)
    c.update_run(run_id, status="RUNNING")
    log_batches(c, run_id, params=_params(c, params),
                tags=[tag(k, clip(v)) for k, v in tags.items() if v is not None] + _params_tags(c, params, defaults))
    return c.get_run(run_id)


# MLflow's log_batch limits (mlflow.utils.validation): the client splits, it never drops.
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS, BATCH_TOTAL = 1000, 100, 100, 1000


def log_batches(c, run_id: str, metrics: list = (), params: list = (), tags: list = ()) -> int:
    """Log every metric point, parameter and tag in as many ``log_batch`` calls as MLflow's limits
    need; returns the number of calls."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    calls = 0
    while metrics or params or tags:
        p, params = params[:BATCH_PARAMS], params[BATCH_PARAMS:]
        t, tags = tags[:min(BATCH_TAGS, BATCH_TOTAL - len(p))], tags[min(BATCH_TAGS, BATCH_TOTAL - len(p)):]
        room = min(BATCH_METRICS, BATCH_TOTAL - len(p) - len(t))
        m, metrics = metrics[:room], metrics[room:]
        c.log_batch(run_id, metrics=m, params=p, tags=t)
        calls += 1
    return calls


def _params(c, values: dict[str, Any]) -> list:
    param, _ = _entities(c)
    return [param(k, clip(_param_text(v), MAX_PARAM_VALUE)) for k, v in values.items()]


def _params_tags(c, values: dict[str, Any], defaults: tuple[str, ...]) -> list:
    if not values:
        return []
    _, tag = _entities(c)
    tags = [tag("cd4ml.params.json", clip(_json(values)))]
    if defaults:
        tags.append(tag(PARAMS_DEFAULTS, clip(",".join(sorted(defaults)))))
    return tags


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def end_run(c, run_id: str, status: str, tags: dict[str, Any] | None = None) -> None:
    """Set the terminal status (FINISHED, FAILED, KILLED) and the tags explaining it.

    Done as ``MlflowClient.set_terminated`` does it, through the client's store, but without the
    "View run …" lines MLflow writes to stdout for a tracking server (stdout carries ``--json``)."""
    _, tag = _entities(c)
    log_batches(c, run_id, tags=[tag(k, clip(v)) for k, v in (tags or {}).items() if v is not None])
    end_time = int(time.time() * 1000)
    target = getattr(getattr(c, "_tracking_client", None), "store", None)
    if target is None:  # the light client, or an MlflowClient of another shape (banner and all)
        c.set_terminated(run_id, status=status, end_time=end_time)
        return
    from mlflow.entities import RunStatus

    target.shut_down_async_logging()
    target.update_run_info(run_id, run_status=RunStatus.from_string(status), end_time=end_time, run_name=None)


def summarize(run, names: pairing.Names | None = None) -> RunSummary:
    tags = run.data.tags
    cell = tags.get(FAILED_CELL, "")
    trial = tags.get("cd4ml.trial") or tags.get("cd4ml.trial.index") or ""  # a study's number, a sweep's index
    return RunSummary(
        run_id=run.info.run_id,
        experiment=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time / 1000 if run.info.start_time else None,
        end_time=run.info.end_time / 1000 if run.info.end_time else None,
        notebook=names.of(run) if names is not None else tags.get(NOTEBOOK),
        commit=tags.get(GIT_COMMIT),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        reason=tags.get(REASON),
        kind=history.kind_of(tags),
        parent_run_id=tags.get(history.PARENT),
        failed_cell=int(cell) if cell.isdigit() else None,
        message=next(iter((tags.get("cd4ml.status.message") or "").splitlines()), "")[:300] or None,
        trial=int(trial) if trial.isdigit() else None,
    )


def provenance_tags(project: Project, git: GitInfo | None, notebook: str | None) -> dict[str, Any]:
    """The tags every run carries: source, git provenance and the owning process."""
    tags: dict[str, Any] = {
        SOURCE_TYPE: "NOTEBOOK",
        RUNNER: f"{socket.gethostname()}:{os.getpid()}",
    }
    if notebook:
        tags.update({SOURCE_NAME: notebook, NOTEBOOK: notebook})
    if git is not None:
        tags.update({
            GIT_COMMIT: git.commit,
            GIT_BRANCH: git.branch,
            GIT_REPO_URL: git.remote_url,
            DIRTY: str(git.dirty).lower(),
            DIFF_TRUNCATED: "true" if git.diff_truncated else None,
            "cd4ml.git.base_branch": project.base_branch,
            "cd4ml.git.merge_base": gitinfo.merge_base(git.root, project.base_branch),
        })
    return tags


def _session_notebook(notebook: str | os.PathLike | None) -> Path:
    """The notebook being tracked: given, else the kernel's Jupyter session (JPY_SESSION_NAME,
    relative to the server root while the kernel runs in the notebook's folder), else the notebook
    nbval is testing (PYTEST_CURRENT_TEST, inherited by its kernel), else the cwd."""
    if notebook:
        return Path(notebook) if Path(notebook).exists() else Path.cwd()
    session = os.environ.get("JPY_SESSION_NAME")
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0]  # a kernel started by nbval
    if not session and test.endswith(".ipynb"):
        session = test
    if session:
        for candidate in (Path(session), Path.cwd() / Path(session).name):
            if candidate.is_file():
                return candidate
    return Path.cwd()


def track(notebook: str | os.PathLike | None = None, *, tracking_uri: str | None = None,
          experiment: str | None = None):
    """Track an interactive session the way ``cd4ml-nb run`` tracks a job.

    Points MLflow at the project's store and this branch's experiment and starts a run with the
    same provenance tags, so ``mlflow.log_metric`` and autologging in cells run by hand are
    recorded. Inside ``cd4ml-nb run`` (or when a run is already active) it returns that run.
    """
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return active
    where = _session_notebook(notebook)
    project = Project.discover(where, tracking_uri=tracking_uri)
    git = project.git_info(project.root if where.is_dir() else where)
    c = client(project)
    experiment = experiment or experiment_name(project, git)
    experiment_id = ensure_experiment(c, project, experiment)
    mlflow.set_tracking_uri(project.tracking_uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    rel = project.relative(where) if where.is_file() else None
    tags = {k: clip(v) for k, v in provenance_tags(project, git, pairing.Names(project)(rel)).items()
            if v is not None}
    tags.update({"cd4ml.interactive": "true", history.KIND: history.INTERACTIVE})
    if rel:
        tags[history.SIDE] = rel
    tags.setdefault(SOURCE_NAME, "(interactive session)")
    run = mlflow.start_run(experiment_id=experiment_id, run_name=where.stem if rel else "interactive", tags=tags)
    _end_with_the_session(run.info.run_id, project.tracking_uri)
    return run


def _end_with_the_session(run_id: str, uri: str) -> None:
    """The session's run ends with it: FINISHED when the kernel exits normally, KILLED (by the
    guard) when it is killed — as nbval and kernel restarts do — instead of staying RUNNING."""
    import atexit

    import mlflow

    from .guard import Guard

    guard = Guard(uri, status="KILLED", reason="session-ended")
    guard.add(run_id)

    def at_exit() -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run()
        guard.release()

    atexit.register(at_exit)


def reconcile_orphans(project: Project, experiment: str | None = None) -> list[str]:
    """Mark FAILED (reason ``orphaned``) the RUNNING runs whose runner is gone: its process on this
    host has exited, or — whatever host ran it — its ``cd4ml.heartbeat`` is older than
    ``heartbeat_timeout``. A run whose journal is pending on this host is left alone: its end is the
    journal's (the runner's, or ``cd4ml-nb runs sync``'s), with the notebook's true status.

    Looks in one experiment, or in all of them when ``experiment`` is None; creates no store.
    """
    try:
        c = read_client(project)
    except NoStore:
        return []
    if experiment is None:
        ids = [e.experiment_id for e in c.search_experiments()]
    else:
        found = c.get_experiment_by_name(experiment)
        ids = [found.experiment_id] if found is not None else []
    if not ids:
        return []
    from .journal_folder import pending_run_ids

    host, timeout = socket.gethostname(), project.config.heartbeat_timeout
    journaled = pending_run_ids(project.state_dir / "spool")
    fixed = []
    for run in c.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=1000):
        if run.info.run_id in journaled:
            continue
        owner = run.data.tags.get(RUNNER, "")
        owner_host, _, pid = owner.rpartition(":")
        age = heartbeat_age(run.data.tags.get(HEARTBEAT))
        if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
            message = f"runner process {owner} is gone"
        elif age is not None and age > timeout:
            message = f"no heartbeat from runner {owner or '?'} for {age:.0f} s (heartbeat_timeout {timeout:g} s)"
        else:
            continue
        if c.get_run(run.info.run_id).info.status != "RUNNING":  # ended meanwhile by its runner
            continue
        end_run(c, run.info.run_id, "FAILED", {REASON: "orphaned", "cd4ml.status.message": message})
        fixed.append(run.info.run_id)
    return fixed


def heartbeat_value(now: float | None = None) -> str:
    """A ``cd4ml.heartbeat`` value: the UTC time, ISO-8601."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat(timespec="seconds")


def heartbeat_age(value: str | None, now: float | None = None) -> float | None:
    """Seconds since a ``cd4ml.heartbeat`` value; None when absent or unreadable."""
    from datetime import datetime, timezone

    try:
        stamp = datetime.fromisoformat(value or "")
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return (time.time() if now is None else now) - stamp.timestamp()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    next_page_token: str | None


def branch_experiment(project: Project, branch: str | None) -> str:
    """The experiment of ``branch`` (default: the checked-out branch, a cheap lookup: no diff), as
    :func:`lines.experiment_for` decides it."""
    return lines.experiment_for(project, branch, connect=lambda: _reader(project))


def runs_page(project: Project, experiment: str, notebook: str | None, limit: int,
              page_token: str | None = None, kind: str | None = None) -> RunsPage:
    """One page of an experiment's runs, newest first; creates no store. ``notebook`` (a canonical
    name, :func:`pairing.notebook_id`) keeps the runs of that notebook, whichever side of its pair
    they ran; ``kind`` those of one kind. Filtered pages read on until ``limit`` runs are found."""
    try:
        c = read_client(project)
    except NoStore:
        return RunsPage([], None)
    found = c.get_experiment_by_name(experiment)
    if found is None:
        return RunsPage([], None)
    names = pairing.Names(project)
    filtered = bool(notebook or kind)

    def wanted(run) -> bool:
        return (not notebook or names.of(run) == notebook) and (not kind or history.kind_of(run.data.tags) == kind)

    runs: list = []
    token = page_token
    while True:
        try:
            page = c.search_runs([found.experiment_id], max_results=max(limit, 500) if filtered else limit,
                                 order_by=["attributes.start_time DESC"], page_token=token)
        except Exception as e:
            if token:
                raise BadInput(f"invalid page_token: {str(e).splitlines()[0]}") from None
            raise
        token = (page.token.decode() if isinstance(page.token, bytes) else page.token) or None  # bytes from SQL
        runs += [r for r in page if wanted(r)]
        if not filtered or len(runs) >= limit or token is None:
            return RunsPage([summarize(r, names) for r in runs], token)


MIN_RUN_PREFIX = 6


def resolve_run_id(c, text: str) -> str:
    """The full id of the run whose id is ``text`` or starts with it (at least 6 characters).

    BadInput when no run matches, when the prefix is too short or when it names several runs
    (the message lists them). ``c`` is MLflow's client or the light one (its ViewType is MLflow's).
    """
    from .sqlite_client import ViewType

    prefix = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", prefix or "-"):
        raise BadInput(f"{text!r} is not a run id (hexadecimal, as `cd4ml-nb runs` prints)")
    if len(prefix) < MIN_RUN_PREFIX:
        raise BadInput(f"run id {text!r} is too short: give at least {MIN_RUN_PREFIX} characters")
    ids = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    if not ids:
        raise BadInput(f"no run {text!r}: the store has no experiments")
    found = c.search_runs(ids, filter_string=f"attributes.run_id LIKE '{prefix}%'", run_view_type=ViewType.ALL,
                          max_results=11)
    if not found:
        raise BadInput(f"no run {text!r} (no run id starts with it); `cd4ml-nb runs --branch BRANCH` lists a branch's runs")
    if len(found) > 1:
        names = ", ".join(r.info.run_id[:12] for r in found[:10]) + (" …" if len(found) > 10 else "")
        raise BadInput(f"run id {text!r} is ambiguous: it starts {len(found)} runs ({names}); give more characters")
    return found[0].info.run_id
