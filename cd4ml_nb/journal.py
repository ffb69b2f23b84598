"""Team mode's kernel side: the MLflow tracking store that writes a run's calls into its journal."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
import weakref
from typing import Any

from .journal_folder import ARTIFACTS, JOURNAL, MANIFEST, SCHEME, create, folder_of, read_json, records


def store(store_uri: str, artifact_uri: str | None = None, **_: Any) -> JournalStore:
    """The ``mlflow.tracking_store`` entry point for ``cd4ml-journal:`` URIs."""
    return JournalStore(store_uri)


def registry_store(store_uri: str, tracking_uri: str | None = None, **_: Any):
    """The ``mlflow.model_registry_store`` entry point: the registry is the server's."""
    from mlflow.store.model_registry.rest_store import RestStore
    from mlflow.utils.credentials import get_default_host_creds

    server_uri = read_json(folder_of(store_uri) / MANIFEST)["server_uri"]
    return RestStore(lambda: get_default_host_creds(server_uri))


# MLflow is imported after the entry points above: importing it loads every package's store entry points,
# this module's too, maybe while this module is being imported (then only these must be defined).
from mlflow.entities import (DatasetInput, Experiment, LoggedModel, LoggedModelInput, LoggedModelOutput,  # noqa: E402
                             LoggedModelStatus, Metric, Param, Run, RunData, RunInfo, RunInputs, RunOutputs, RunStatus,
                             RunTag)
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST  # noqa: E402
from mlflow.protos.service_pb2 import DatasetInput as DatasetInputProto  # noqa: E402
from mlflow.store.entities.paged_list import PagedList  # noqa: E402
from mlflow.store.tracking.abstract_store import AbstractStore  # noqa: E402
from mlflow.utils import validation  # noqa: E402
from mlflow.utils.proto_json_utils import message_to_json, parse_dict  # noqa: E402

__all__ = ["FORWARDED", "JOURNALED", "JournalStore", "create", "forget", "register", "registry_store", "store"]

# Calls the kernel's MLflow makes about the journaled run (and its logged models): written to the journal
# or answered from it; about anything else they go to the server as they are.
JOURNALED = (
    "log_batch", "log_metric", "log_param", "set_tag", "delete_tag", "log_batch_async", "log_metric_async",
    "log_param_async", "set_tag_async", "flush_async_logging", "end_async_logging", "shut_down_async_logging",
    "get_run", "update_run_info", "get_metric_history", "get_experiment", "log_inputs", "log_outputs",
    "record_logged_model", "create_logged_model", "get_logged_model", "finalize_logged_model",
    "set_logged_model_tags", "delete_logged_model_tag", "log_logged_model_params", "search_logged_models",
)
# Calls that never touch the journaled run's data: sent to the server (delete_run, restore_run and
# delete_logged_model refuse the journaled run and its models).
FORWARDED = (
    "create_experiment", "get_experiment_by_name", "search_experiments", "delete_experiment", "restore_experiment",
    "rename_experiment", "set_experiment_tag", "delete_experiment_tag", "filter_active_experiment_ids",
    "create_run", "delete_run", "restore_run", "search_runs", "get_metric_history_bulk_interval",
    "get_metric_history_bulk_interval_from_steps", "delete_logged_model", "set_model_versions_tags",
    "start_trace", "log_spans", "log_spans_async", "get_trace", "get_trace_info", "batch_get_traces",
    "batch_get_trace_infos", "search_traces", "set_trace_tag", "delete_trace_tag", "delete_traces",
    "link_traces_to_run", "unlink_traces_from_run", "link_prompts_to_trace", "create_assessment", "get_assessment",
    "update_assessment", "delete_assessment", "calculate_trace_filter_correlation", "query_trace_metrics",
    "find_completed_sessions", "create_dataset", "get_dataset", "delete_dataset", "search_datasets",
    "set_dataset_tags", "delete_dataset_tag", "upsert_dataset_records", "delete_dataset_records",
    "get_dataset_experiment_ids", "add_dataset_to_experiments", "remove_dataset_from_experiments",
    "register_scorer", "list_scorers", "list_scorer_versions", "get_scorer", "delete_scorer",
)
_open_stores: weakref.WeakSet = weakref.WeakSet()


def register() -> None:
    """Register the scheme with this process's MLflow (the entry points do it for other processes)."""
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry.register(SCHEME, store)
    _get_store_registry().register(SCHEME, registry_store)


def forget(uri: str) -> None:
    """Close the journal file this process's stores keep open for ``uri`` (they reopen it on use)."""
    folder = folder_of(uri)
    for found in list(_open_stores):
        if found.folder == folder:
            found.close()


def _changed_param(run_id: str, key: str, old: str, new: str) -> MlflowException:
    """What MLflow's store says when one parameter is logged again with another value."""
    return MlflowException(f"Changing param values is not allowed. Param with key='{key}' was already logged with "
                           f"value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'.",
                           INVALID_PARAMETER_VALUE)


def _datasets(texts: list[str]) -> list[DatasetInput]:
    found = []
    for text in texts:
        proto = DatasetInputProto()
        parse_dict(json.loads(text), proto)
        found.append(DatasetInput.from_proto(proto))
    return found


class JournalStore(AbstractStore):
    """MLflow tracking store of one run, ``cd4ml-journal:///<folder>``: journaled locally, read locally,
    sent to the server by the runner's forwarder (:mod:`cd4ml_nb.forwarder`).

    Every write about *the* run is validated as MLflow's own store validates it (the same exception,
    nothing journaled when it is refused), then appended to ``journal.jsonl`` as one JSON line
    (``O_APPEND``, one ``write`` per call, no network); artifacts go to ``<folder>/artifacts`` and
    ``<folder>/models/<id>/artifacts``. Reads of the run are answered from the journal, so the notebook
    never waits for, nor fails because of, the server. The methods in :data:`FORWARDED` go to the server;
    any other method of MLflow's store raises an MlflowException naming it.
    """

    def __init__(self, store_uri: str) -> None:
        super().__init__()
        self.folder = folder_of(store_uri)
        manifest = read_json(self.folder / MANIFEST)
        if not manifest:
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
        self.model_inputs: list[str] = []
        self.outputs: list[tuple[str, int]] = []
        for _, _, rec in records(self.folder):
            self._apply(rec)
        self.fd: int | None = None
        _open_stores.add(self)

    def close(self) -> None:
        """Close the journal file (the next write reopens it)."""
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    @property
    def server(self):
        """MLflow's REST store of the tracking server, for calls about anything but the run."""
        if self._server is None:
            from mlflow.store.tracking.rest_store import RestStore
            from mlflow.utils.credentials import get_default_host_creds

            uri = self.manifest["server_uri"]
            self._server = RestStore(lambda: get_default_host_creds(uri))
        return self._server

    # journal writing -------------------------------------------------------------------------

    def _open(self) -> int:
        fd = os.open(self.folder / JOURNAL, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # end a line torn by a process that died mid-write
        return fd

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
        """Update the local view of the run with one journaled record."""
        t = r.get("t")
        if t == "m":
            key, new = r["k"], (r.get("st", 0), r["ts"], r["v"])
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
            self.model_inputs += r.get("models", [])
        elif t == "out":
            self.outputs += [tuple(o) for o in r.get("models", [])]

    def _ours(self, run_id: str) -> bool:
        return run_id == self.run_id

    # runs: metrics, parameters, tags ---------------------------------------------------------

    def _param_records(self, run_id: str, params: list, batch: bool) -> list[dict]:
        """Journal records of validated parameters; refuses a changed value as MLflow's store does."""
        changed = [{"key": p.key, "old_value": self.params[p.key], "new_value": p.value} for p in params
                   if self.params.get(p.key, p.value) != p.value]
        if changed and batch:
            raise MlflowException(f"Changing param values is not allowed. Params were already logged='{changed}' "
                                  f"for run ID='{run_id}'.", INVALID_PARAMETER_VALUE)
        if changed:
            raise _changed_param(run_id, changed[0]["key"], changed[0]["old_value"], changed[0]["new_value"])
        return [{"t": "p", "k": p.key, "v": p.value} for p in params]

    @staticmethod
    def _metric_record(m) -> dict:
        rec = {"t": "m", "k": m.key, "v": float(m.value), "ts": int(m.timestamp), "st": int(m.step or 0)}
        for field, attr in (("mid", "model_id"), ("dn", "dataset_name"), ("dd", "dataset_digest")):
            value = getattr(m, attr, None)
            if value:
                rec[field] = value
        return rec

    def log_batch(self, run_id, metrics, params, tags):
        """Journal a batch, validated as MLflow's store validates ``log_batch``."""
        if not self._ours(run_id):
            return self.server.log_batch(run_id, metrics, params, tags)
        metrics = list(metrics)
        params = [Param(p.key, str(p.value)) for p in params]
        tags = [RunTag(t.key, str(t.value)) for t in tags]
        checked = validation._validate_batch_log_data(metrics, params, tags)
        if checked:  # the values as MLflow keeps them (over-long ones truncated, when it truncates)
            metrics, params, tags = checked
        validation._validate_batch_log_limits(metrics, params, tags)
        validation._validate_param_keys_unique(params)
        recs = self._param_records(run_id, params, batch=True)
        recs += [self._metric_record(m) for m in metrics]
        recs += [{"t": "g", "k": t.key, "v": t.value} for t in tags]
        if recs:
            self._append(recs)

    def log_metric(self, run_id, metric):
        """Journal one metric point, validated as MLflow's store validates ``log_metric``."""
        if not self._ours(run_id):
            return self.server.log_metric(run_id, metric)
        validation._validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
        self._append([self._metric_record(metric)])

    def log_param(self, run_id, param):
        """Journal one parameter, validated as MLflow's store validates ``log_param``."""
        if not self._ours(run_id):
            return self.server.log_param(run_id, param)
        param = Param(param.key, str(param.value))
        param = validation._validate_param(param.key, param.value) or param
        self._append(self._param_records(run_id, [param], batch=False))

    def set_tag(self, run_id, tag):
        """Journal one tag, validated as MLflow's store validates ``set_tag``."""
        if not self._ours(run_id):
            return self.server.set_tag(run_id, tag)
        tag = RunTag(tag.key, str(tag.value))
        tag = validation._validate_tag(tag.key, tag.value) or tag
        self._append([{"t": "g", "k": tag.key, "v": tag.value}])

    def delete_tag(self, run_id, key):
        """Journal the deletion of a tag the run has, as the journal knows its tags (MLflow's store
        refuses one it has not)."""
        if not self._ours(run_id):
            return self.server.delete_tag(run_id, key)
        if key not in self.tags:
            raise MlflowException(f"No tag with name: {key} in run with id {run_id}", RESOURCE_DOES_NOT_EXIST)
        self._append([{"t": "dt", "k": key}])

    def log_batch_async(self, run_id, metrics, params, tags):
        """Journal now (a local append): the returned operation is already complete."""
        from mlflow.utils.async_logging.run_operations import RunOperations

        self.log_batch(run_id, metrics, params, tags)
        return RunOperations(None)

    def log_metric_async(self, run_id, metric):
        """Journal now, as :meth:`log_batch_async`."""
        return self.log_batch_async(run_id, [metric], [], [])

    def log_param_async(self, run_id, param):
        """Journal now, as :meth:`log_batch_async`."""
        return self.log_batch_async(run_id, [], [param], [])

    def set_tag_async(self, run_id, tag):
        """Journal now, as :meth:`log_batch_async`."""
        return self.log_batch_async(run_id, [], [], [tag])

    def flush_async_logging(self):
        """Nothing is queued: every call was journaled when made."""

    def end_async_logging(self):
        """Nothing is queued: every call was journaled when made."""

    def shut_down_async_logging(self):
        """Nothing is queued: every call was journaled when made."""

    # runs: reads and the rest ----------------------------------------------------------------

    def get_run(self, run_id):
        """The run as the journal has it (other runs from the server)."""
        if not self._ours(run_id):
            return self.server.get_run(run_id)
        m = self.manifest
        info = RunInfo(self.run_id, self.experiment_id, m.get("user_id") or "", self.status, m.get("start_time"),
                       self.end_time, "active", (self.folder / ARTIFACTS).as_uri(),
                       self.tags.get("mlflow.runName", m.get("run_name")))
        with self._lock:
            data = RunData(metrics=[Metric(k, v, ts, st) for k, (st, ts, v) in self.latest.items()],
                           params=[Param(k, v) for k, v in self.params.items()],
                           tags=[RunTag(k, v) for k, v in self.tags.items()])
            inputs = RunInputs(_datasets(self.datasets), [LoggedModelInput(i) for i in self.model_inputs])
            outputs = [LoggedModelOutput(mid, step) for mid, step in self.outputs]
        return Run(info, data, inputs, RunOutputs(outputs))

    def update_run_info(self, run_id, run_status, end_time, run_name):
        """The kernel's start/end only change the local view: the runner owns the server run's status."""
        if not self._ours(run_id):
            return self.server.update_run_info(run_id, run_status, end_time, run_name)
        self.status = RunStatus.to_string(run_status) if isinstance(run_status, int) else str(run_status)
        self.end_time = end_time
        if run_name and run_name != self.tags.get("mlflow.runName"):
            self._append([{"t": "g", "k": "mlflow.runName", "v": run_name}])
        return self.get_run(run_id).info

    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        """Every journaled point of ``metric_key`` (other runs from the server)."""
        if not self._ours(run_id):
            return self.server.get_metric_history(run_id, metric_key, max_results, page_token)
        return PagedList([Metric(r["k"], r["v"], r["ts"], r.get("st", 0), run_id=run_id)
                          for _, _, r in records(self.folder) if r.get("t") == "m" and r["k"] == metric_key], None)

    def log_inputs(self, run_id, datasets=None, models=None):
        """Journal datasets and model inputs, validated as MLflow's store validates ``log_inputs``."""
        if not self._ours(run_id):
            return self.server.log_inputs(run_id, datasets, models)
        if datasets is not None:
            if not isinstance(datasets, list):
                raise TypeError(f"Argument 'datasets' should be a list, got '{type(datasets)}'")
            validation._validate_dataset_inputs(datasets)
        ids = [m.model_id for m in models or []]
        again = [i for i in ids if i in self.model_inputs or ids.count(i) > 1]
        if again:  # the server's unique constraint on (run, model input)
            raise MlflowException(f"Model {again[0]} is already an input of run {run_id}", BAD_REQUEST)
        self._append([{"t": "in", "datasets": [message_to_json(d.to_proto()) for d in datasets or []],
                       "models": ids}])

    def log_outputs(self, run_id, models):
        """Journal model outputs (each model once per run, as the server's unique constraint wants)."""
        if not self._ours(run_id):
            return self.server.log_outputs(run_id, models)
        ids = [m.model_id for m in models]
        again = [i for i in ids if ids.count(i) > 1 or any(i == out for out, _ in self.outputs)]
        if again:
            raise MlflowException(f"Model {again[0]} is already an output of run {run_id}", BAD_REQUEST)
        self._append([{"t": "out", "models": [[m.model_id, int(m.step or 0)] for m in models]}])

    def record_logged_model(self, run_id, mlflow_model):
        """Journal a model for the run's ``mlflow.log-model.history`` tag."""
        if not self._ours(run_id):
            return self.server.record_logged_model(run_id, mlflow_model)
        self._append([{"t": "lm", "model": mlflow_model.get_tags_dict()}])

    def get_experiment(self, experiment_id):
        """The run's experiment from the manifest (others from the server)."""
        if str(experiment_id) != str(self.experiment_id) or not self.manifest.get("experiment_name"):
            return self.server.get_experiment(experiment_id)
        return Experiment(self.experiment_id, self.manifest["experiment_name"], None, "active")

    def delete_run(self, run_id):
        """Delete another run on the server; the journaled run's lifecycle is the runner's."""
        self._not_ours("delete_run", run_id)
        return self.server.delete_run(run_id)

    def restore_run(self, run_id):
        """Restore another run on the server; the journaled run's lifecycle is the runner's."""
        self._not_ours("restore_run", run_id)
        return self.server.restore_run(run_id)

    def _not_ours(self, method: str, entity: str) -> None:
        if entity == self.run_id or entity in self.models:
            raise MlflowException(f"{method} is not available for {entity} through cd4ml-nb's journal: the runner "
                                  "owns the journaled run and its models", INVALID_PARAMETER_VALUE)

    # logged models -----------------------------------------------------------------------------

    def _model(self, model_id: str) -> LoggedModel:
        r = self.models[model_id]
        location = (self.folder / "models" / model_id / "artifacts").as_uri()
        return LoggedModel(r["exp"], model_id, r["name"], location, r["ts"], r["ts"], r.get("type"), r.get("run"),
                           getattr(LoggedModelStatus, r["status"]), None, r["tags"], r["params"])

    def create_logged_model(self, experiment_id, name=None, source_run_id=None, tags=None, params=None,
                            model_type=None):
        """Journal a model of the run (a local id, mapped to the server's by the forwarder)."""
        if source_run_id != self.run_id:
            return self.server.create_logged_model(experiment_id, name, source_run_id, tags, params, model_type)
        from mlflow.utils.name_utils import _generate_random_name

        validation._validate_logged_model_name(name)
        model_id = f"m-{uuid.uuid4().hex}"
        (self.folder / "models" / model_id / "artifacts").mkdir(parents=True)
        self._append([{"t": "mc", "id": model_id, "exp": str(experiment_id), "name": name or _generate_random_name(),
                       "run": source_run_id, "type": model_type, "ts": int(time.time() * 1000),
                       "tags": {t.key: t.value for t in tags or []}, "params": {p.key: p.value for p in params or []}}])
        return self._model(model_id)

    def get_logged_model(self, model_id, *args, **kwargs):
        """A model of the run from the journal (others from the server)."""
        if model_id not in self.models:
            return self.server.get_logged_model(model_id, *args, **kwargs)
        return self._model(model_id)

    def finalize_logged_model(self, model_id, status):
        """Journal the final status of a model of the run."""
        if model_id not in self.models:
            return self.server.finalize_logged_model(model_id, status)
        name = status.name if isinstance(status, LoggedModelStatus) else LoggedModelStatus.from_int(status).name
        self._append([{"t": "mf", "id": model_id, "status": name}])
        return self._model(model_id)

    def set_logged_model_tags(self, model_id, tags):
        """Journal tags of a model of the run."""
        if model_id not in self.models:
            return self.server.set_logged_model_tags(model_id, tags)
        self._append([{"t": "mt", "id": model_id, "tags": {t.key: t.value for t in tags}}])

    def delete_logged_model_tag(self, model_id, key):
        """Journal the deletion of a tag a model of the run has (MLflow's store refuses one it has not)."""
        if model_id not in self.models:
            return self.server.delete_logged_model_tag(model_id, key)
        if key not in self.models[model_id]["tags"]:
            raise MlflowException(f"No tag with key {key!r} found for model with ID {model_id!r}.",
                                  RESOURCE_DOES_NOT_EXIST)
        self._append([{"t": "mdt", "id": model_id, "k": key}])

    def log_logged_model_params(self, model_id, params):
        """Journal parameters of a model of the run (each key once, as the server's unique constraint wants)."""
        if model_id not in self.models:
            return self.server.log_logged_model_params(model_id, params)
        keys = [p.key for p in params]
        again = [k for k in keys if k in self.models[model_id]["params"] or keys.count(k) > 1]
        if again:
            raise MlflowException(f"Param {again[0]!r} was already logged for model {model_id!r}", BAD_REQUEST)
        self._append([{"t": "mp", "id": model_id, "params": {p.key: p.value for p in params}}])

    def search_logged_models(self, experiment_ids, filter_string=None, datasets=None, max_results=None,
                             order_by=None, page_token=None):
        """The run's models from the journal when asked by source run (others from the server)."""
        if filter_string and self.run_id in filter_string and "source_run_id" in filter_string:
            return PagedList([self._model(i) for i, r in self.models.items() if r.get("run") == self.run_id], None)
        return self.server.search_logged_models(experiment_ids, filter_string, datasets, max_results, order_by,
                                                page_token)

    def delete_logged_model(self, model_id):
        """Delete another model on the server; the journaled run's models are the runner's."""
        self._not_ours("delete_logged_model", model_id)
        return self.server.delete_logged_model(model_id)


def _forwarding(name: str):
    def method(self, *args, **kwargs):
        return getattr(self.server, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{name}`` on the tracking server (it does not touch the journaled run)."
    return method


def _refusing(name: str):
    def method(self, *args, **kwargs):
        raise MlflowException(
            f"{name} is not available through cd4ml-nb's journal (team mode): it is neither journaled nor forwarded; "
            f"call it on MlflowClient(tracking_uri=<the tracking server>) instead", INVALID_PARAMETER_VALUE)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Refused: ``{name}`` is neither journaled nor forwarded."
    return method


for _name in FORWARDED:
    if _name not in vars(JournalStore):
        setattr(JournalStore, _name, _forwarding(_name))
# Whatever else MLflow's store offers (today's and any it adds later) raises, naming the method,
# rather than reaching the server behind the journal's back.
for _base in AbstractStore.__mro__[:-1]:
    for _name, _member in vars(_base).items():
        if not _name.startswith("_") and callable(_member) and _name not in vars(JournalStore):
            setattr(JournalStore, _name, _refusing(_name))
