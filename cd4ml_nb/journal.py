"""Team mode's journal: an MLflow tracking store that writes locally first and forwards live.

With an ``http(s)`` tracking URI the kernel's MLflow is pointed at ``cd4ml-journal:///<folder>``
(the ``mlflow.tracking_store`` entry point of this package). Every ``log_metric``, ``log_param``,
``set_tag``, ``log_batch``, ``log_inputs`` and logged-model call of *the cd4ml run* is appended as
one JSON line to ``<folder>/journal.jsonl`` (``O_APPEND``, one ``write`` per call, no network);
artifacts go to ``<folder>/artifacts`` and ``<folder>/models/<id>/artifacts``. Reads of the run
(``get_run``, metric history, logged models) are answered from the journal, so the notebook never
waits for, nor fails because of, the server. Calls about anything else go to the server.

The :class:`Forwarder` (in the runner process, or ``cd4ml-nb runs sync`` later) tails the
journal, ``fsync``\\ s it, and sends what is new with ``log_batch`` (MLflow's limits), then records
the byte offset the server acknowledged in ``state.json``. A batch whose answer never came (server
or forwarder killed mid-request) is *in doubt*: before it is sent again, the points, parameters and
models the server already has are dropped, so a replay never duplicates anything. One forwarder per
journal at a time (an ``flock`` on ``<folder>/lock``, released by the kernel when a process dies).
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlparse

from .exceptions import TrackingError
from .tracking import HEARTBEAT, heartbeat_value

SCHEME = "cd4ml-journal"
JOURNAL = "journal.jsonl"
MANIFEST = "manifest.json"
STATE = "state.json"
END = "end.json"
LOCK = "lock"
REJECTED = "rejected.jsonl"
# MLflow's log_batch limits (mlflow.utils.validation).
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS, BATCH_TOTAL = 1000, 100, 100, 1000
TEST_CRASH_AFTER = "CD4ML_JOURNAL_TEST_CRASH_AFTER"  # test hook: SIGKILL itself after N sent batches, unacked
TEST_BATCH = "CD4ML_JOURNAL_TEST_BATCH"  # test hook: records per batch


def uri_for(folder: Path) -> str:
    """The tracking URI that makes MLflow log into the journal in ``folder``."""
    return f"{SCHEME}://{Path(folder).resolve().as_posix()}"


def folder_of(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def write_json(path: Path, data: Any) -> None:
    """Atomically replace ``path`` with ``data`` as JSON, durable before the rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def lock(folder: Path, block: bool = False) -> int | None:
    """An open, ``flock``-ed file descriptor on the journal's lock; None when another process holds it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def create(folder: Path, server_uri: str, run, experiment_name: str | None = None) -> tuple[str, int]:
    """Make the journal folder of the server run ``run`` (an MLflow Run), locked by the caller;
    returns its URI and the lock (the manifest, written last, is what makes it a journal)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    (folder / JOURNAL).touch()
    held = lock(folder)
    info = run.info
    write_json(folder / MANIFEST, {
        "server_uri": server_uri, "run_id": info.run_id, "experiment_id": info.experiment_id,
        "experiment_name": experiment_name, "user_id": info.user_id, "start_time": info.start_time,
        "run_name": info.run_name, "tags": dict(run.data.tags), "params": dict(run.data.params),
    })
    return uri_for(folder), held


def forget(uri: str) -> None:
    """Close the journal file this process's MLflow keeps open for ``uri`` (it reopens on use)."""
    if JournalStore is None:
        return
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    try:
        found = _tracking_store_registry._get_store_with_resolved_uri(uri, None)
    except Exception:
        return
    found.close()


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


def _finite(value: float) -> float | str:
    """A metric value as MLflow's JSON API takes it (NaN and infinities as strings)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# --- the store (kernel side, and the runner's reads) --------------------------------------------


def _store_class():
    """JournalStore: the journal's methods, and every other AbstractStore method sent to the server."""
    global JournalStore
    if JournalStore is None:
        from mlflow.store.tracking.abstract_store import AbstractStore

        def delegate(name: str):
            return lambda self, *args, **kw: getattr(self.server, name)(*args, **kw)

        ns = {name: delegate(name) for name in dir(AbstractStore)
              if not name.startswith("_") and callable(getattr(AbstractStore, name))
              and name not in _JournalStoreBody.__dict__}
        ns.update(__doc__=_JournalStoreBody.__doc__, __module__=__name__)
        JournalStore = type("JournalStore", (_JournalStoreBody, AbstractStore), ns)
    return JournalStore


JournalStore = None  # built on first use: the class needs mlflow, importing this module does not


def store(store_uri: str, artifact_uri: str | None = None, **_: Any):
    """The ``mlflow.tracking_store`` entry point for ``cd4ml-journal:`` URIs."""
    return _store_class()(store_uri)


def registry_store(store_uri: str, tracking_uri: str | None = None, **_: Any):
    """The ``mlflow.model_registry_store`` entry point: the registry is the server's."""
    from mlflow.store.model_registry.rest_store import RestStore
    from mlflow.utils.credentials import get_default_host_creds

    server_uri = read_json(folder_of(store_uri) / MANIFEST)["server_uri"]
    return RestStore(lambda: get_default_host_creds(server_uri))


def register() -> None:
    """Register the scheme with this process's MLflow (the entry points do it for other processes)."""
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry.register(SCHEME, store)
    _get_store_registry().register(SCHEME, registry_store)


class _JournalStoreBody:
    """MLflow tracking store of one run: journaled locally, read locally, forwarded by others."""

    def __init__(self, store_uri: str) -> None:
        from mlflow.store.tracking.abstract_store import AbstractStore

        AbstractStore.__init__(self)
        import threading

        self.folder = folder_of(store_uri)
        manifest = read_json(self.folder / MANIFEST)
        if not manifest:
            from mlflow.exceptions import MlflowException

            raise MlflowException(f"{self.folder}: not a cd4ml-nb journal (no {MANIFEST})")
        self.manifest = manifest
        self.run_id, self.experiment_id = manifest["run_id"], manifest["experiment_id"]
        self._server = None
        self._lock = threading.Lock()
        self.status, self.end_time = "RUNNING", None
        self.params: dict[str, str] = dict(manifest.get("params") or {})
        self.tags: dict[str, str] = dict(manifest.get("tags") or {})
        self.latest: dict[str, tuple] = {}
        self.models: dict[str, dict] = {}
        self.datasets: list[str] = []
        self.outputs: list[tuple[str, int]] = []
        for _, _, rec in records(self.folder):
            self._apply(rec)
        self.fd: int | None = None

    def _open(self) -> int:
        fd = os.open(self.folder / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size:
            with open(self.folder / JOURNAL, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")  # end a line torn by a process that died mid-write
        return fd

    def close(self) -> None:
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    @property
    def server(self):
        if self._server is None:
            from mlflow.store.tracking.rest_store import RestStore
            from mlflow.utils.credentials import get_default_host_creds

            uri = self.manifest["server_uri"]
            self._server = RestStore(lambda: get_default_host_creds(uri))
        return self._server

    # journal writing -------------------------------------------------------------------------

    def _append(self, recs: list[dict]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs).encode()
        with self._lock:
            if self.fd is None:
                self.fd = self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            for r in recs:
                self._apply(r)

    def _apply(self, r: dict) -> None:
        t = r.get("t")
        if t == "m":
            key = r["k"]
            new = (r.get("st", 0), r["ts"], r["v"])
            if key not in self.latest or new >= self.latest[key][:3]:
                self.latest[key] = new
        elif t == "p":
            self.params[r["k"]] = r["v"]
        elif t == "g":
            self.tags[r["k"]] = r["v"]
        elif t == "dt":
            self.tags.pop(r["k"], None)
        elif t == "mc":
            self.models[r["id"]] = {**r, "status": "PENDING", "tags": dict(r.get("tags") or {}),
                                    "params": dict(r.get("params") or {})}
        elif t == "mf" and r["id"] in self.models:
            self.models[r["id"]]["status"] = r["status"]
        elif t == "mt" and r["id"] in self.models:
            self.models[r["id"]]["tags"].update(r["tags"])
        elif t == "mdt" and r["id"] in self.models:
            self.models[r["id"]]["tags"].pop(r["k"], None)
        elif t == "mp" and r["id"] in self.models:
            self.models[r["id"]]["params"].update(r["params"])
        elif t == "in":
            self.datasets += r.get("datasets", [])
        elif t == "out":
            self.outputs += [tuple(o) for o in r.get("models", [])]

    def _ours(self, run_id: str) -> bool:
        return run_id == self.run_id

    # runs ------------------------------------------------------------------------------------

    def log_batch(self, run_id, metrics, params, tags):
        if not self._ours(run_id):
            return self.server.log_batch(run_id, metrics, params, tags)
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
        from mlflow.utils.validation import _validate_batch_log_data

        _validate_batch_log_data(metrics, params, tags)
        recs = []
        for p in params:
            old = self.params.get(p.key)
            if old is not None and old != str(p.value):
                raise MlflowException(
                    f"Changing param values is not allowed. Param with key='{p.key}' was already logged with "
                    f"value='{old}' for run ID='{run_id}'. Attempted logging new value '{p.value}'.",
                    INVALID_PARAMETER_VALUE)
            recs.append({"t": "p", "k": p.key, "v": str(p.value)})
        for m in metrics:
            rec = {"t": "m", "k": m.key, "v": float(m.value), "ts": int(m.timestamp), "st": int(m.step or 0)}
            for field, attr in (("mid", "model_id"), ("dn", "dataset_name"), ("dd", "dataset_digest")):
                value = getattr(m, attr, None)
                if value:
                    rec[field] = value
            recs.append(rec)
        recs += [{"t": "g", "k": t.key, "v": str(t.value)} for t in tags]
        if recs:
            self._append(recs)

    def log_metric(self, run_id, metric):
        self.log_batch(run_id, [metric], [], [])

    def log_param(self, run_id, param):
        self.log_batch(run_id, [], [param], [])

    def set_tag(self, run_id, tag):
        self.log_batch(run_id, [], [], [tag])

    def delete_tag(self, run_id, key):
        if not self._ours(run_id):
            return self.server.delete_tag(run_id, key)
        self._append([{"t": "dt", "k": key}])

    def log_batch_async(self, run_id, metrics, params, tags):
        from mlflow.utils.async_logging.run_operations import RunOperations

        self.log_batch(run_id, metrics, params, tags)
        return RunOperations(None)

    def log_metric_async(self, run_id, metric):
        return self.log_batch_async(run_id, [metric], [], [])

    def log_param_async(self, run_id, param):
        return self.log_batch_async(run_id, [], [param], [])

    def set_tag_async(self, run_id, tag):
        return self.log_batch_async(run_id, [], [], [tag])

    def get_run(self, run_id):
        if not self._ours(run_id):
            return self.server.get_run(run_id)
        from mlflow.entities import (DatasetInput, Metric, Param, Run, RunData, RunInfo, RunInputs, RunOutputs,
                                     RunTag, LoggedModelOutput)
        from mlflow.protos.service_pb2 import DatasetInput as DatasetInputProto
        from mlflow.utils.proto_json_utils import parse_dict

        m = self.manifest
        info = RunInfo(self.run_id, self.experiment_id, m.get("user_id") or "", self.status, m.get("start_time"),
                       self.end_time, "active", (self.folder / "artifacts").as_uri(),
                       self.tags.get("mlflow.runName", m.get("run_name")))
        with self._lock:
            data = RunData(metrics=[Metric(k, v, ts, st) for k, (st, ts, v) in self.latest.items()],
                           params=[Param(k, v) for k, v in self.params.items()],
                           tags=[RunTag(k, v) for k, v in self.tags.items()])
            datasets = []
            for text in self.datasets:
                proto = DatasetInputProto()
                parse_dict(json.loads(text), proto)
                datasets.append(DatasetInput.from_proto(proto))
            outputs = [LoggedModelOutput(mid, step) for mid, step in self.outputs]
        return Run(info, data, RunInputs(datasets), RunOutputs(outputs))

    def update_run_info(self, run_id, run_status, end_time, run_name):
        if not self._ours(run_id):
            return self.server.update_run_info(run_id, run_status, end_time, run_name)
        from mlflow.entities import RunStatus

        # The runner owns the server run's status: the kernel's start/end only change the local view.
        self.status = RunStatus.to_string(run_status) if isinstance(run_status, int) else str(run_status)
        self.end_time = end_time
        if run_name and run_name != self.tags.get("mlflow.runName"):
            self._append([{"t": "g", "k": "mlflow.runName", "v": run_name}])
        return self.get_run(run_id).info

    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        if not self._ours(run_id):
            return self.server.get_metric_history(run_id, metric_key, max_results, page_token)
        from mlflow.entities import Metric
        from mlflow.store.entities.paged_list import PagedList

        return PagedList([Metric(r["k"], r["v"], r["ts"], r.get("st", 0), run_id=run_id)
                          for _, _, r in records(self.folder) if r.get("t") == "m" and r["k"] == metric_key], None)

    def log_inputs(self, run_id, datasets=None, models=None):
        if not self._ours(run_id):
            return self.server.log_inputs(run_id, datasets, models)
        from mlflow.utils.proto_json_utils import message_to_json

        self._append([{"t": "in", "datasets": [message_to_json(d.to_proto()) for d in datasets or []],
                       "models": [m.model_id for m in models or []]}])

    def log_outputs(self, run_id, models):
        if not self._ours(run_id):
            return self.server.log_outputs(run_id, models)
        self._append([{"t": "out", "models": [[m.model_id, int(m.step or 0)] for m in models]}])

    def record_logged_model(self, run_id, mlflow_model):
        if not self._ours(run_id):
            return self.server.record_logged_model(run_id, mlflow_model)
        self._append([{"t": "lm", "model": mlflow_model.get_tags_dict()}])

    def get_experiment(self, experiment_id):
        if str(experiment_id) != str(self.experiment_id) or not self.manifest.get("experiment_name"):
            return self.server.get_experiment(experiment_id)
        from mlflow.entities import Experiment

        return Experiment(self.experiment_id, self.manifest["experiment_name"], None, "active")

    # logged models -----------------------------------------------------------------------------

    def _model(self, model_id: str):
        from mlflow.entities import LoggedModel, LoggedModelStatus

        r = self.models[model_id]
        location = (self.folder / "models" / model_id / "artifacts").as_uri()
        return LoggedModel(r["exp"], model_id, r["name"], location, r["ts"], r["ts"], r.get("type"), r.get("run"),
                           getattr(LoggedModelStatus, r["status"]), None, r["tags"], r["params"])

    def create_logged_model(self, experiment_id, name=None, source_run_id=None, tags=None, params=None,
                            model_type=None):
        if source_run_id != self.run_id:
            return self.server.create_logged_model(experiment_id, name, source_run_id, tags, params, model_type)
        from mlflow.utils.name_utils import _generate_random_name

        model_id = f"m-{uuid.uuid4().hex}"
        (self.folder / "models" / model_id / "artifacts").mkdir(parents=True)
        self._append([{"t": "mc", "id": model_id, "exp": str(experiment_id), "name": name or _generate_random_name(),
                       "run": source_run_id, "type": model_type, "ts": int(time.time() * 1000),
                       "tags": {t.key: t.value for t in tags or []}, "params": {p.key: p.value for p in params or []}}])
        return self._model(model_id)

    def get_logged_model(self, model_id, *args, **kwargs):
        if model_id not in self.models:
            return self.server.get_logged_model(model_id, *args, **kwargs)
        return self._model(model_id)

    def finalize_logged_model(self, model_id, status):
        if model_id not in self.models:
            return self.server.finalize_logged_model(model_id, status)
        from mlflow.entities import LoggedModelStatus

        name = status.name if isinstance(status, LoggedModelStatus) else LoggedModelStatus.from_int(status).name
        self._append([{"t": "mf", "id": model_id, "status": name}])
        return self._model(model_id)

    def set_logged_model_tags(self, model_id, tags):
        if model_id not in self.models:
            return self.server.set_logged_model_tags(model_id, tags)
        self._append([{"t": "mt", "id": model_id, "tags": {t.key: t.value for t in tags}}])

    def delete_logged_model_tag(self, model_id, key):
        if model_id not in self.models:
            return self.server.delete_logged_model_tag(model_id, key)
        self._append([{"t": "mdt", "id": model_id, "k": key}])

    def log_logged_model_params(self, model_id, params):
        if model_id not in self.models:
            return self.server.log_logged_model_params(model_id, params)
        self._append([{"t": "mp", "id": model_id, "params": {p.key: p.value for p in params}}])

    def search_logged_models(self, experiment_ids, filter_string=None, datasets=None, max_results=None,
                             order_by=None, page_token=None):
        from mlflow.store.entities.paged_list import PagedList

        if filter_string and self.run_id in filter_string and "source_run_id" in filter_string:
            return PagedList([self._model(i) for i, r in self.models.items() if r.get("run") == self.run_id], None)
        return self.server.search_logged_models(experiment_ids, filter_string, datasets, max_results, order_by,
                                                page_token)


# --- forwarding (runner side, `runs sync`) -------------------------------------------------------


class ServerUnreachable(TrackingError):
    """The server did not answer (refused, reset, timed out, 5xx): try again later."""


@dataclass(frozen=True)
class Pending:
    """A journal not yet wholly on the server (for ``cd4ml-nb runs``)."""

    folder: Path
    run_id: str
    server_uri: str
    bytes_pending: int
    artifacts_pending: int
    ended: str | None  # the status the runner ended with, None while running or when it died
    live: bool  # a runner (or a sync) holds it now


class Forwarder:
    """Sends one journal to its server run: the new records, the artifacts, at last the status."""

    def __init__(self, folder: Path, heartbeat: float | None = None, timeout: float = 10.0,
                 held: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = read_json(self.folder / MANIFEST)
        self.server_uri, self.run_id = self.manifest["server_uri"], self.manifest["run_id"]
        self.state = read_json(self.folder / STATE, {}) or {}
        self.state.setdefault("offset", 0)
        self.state.setdefault("models", {})
        self.state.setdefault("artifacts", {})
        self.heartbeat, self.timeout = heartbeat, timeout
        self._last_beat = 0.0
        self.orphaned = False  # the server run was ended by someone else (an orphan verdict) while we ran
        self._seen: dict[str, tuple] = {}  # artifact -> (size, mtime) at the previous scan
        self._lock_fd: int | None = held
        self._sent = 0
        self._client = None
        self._batch = int(os.environ.get(TEST_BATCH) or BATCH_TOTAL)
        self._crash_after = int(os.environ.get(TEST_CRASH_AFTER) or 0)
        self.error: str | None = None

    # locking ---------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Become the journal's one forwarder; False when another process is."""
        if self._lock_fd is None:
            self._lock_fd = lock(self.folder)
        return self._lock_fd is not None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # transport -------------------------------------------------------------------------------

    def _call(self, endpoint: str, body: dict | None = None, method: str = "POST") -> dict:
        """One request, no retries: MLflow's client would spend minutes on a dead server."""
        from mlflow.exceptions import MlflowException, RestException
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        kw = {"json": body} if method == "POST" else {"params": body}
        try:
            response = http_request(get_default_host_creds(self.server_uri), endpoint, method, max_retries=0,
                                    timeout=self.timeout, raise_on_status=False, **kw)
        except MlflowException as e:
            raise ServerUnreachable(str(e).splitlines()[0]) from None
        except OSError as e:
            raise ServerUnreachable(str(e)) from None
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise ServerUnreachable(f"HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            raise RestException(payload if "error_code" in payload else
                                {"error_code": "INTERNAL_ERROR", "message": f"HTTP {response.status_code}"})
        return payload

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.server_uri, registry_uri=self.server_uri)
        return self._client

    def server_run(self) -> dict:
        return self._call("/api/2.0/mlflow/runs/get", {"run_id": self.run_id}, "GET")["run"]

    # one pass --------------------------------------------------------------------------------

    def step(self, final: bool = False) -> bool:
        """Send what is new; True when the server has the whole journal (and, if ``final``, every
        artifact). ServerUnreachable when it does not answer."""
        self._beat()
        size = os.path.getsize(self.folder / JOURNAL)
        if size > self.state["offset"]:
            with open(self.folder / JOURNAL, "rb") as f:
                os.fsync(f.fileno())  # nothing reaches the server that is not durable here
            self._send_records()
        self._send_artifacts(final)
        return self.caught_up(final)

    def caught_up(self, final: bool = True) -> bool:
        return (self.state["offset"] >= os.path.getsize(self.folder / JOURNAL)
                and (not final or not self._artifacts_pending()))

    def _beat(self) -> None:
        if self.heartbeat is None or self.orphaned or time.monotonic() - self._last_beat < self.heartbeat:
            return
        run = self.server_run()
        if run["info"]["status"] != "RUNNING":
            self.orphaned = True  # declared dead meanwhile: never set it RUNNING again
            return
        self._call("/api/2.0/mlflow/runs/set-tag", {"run_id": self.run_id, "key": HEARTBEAT,
                                                     "value": heartbeat_value()})
        self._last_beat = time.monotonic()

    def _save(self) -> None:
        write_json(self.folder / STATE, self.state)

    def _send_records(self) -> None:
        group: list[tuple[int, int, dict]] = []
        for offset, nxt, rec in records(self.folder, self.state["offset"]):
            if rec.get("t") in ("m", "p", "g"):
                group.append((offset, nxt, rec))
                if self._full(group):
                    self._send_group(group)
                    group = []
                continue
            if group:
                self._send_group(group)
                group = []
            self._send_other(offset, nxt, rec)
        if group:
            self._send_group(group)

    def _full(self, group: list) -> bool:
        counts = {"m": 0, "p": 0, "g": 0}
        for _, _, r in group:
            counts[r["t"]] += 1
        return (len(group) >= min(self._batch, BATCH_TOTAL) or counts["m"] >= BATCH_METRICS
                or counts["p"] >= BATCH_PARAMS or counts["g"] >= BATCH_TAGS)

    def _in_doubt(self, start: int) -> bool:
        doubt = self.state.get("in_doubt")
        return bool(doubt) and doubt[0] <= start < doubt[1]

    def _begin(self, start: int, end: int) -> None:
        """Record the batch as in doubt before it is sent: a crash now makes the next replay check it."""
        if not self._in_doubt(start):
            self.state["in_doubt"] = [start, end]
            self._save()

    def _ack(self, end: int) -> None:
        self._sent += 1
        if self._crash_after and self._sent >= self._crash_after:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)  # test hook: the batch is on the server, not acknowledged
        self.state["offset"] = end
        if self.state.get("in_doubt") and self.state["in_doubt"][1] <= end:
            self.state["in_doubt"] = None
        self._save()

    def _send_group(self, group: list[tuple[int, int, dict]]) -> None:
        start, end = group[0][0], group[-1][1]
        recs = [r for _, _, r in group]
        if self._in_doubt(start):
            recs = self._dedupe(recs)
        self._begin(start, end)
        metrics = []
        for r in recs:
            if r["t"] != "m":
                continue
            m = {"key": r["k"], "value": _finite(r["v"]), "timestamp": r["ts"], "step": r.get("st", 0)}
            model = self.state["models"].get(r.get("mid", ""))
            if model:
                m["model_id"] = model
            if r.get("dn"):
                m.update(dataset_name=r["dn"], dataset_digest=r.get("dd"))
            metrics.append(m)
        body = {"run_id": self.run_id, "metrics": metrics,
                "params": [{"key": r["k"], "value": r["v"]} for r in recs if r["t"] == "p"],
                "tags": [{"key": r["k"], "value": r["v"]} for r in recs if r["t"] == "g"]}
        if metrics or body["params"] or body["tags"]:
            try:
                self._call("/api/2.0/mlflow/runs/log-batch", body)
            except ServerUnreachable:
                raise
            except Exception as e:  # refused as a whole (e.g. a parameter the server has otherwise):
                self._one_by_one(recs, e)  # send what it takes, keep the rest beside the journal
        self._ack(end)

    def _one_by_one(self, recs: list[dict], error: Exception) -> None:
        for r in recs:
            kind = {"m": "metrics", "p": "params", "g": "tags"}[r["t"]]
            item = {"key": r["k"], "value": _finite(r["v"]) if r["t"] == "m" else r["v"]}
            if r["t"] == "m":
                item.update(timestamp=r["ts"], step=r.get("st", 0))
            try:
                self._call("/api/2.0/mlflow/runs/log-batch", {"run_id": self.run_id, kind: [item]})
            except ServerUnreachable:
                raise
            except Exception as e:
                with open(self.folder / REJECTED, "a") as f:
                    f.write(json.dumps({"record": r, "error": str(e).splitlines()[0]}) + "\n")

    def _dedupe(self, recs: list[dict]) -> list[dict]:
        """Drop what the server already has of a batch whose acknowledgement was lost."""
        run = self.server_run()
        params = {p["key"]: p["value"] for p in run.get("data", {}).get("params", [])}
        have: dict[str, set] = {}
        for key in {r["k"] for r in recs if r["t"] == "m"}:
            have[key] = set()
            token = None
            while True:
                body = {"run_id": self.run_id, "metric_key": key, "max_results": 25000}
                if token:
                    body["page_token"] = token
                page = self._call("/api/2.0/mlflow/metrics/get-history", body, "GET")
                have[key] |= {(int(m["timestamp"]), int(m.get("step", 0)), _finite(float(m["value"])))
                              for m in page.get("metrics", [])}
                token = page.get("next_page_token")
                if not token:
                    break
        kept = []
        for r in recs:
            if r["t"] == "m" and (r["ts"], r.get("st", 0), _finite(r["v"])) in have[r["k"]]:
                continue
            if r["t"] == "p" and params.get(r["k"]) == r["v"]:
                continue
            kept.append(r)
        return kept

    def _send_other(self, offset: int, end: int, r: dict) -> None:
        """Models, inputs, outputs: rare, sent one record at a time through MLflow's client."""
        self.server_run()  # fail fast while the server is down (MLflow's client retries for minutes)
        self._begin(offset, end)
        t, models = r.get("t"), self.state["models"]
        if t == "dt":
            try:
                self.client.delete_tag(self.run_id, r["k"])
            except Exception:  # already gone
                pass
        elif t == "mc":
            models[r["id"]] = self._create_model(r)
            self._save()
        elif t in ("mf", "mt", "mdt", "mp") and r["id"] in models:
            mid = models[r["id"]]
            if t == "mf":
                if r["status"] == "READY":
                    local = self.folder / "models" / r["id"] / "artifacts"
                    if local.is_dir() and any(local.iterdir()):
                        self.client.log_model_artifacts(mid, str(local))
                from mlflow.entities import LoggedModelStatus

                self.client.finalize_logged_model(mid, getattr(LoggedModelStatus, r["status"]))
            elif t == "mt":
                self.client.set_logged_model_tags(mid, r["tags"])
            elif t == "mdt":
                self.client.delete_logged_model_tag(mid, r["k"])
            else:
                self.client.log_model_params(mid, r["params"])
        elif t == "in":
            from mlflow.entities import DatasetInput, LoggedModelInput
            from mlflow.protos.service_pb2 import DatasetInput as DatasetInputProto
            from mlflow.utils.proto_json_utils import parse_dict

            datasets = []
            for text in r.get("datasets", []):
                proto = DatasetInputProto()
                parse_dict(json.loads(text), proto)
                datasets.append(DatasetInput.from_proto(proto))
            inputs = [LoggedModelInput(models[m]) for m in r.get("models", []) if m in models]
            self.client.log_inputs(self.run_id, datasets or None, inputs or None)
        elif t == "out":
            from mlflow.entities import LoggedModelOutput

            outs = [LoggedModelOutput(models[m], step) for m, step in r.get("models", []) if m in models]
            if outs:
                self.client.log_outputs(self.run_id, outs)
        elif t == "lm":
            self._record_model(r["model"])
        self._ack(end)

    def _create_model(self, r: dict) -> str:
        """The server model of local model ``r["id"]``: found (a replay after a crash) or created."""
        tag = "cd4ml.journal.model_id"
        for model in self.client.search_logged_models([r["exp"]], filter_string=f"source_run_id = '{self.run_id}'"):
            if model.tags.get(tag) == r["id"]:
                return model.model_id
        created = self.client.create_logged_model(r["exp"], name=r["name"], source_run_id=self.run_id,
                                                  tags={**r.get("tags", {}), tag: r["id"]},
                                                  params=r.get("params") or None, model_type=r.get("type"))
        return created.model_id

    def _record_model(self, model: dict) -> None:
        """The run's ``mlflow.log-model.history`` tag, as MLflow's ``record_logged_model`` keeps it."""
        key = "mlflow.log-model.history"
        tags = {t["key"]: t["value"] for t in self.server_run().get("data", {}).get("tags", [])}
        history = json.loads(tags.get(key) or "[]")
        if model not in history:
            self._call("/api/2.0/mlflow/runs/set-tag", {"run_id": self.run_id, "key": key,
                                                         "value": json.dumps(history + [model])})

    # artifacts -------------------------------------------------------------------------------

    def _artifact_files(self) -> dict[str, tuple[int, int]]:
        root = self.folder / "artifacts"
        found = {}
        for path in root.rglob("*") if root.is_dir() else ():
            if path.is_file():
                st = path.stat()
                found[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
        return found

    def _artifacts_pending(self) -> int:
        done = self.state["artifacts"]
        return sum(tuple(done.get(k, ())) != v for k, v in self._artifact_files().items())

    def _send_artifacts(self, final: bool) -> None:
        files = self._artifact_files()
        done = self.state["artifacts"]
        todo = [k for k, v in files.items() if tuple(done.get(k, ())) != v
                and (final or self._seen.get(k) == v)]  # live: only files unchanged since the last pass
        self._seen = files
        if not todo:
            return
        self.server_run()
        root = self.folder / "artifacts"
        for rel in sorted(todo):
            parent = os.path.dirname(rel)
            self.client.log_artifact(self.run_id, str(root / rel), parent or None)
            done[rel] = list(files[rel])
            self._save()

    # ending ----------------------------------------------------------------------------------

    def end(self) -> None:
        """Set the status the runner recorded in ``end.json`` (or FAILED/orphaned when it died mid-run).

        A run that someone else ended while its runner was unreachable (an orphan verdict) takes the
        true terminal status; nothing ever sets it RUNNING again."""
        from . import tracking

        ended = read_json(self.folder / END)
        run = self.server_run()
        status = run["info"]["status"]
        tags = {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}
        if ended is None:  # the runner died before the notebook ended
            if status == "RUNNING":
                self._end_run("FAILED", {tracking.REASON: "orphaned", "cd4ml.status.message":
                                         "the runner died; `cd4ml-nb runs sync` uploaded its journal"})
            return
        if status != "RUNNING" and tags.get(tracking.REASON) == "orphaned":
            self._end_run(None, {"cd4ml.orphan_verdict": tags.get("cd4ml.status.message", "orphaned")})
            for key in (tracking.REASON, "cd4ml.status.message"):
                if key not in ended["tags"]:
                    self._call("/api/2.0/mlflow/runs/delete-tag", {"run_id": self.run_id, "key": key})
        self._end_run(ended["status"], ended["tags"])

    def _end_run(self, status: str | None, tags: dict[str, str]) -> None:
        """Tags, then the terminal status (as ``tracking.end_run``, without MLflow's stdout banner)."""
        from . import tracking

        for key, value in tags.items():
            self._call("/api/2.0/mlflow/runs/set-tag", {"run_id": self.run_id, "key": key,
                                                         "value": tracking.clip(value)})
        if status:
            self._call("/api/2.0/mlflow/runs/update", {"run_id": self.run_id, "status": status,
                                                        "end_time": int(time.time() * 1000)})

    def pending(self) -> Pending:
        ended = read_json(self.folder / END)
        return Pending(self.folder, self.run_id, self.server_uri,
                       max(0, os.path.getsize(self.folder / JOURNAL) - self.state["offset"]),
                       self._artifacts_pending(), ended["status"] if ended else None, self.is_live())

    def is_live(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = lock(self.folder)
        if fd is None:
            return True
        os.close(fd)
        return False


def complete(folder: Path, timeout: float = 10.0, on_error: Callable[[str], None] | None = None) -> bool:
    """Upload a journal that no runner holds, end its run and remove it; False when it stays pending
    (server unreachable, or a live runner holds it)."""
    import shutil

    fw = Forwarder(folder, timeout=timeout)
    if not fw.acquire():
        return False
    try:
        for _ in range(3):  # a kernel that outlived its runner may still be appending
            if fw.step(final=True):
                break
        fw.end()
    except ServerUnreachable as e:
        if on_error:
            on_error(f"{fw.server_uri}: {e}")
        return False
    finally:
        fw.release()
    shutil.rmtree(folder, ignore_errors=True)
    return True
