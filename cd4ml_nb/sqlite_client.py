"""A run's own writes to a local MLflow SQLite store, without importing MLflow.

``import mlflow`` costs 1.3 s of CPU and 170 MB here, more than papermill's whole run of a small
notebook. What ``cd4ml-nb run`` itself records (the run, its parameters and tags, its artifacts,
its end) is a few rows of MLflow's schema, so this client writes exactly the rows MLflow's
``SqlAlchemyStore`` writes, with the standard library's sqlite3, and copies artifacts as MLflow's
local artifact repository does. It is used only where it was verified: the installed MLflow's
version (read from its package metadata, without importing it) and the store's schema revision
must be a pair of :data:`.store.VERIFIED` (``tests/test_sqlite_client.py``, run with that MLflow
installed, compares every table with what MLflow itself writes), since a newer MLflow can keep
the revision and change what it writes. Any other store or MLflow, a project whose
``store_writes`` setting (or ``CD4ML_NB_STORE_WRITES``) is ``mlflow``, and the rare operations
(creating or restoring an experiment, artifacts not on a local disk) go through ``MlflowClient``.
The notebook's own ``mlflow`` calls run in the kernel, with MLflow, as always.

The read-only commands (``runs``, ``compare``, ``gate``, ``report``) read through the same client:
experiments, runs and MLflow's ``search_runs`` for the filter and order forms this package asks
(:data:`RUN_FILTERS`); another form is handed to ``MlflowClient`` whole, so answers never differ.
"""
from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple
from urllib.parse import unquote, urlparse

from .exceptions import TrackingError
from .store import open_readonly, store_writes, verified_revision

MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 6000, 8000  # mlflow.utils.validation
RUN_NAME_TAG, USER_TAG = "mlflow.runName", "mlflow.user"
TEMP_ARTIFACT_PREFIX = ".mlflow-tmp-"  # MLflow's local artifact repository stages files like this
BUSY_TIMEOUT = 60.0
_KEY = re.compile(r"^[/\w.\- :]*$")
MAX_RESULTS_DEFAULT, MAX_RESULTS_THRESHOLD = 1000, 50000  # mlflow.store.tracking
_CHUNK = 500  # run ids per "IN (...)" (SQLite's bound-parameter limit)


class ViewType:
    """MLflow's ``mlflow.entities.ViewType`` values (plain ints, so either client takes them)."""

    ACTIVE_ONLY, DELETED_ONLY, ALL = range(1, 4)


_STAGES = {ViewType.ACTIVE_ONLY: ("active",), ViewType.DELETED_ONLY: ("deleted",), ViewType.ALL: ("active", "deleted")}

# The filter clauses search_runs answers itself (joined by AND), as MLflow's grammar writes them:
#   attributes.status = 'FINISHED'   attributes.run_id LIKE 'abc%'   tags.`cd4ml.notebook` = 'x.ipynb'
# with the prefixes attribute(s)/attr/run and tag(s), the comparators =, != and LIKE, values without
# quotes or backslashes. Any other filter, and any order but start_time, goes to MlflowClient.
RUN_FILTERS = "attributes.status|run_id =|!=|LIKE 'v'; tags.`key` =|!=|LIKE 'v'; AND of those; empty"
_CLAUSE = re.compile(
    r"\s*(?:(?P<attr>attributes|attribute|attr|run)\.(?P<akey>status|run_id|`status`|`run_id`)"
    r"|(?:tags|tag)\.(?:`(?P<qtag>[^`]+)`|(?P<tag>\w+)))"
    r"\s*(?P<op>=|!=|(?i:like))\s*'(?P<value>[^'\\]*)'\s*")
_AND = re.compile(r"(?i:and)\b")
_ORDER = re.compile(r"\s*(?:attributes|attribute|attr|run)\.(?:start_time|`start_time`)(?:\s+(?P<dir>(?i:asc|desc)))?\s*")
_COLUMN = {"status": "status", "run_id": "run_uuid"}


class Param(NamedTuple):
    key: str
    value: str


class Tag(NamedTuple):
    key: str
    value: str


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str
    user_id: str | None = None


@dataclass(frozen=True)
class RunData:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int | None = None
    last_update_time: int | None = None
    tags: dict[str, str] = field(default_factory=dict)


class PagedList(list):
    """A page of results, as MLflow's ``PagedList``: ``token`` names the next page, None on the last."""

    def __init__(self, items: Iterable = (), token: bytes | None = None) -> None:
        super().__init__(items)
        self.token = token


@dataclass(frozen=True)
class LoggedModel:
    name: str
    artifact_location: str


def open_client(path: Path, uri: str, mode: str | None = None) -> "SqliteClient | None":
    """A client for the complete SQLite store at ``path`` when the installed MLflow and the store's
    schema revision are a verified pair (:data:`.store.VERIFIED`), else None (the caller uses
    MlflowClient). ``mode`` (the project's ``store_writes``; default: :func:`.store.store_writes`)
    ``mlflow`` always answers None."""
    if (mode or store_writes()) != "auto":
        return None
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true"):
        return None  # workspace-scoped stores filter every query: MLflow's own client only
    expected = verified_revision()
    if expected is None:
        return None
    try:
        db = open_readonly(path, BUSY_TIMEOUT)
        try:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        finally:
            db.close()
    except (sqlite3.Error, TypeError):
        return None
    return SqliteClient(path, uri) if revision == expected else None


def _now() -> int:
    return int(time.time() * 1000)


def _limited(kind: str, key: str, value: str, limit: int) -> tuple[str, str]:
    """MLflow's checks of a parameter or tag: the key's characters and length; the value truncated
    to the limit (MLFLOW_TRUNCATE_LONG_VALUES, on by default) or refused."""
    norm = posixpath.normpath(key) if isinstance(key, str) else None
    if norm is None or not _KEY.match(key) or norm != key or norm == "." or norm.startswith(("..", "/")):
        raise TrackingError(f"invalid {kind} name {key!r}: use letters, digits, _ - . : / and spaces")
    if len(key) > MAX_KEY:
        raise TrackingError(f"{kind} name {key[:40]!r}… is longer than {MAX_KEY} characters")
    value = str(value)
    if len(value) > limit:
        if os.environ.get("MLFLOW_TRUNCATE_LONG_VALUES", "true").lower() in ("0", "false"):
            raise TrackingError(f"{kind} {key!r}: value longer than {limit} characters")
        value = value[:limit]
    return key, value


def _local_dir(artifact_uri: str) -> Path | None:
    """The folder of a local artifact URI (``file:`` or a plain absolute path), else None."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and not parsed.query and not parsed.fragment:
        return Path(unquote(parsed.path))
    if not parsed.scheme and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


_RUN_COLUMNS = ("run_uuid, experiment_id, name, user_id, status, start_time, end_time, artifact_uri, "
                "lifecycle_stage")


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


def _int_id(experiment_id: Any) -> int:
    try:
        return int(experiment_id)
    except (TypeError, ValueError):
        raise TrackingError(f"Invalid experiment ID: {experiment_id!r}") from None


def _stages(view_type: int) -> tuple[str, ...]:
    return _STAGES.get(view_type, ())  # another value selects nothing, as in MLflow's LifecycleStage


def _check_max_results(max_results: int | None, allow_none: bool) -> None:
    if max_results is None and allow_none:
        return
    if not isinstance(max_results, int) or not 1 <= max_results <= MAX_RESULTS_THRESHOLD:
        raise TrackingError(f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a "
                            f"positive integer, at most {MAX_RESULTS_THRESHOLD}")


def _offset(page_token: bytes | str | None) -> int:
    """The offset a page token names (MLflow's tokens: base64 of ``{"offset": N}``)."""
    if not page_token:
        return 0
    try:
        offset = int(json.loads(base64.b64decode(page_token, validate=True))["offset"])
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        raise TrackingError(f"Invalid page token {page_token!r}") from None
    if offset <= 0:
        raise TrackingError(f"Invalid page token {page_token!r}")
    return offset


def _page(found: list, offset: int, max_results: int | None) -> PagedList:
    """One page from a query that asked one row more than ``max_results``: the token when there is more."""
    if max_results is None or len(found) <= max_results:
        return PagedList(found, None)
    return PagedList(found[:max_results], base64.b64encode(json.dumps({"offset": offset + max_results}).encode()))


def _run_filter(filter_string: str | None) -> tuple[list[str], list[str]] | None:
    """SQL conditions on ``runs`` and their arguments for a filter of :data:`RUN_FILTERS`, else None."""
    text, pos, clauses, args = filter_string or "", 0, [], []
    if not text.strip():
        return clauses, args
    while True:
        found = _CLAUSE.match(text, pos)
        if found is None:
            return None
        op = found["op"].upper()
        if found["attr"]:
            clauses.append(f"{_COLUMN[found['akey'].strip('`')]} {op} ?")
            args.append(found["value"])
        else:
            clauses.append(f"EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = runs.run_uuid AND t.key = ? "
                           f"AND t.value {op} ?)")
            args += [found["qtag"] or found["tag"], found["value"]]
        pos = found.end()
        if pos == len(text):
            return clauses, args
        joined = _AND.match(text, pos)
        if joined is None:
            return None
        pos = joined.end()


def _run_order(order_by: list[str] | None) -> str | None:
    """MLflow's ORDER BY for no order or ``attributes.start_time [ASC|DESC]``, else None."""
    if not order_by:
        return "start_time DESC, run_uuid"
    if len(order_by) != 1:
        return None
    found = _ORDER.fullmatch(order_by[0])
    if found is None:
        return None
    direction = (found["dir"] or "ASC").upper()
    return f"start_time IS NULL, start_time {direction}, run_uuid"


class SqliteClient:
    """The subset of ``MlflowClient`` a run uses, on a verified local SQLite store."""

    def __init__(self, path: Path, uri: str) -> None:
        self.path, self.uri = Path(path), uri
        self._fallback = None

    # --- plumbing -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT, isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA case_sensitive_like = true")
        return db

    def _write(self, work) -> Any:
        """Run ``work(db)`` in one immediate transaction (the write lock taken up front)."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result
        except sqlite3.Error as e:
            raise TrackingError(f"MLflow store {self.path}: {e}") from None
        finally:
            db.close()

    def _read(self, work) -> Any:
        """Run ``work(db)`` in one read transaction: its queries see one state of the store."""
        db = self._connect()
        try:
            db.execute("BEGIN")
            return work(db)
        except sqlite3.Error as e:
            raise TrackingError(f"MLflow store {self.path}: {e}") from None
        finally:
            db.close()

    def mlflow(self):
        """MLflow's own client on the same store, for what this one does not do (imported once)."""
        if self._fallback is None:
            from mlflow.tracking import MlflowClient

            self._fallback = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._fallback

    @staticmethod
    def _active_run(db: sqlite3.Connection, run_id: str) -> tuple:
        row = db.execute("SELECT lifecycle_stage, status, end_time FROM runs WHERE run_uuid = ?",
                         (run_id,)).fetchone()
        if row is None:
            raise TrackingError(f"Run with id={run_id} not found")
        if row[0] != "active":
            raise TrackingError(f"The run {run_id} must be in the 'active' state. Current state is {row[0]}.")
        return row

    # --- experiments --------------------------------------------------------------------------

    @staticmethod
    def _experiments(db: sqlite3.Connection, where: str, args: tuple) -> list[Experiment]:
        rows = db.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
                          f"last_update_time FROM experiments {where}", args).fetchall()
        tags: dict[int, dict[str, str]] = {row[0]: {} for row in rows}
        for part in _chunks(list(tags)):
            for experiment_id, key, value in db.execute(
                    "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN "
                    f"({', '.join('?' * len(part))})", part):
                tags[experiment_id][key] = value
        return [Experiment(str(r[0]), r[1], r[2], r[3], r[4], r[5], tags[r[0]]) for r in rows]

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment named ``name``, active or deleted; None when there is none."""
        found = self._read(lambda db: self._experiments(
            db, "WHERE name = ? AND workspace = 'default' AND lifecycle_stage IN ('active', 'deleted')", (name,)))
        return found[0] if found else None

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment ``experiment_id``, active or deleted; TrackingError when there is none."""
        found = self._read(lambda db: self._experiments(db, "WHERE experiment_id = ?", (_int_id(experiment_id),)))
        if not found:
            raise TrackingError(f"No Experiment with id={experiment_id} exists")
        return found[0]

    def search_experiments(self, view_type: int = ViewType.ACTIVE_ONLY, max_results: int = MAX_RESULTS_DEFAULT,
                           filter_string: str | None = None, order_by: list[str] | None = None,
                           page_token: bytes | str | None = None) -> PagedList:
        """Experiments newest first (``creation_time DESC, experiment_id``), as MLflow pages them; a
        filter or another order goes to MlflowClient."""
        if filter_string or order_by:
            return self.mlflow().search_experiments(view_type, max_results, filter_string, order_by, page_token)
        stages, offset = _stages(view_type), _offset(page_token)
        _check_max_results(max_results, allow_none=False)
        found = self._read(lambda db: self._experiments(
            db, f"WHERE lifecycle_stage IN ({', '.join('?' * len(stages))}) "
                "ORDER BY creation_time DESC, experiment_id ASC LIMIT ? OFFSET ?", (*stages, max_results + 1, offset)))
        return _page(found, offset, max_results)

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        return self.mlflow().create_experiment(name, artifact_location=artifact_location)

    def restore_experiment(self, experiment_id: str) -> None:
        self.mlflow().restore_experiment(experiment_id)

    # --- runs ---------------------------------------------------------------------------------

    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict[str, str] | None = None,
                   run_name: str | None = None) -> Run:
        """A RUNNING run with ``tags``, as ``MlflowClient.create_run`` makes it."""
        tags = dict(tags or {})
        if run_name and tags.get(RUN_NAME_TAG) and tags[RUN_NAME_TAG] != run_name:
            raise TrackingError(f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                                f"different values (run_name='{run_name}', mlflow.runName='{tags[RUN_NAME_TAG]}').")
        if not (run_name or tags.get(RUN_NAME_TAG)):
            return self.mlflow().create_run(experiment_id, start_time=start_time, tags=tags)  # MLflow names it
        run_name = run_name or tags[RUN_NAME_TAG]
        tags.setdefault(RUN_NAME_TAG, run_name)
        run_id = uuid.uuid4().hex

        def work(db):
            row = db.execute("SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
                             (int(experiment_id),)).fetchone()
            if row is None:
                raise TrackingError(f"No Experiment with id={experiment_id} exists")
            if row[1] != "active":
                raise TrackingError(f"The experiment {experiment_id} must be in the 'active' state. "
                                    f"Current state is {row[1]}.")
            location = row[0] or ""
            if _local_dir(location) is None:
                return None
            artifact_uri = location.rstrip("/") + f"/{run_id}/artifacts"
            db.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time) "
                "VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
                (run_id, run_name, tags.get(USER_TAG, "unknown"), start_time or _now(), artifact_uri,
                 int(experiment_id)))
            db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                           [(k, str(v), run_id) for k, v in tags.items()])
            return artifact_uri

        if self._write(work) is None:  # artifacts not on a local disk: MLflow's client knows the scheme
            return self.mlflow().create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Run:
        """The run ``run_id`` (deleted or not), with its tags, parameters and latest metric values."""
        def work(db):
            found = self._runs(db, f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_uuid = ?", (run_id,))
            if not found:
                raise TrackingError(f"Run with id={run_id} not found")
            return found[0]

        return self._read(work)

    @staticmethod
    def _runs(db: sqlite3.Connection, query: str, args: tuple) -> list[Run]:
        """The runs ``query`` selects (:data:`_RUN_COLUMNS`, in its order), built as MLflow's
        ``SqlRun.to_mlflow_entity`` builds them: metrics from ``latest_metrics``, NaN restored."""
        rows = db.execute(query, args).fetchall()
        data = {row[0]: ({}, {}, {}) for row in rows}
        for part in _chunks(list(data)):
            marks = ", ".join("?" * len(part))
            for run_id, key, value, nan in db.execute(
                    f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", part):
                data[run_id][0][key] = float("nan") if nan else value
            for n, table in ((1, "params"), (2, "tags")):
                for run_id, key, value in db.execute(
                        f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({marks})", part):
                    data[run_id][n][key] = value
        runs = []
        for run_id, experiment_id, name, user_id, status, start, end, uri, stage in rows:
            metrics, params, tags = data[run_id]
            info = RunInfo(run_id, str(experiment_id), name or tags.get(RUN_NAME_TAG) or name, status, start, end,
                           uri, stage, user_id)
            runs.append(Run(info, RunData(metrics, params, tags)))
        return runs

    def search_runs(self, experiment_ids: list[str], filter_string: str = "", run_view_type: int = ViewType.ACTIVE_ONLY,
                    max_results: int | None = MAX_RESULTS_DEFAULT, order_by: list[str] | None = None,
                    page_token: bytes | str | None = None) -> PagedList:
        """``MlflowClient.search_runs`` on this store: the same runs, order and pages.

        Answered here for the filters of :data:`RUN_FILTERS` and for no order or
        ``attributes.start_time [ASC|DESC]``; anything else goes to MlflowClient whole. Deleted runs
        are left out unless ``run_view_type`` asks for them. The order is MLflow's: the one asked,
        then ``start_time DESC`` (unless asked), then the run id."""
        where = _run_filter(filter_string)
        order = _run_order(order_by)
        if where is None or order is None:
            return self.mlflow().search_runs(experiment_ids, filter_string, run_view_type, max_results, order_by,
                                             page_token)
        stages, offset = _stages(run_view_type), _offset(page_token)
        _check_max_results(max_results, allow_none=True)
        ids = [_int_id(e) for e in experiment_ids]
        clauses, args = where
        query = (f"SELECT {_RUN_COLUMNS} FROM runs WHERE experiment_id IN ({', '.join('?' * len(ids))}) "
                 f"AND lifecycle_stage IN ({', '.join('?' * len(stages))})"
                 + "".join(f" AND {c}" for c in clauses) + f" ORDER BY {order} LIMIT ? OFFSET ?")
        limit = -1 if max_results is None else max_results + 1
        found = self._read(lambda db: self._runs(db, query, (*ids, *stages, *args, limit, offset)))
        return _page(found, offset, max_results)

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        """Set a run's status (and name), as ``MlflowClient.update_run`` does."""
        def work(db):
            self._active_run(db, run_id)
            if status is not None:
                db.execute("UPDATE runs SET status = ? WHERE run_uuid = ?", (status, run_id))
            if name:
                self._rename(db, run_id, name)

        self._write(work)

    @staticmethod
    def _rename(db: sqlite3.Connection, run_id: str, name: str) -> None:
        db.execute("UPDATE runs SET name = ? WHERE run_uuid = ?", (name, run_id))
        db.execute("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                   "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value", (RUN_NAME_TAG, name, run_id))

    def set_terminated(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        def work(db):
            self._active_run(db, run_id)
            db.execute("UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
                       (status, end_time or _now(), run_id))

        self._write(work)

    # --- params and tags ----------------------------------------------------------------------

    def log_batch(self, run_id: str, metrics: Iterable = (), params: Iterable = (), tags: Iterable = ()) -> None:
        """Parameters (never changed once logged) and tags (replaced) in one transaction; metric
        points are logged by the notebook, in the kernel, and are MLflow's."""
        if list(metrics):
            raise TrackingError("metric points are logged through MLflow in the kernel, not by the runner")
        params = [_limited("parameter", p.key, p.value, MAX_PARAM_VALUE) for p in params]
        tags = [_limited("tag", t.key, t.value, MAX_TAG_VALUE) for t in tags]
        keys = [k for k, _ in params]
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise TrackingError(f"Duplicate parameter keys have been submitted: {dupes}")

        def work(db):
            self._active_run(db, run_id)
            existing = dict(db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
            changed = [k for k, v in params if k in existing and existing[k] != v]
            if changed:
                raise TrackingError(f"Changing param values is not allowed: {changed} already logged for run "
                                    f"ID='{run_id}'")
            db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                           [(k, v, run_id) for k, v in params if k not in existing])
            for key, value in tags:
                if key == RUN_NAME_TAG:
                    self._rename(db, run_id, value)
                else:
                    db.execute("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                               "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value",
                               (key, value, run_id))

        self._write(work)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self.log_batch(run_id, tags=[Tag(key, str(value))])

    def copy_metrics(self, run_id: str, metrics: dict[str, float], timestamp: int | None = None) -> None:
        """One point (step 0) per metric into a run that has none yet, the rows ``MlflowClient.log_batch``
        writes (``metrics`` and ``latest_metrics``): a cached pipeline step copies its source's metrics."""
        stamp = timestamp or _now()
        rows = []
        for key, value in sorted(metrics.items()):
            nan = value != value
            finite = 0.0 if nan else max(min(float(value), 1.7976931348623157e308), -1.7976931348623157e308)
            rows.append((key, finite, stamp, run_id, 0, int(nan)))

        def work(db):
            self._active_run(db, run_id)
            db.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                           "VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                           "VALUES (?, ?, ?, ?, ?, ?)", rows)

        self._write(work)

    # --- artifacts and models -----------------------------------------------------------------

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts as MLflow's local repository does (staged beside its
        destination, metadata kept, moved into place)."""
        run = self.get_run(run_id)
        root = _local_dir(run.info.artifact_uri)
        if root is None:
            self.mlflow().log_artifact(run_id, local_path, artifact_path)
            return
        folder = root / artifact_path if artifact_path else root
        if not folder.resolve().is_relative_to(root.resolve()):
            raise TrackingError(f"artifact path {artifact_path!r} leaves the run's artifact folder")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / os.path.basename(local_path)
        fd, staged = tempfile.mkstemp(dir=folder, prefix=TEMP_ARTIFACT_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out, open(local_path, "rb") as source:
                shutil.copyfileobj(source, out)
            shutil.copystat(local_path, staged)
            os.replace(staged, target)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise

    def search_logged_models(self, experiment_ids: list[str], filter_string: str | None = None) -> list[LoggedModel]:
        """The models a run logged; only the filter ``source_run_id = '<id>'`` (what the run asks)."""
        found = re.fullmatch(r"\s*source_run_id\s*=\s*'([0-9a-f]+)'\s*", filter_string or "")
        if found is None:
            return list(self.mlflow().search_logged_models(experiment_ids, filter_string=filter_string))
        marks = ", ".join("?" * len(experiment_ids))
        rows = self._read(lambda db: db.execute(
            f"SELECT name, artifact_location FROM logged_models WHERE experiment_id IN ({marks}) "
            "AND lifecycle_stage != 'deleted' AND source_run_id = ? ORDER BY creation_timestamp_ms DESC",
            (*[int(e) for e in experiment_ids], found.group(1))).fetchall())
        return [LoggedModel(name, location) for name, location in rows]
