"""Team mode's sending side: forwards a run's journal to its tracking server, exactly once."""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import tracking, uploads
from .answers import Backoff, Refused, ServerUnreachable, meaning
from .journal_folder import (ARTIFACTS, END, JOURNAL, MANIFEST, STATE, is_held, lock_writer, quarantine, read_json,
                             records, refused, settle, write_json)

# MLflow's log_batch limits (mlflow.utils.validation), and journal bytes per batch well under the
# server's 1 MB request limit.
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS, BATCH_TOTAL, BATCH_BYTES = 1000, 100, 100, 1000, 500_000
REFUSED_TAG = "cd4ml.journal.refused"  # on a run whose server refused some of its records: how many
MODEL_TAG = "cd4ml.journal.model_id"  # on a server model: the journal's id of it (found again on a replay)
TEST_CRASH_AFTER = "CD4ML_JOURNAL_TEST_CRASH_AFTER"  # test hook: SIGKILL itself after N sent batches, unacked
TEST_BATCH = "CD4ML_JOURNAL_TEST_BATCH"  # test hook: records per batch
Item = tuple[int, int, dict]  # (offset, next offset, record) of the journal
# Tags that say why a run ended: another path's are cleared when the recorded end is set.
ENDING_TAGS = (tracking.REASON, "cd4ml.status.message", tracking.FAILED_CELL, tracking.FAILED_ENAME,
               tracking.FAILED_EVALUE)


def _finite(value: float) -> float | str:
    """A metric value as MLflow's JSON API takes it (NaN and infinities as strings)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


class Forwarder:
    """Sends one journal to its server run: the new records, the artifacts, at last the status.

    It tails the journal, ``fsync``\\ s it, and sends what is new with ``log_batch`` (MLflow's limits),
    then records the byte offset the server acknowledged in ``state.json``. A batch whose answer never
    came (server or forwarder killed mid-request) is *in doubt*: before it is sent again, the points,
    parameters, models, inputs and outputs the server already has are dropped, so a replay never
    duplicates anything. A record the server refuses for good is quarantined in ``refused.jsonl`` and
    the journal goes on; the run's end then counts them in ``cd4ml.journal.refused``. One forwarder per
    journal at a time (an ``flock`` on ``<folder>/lock``, released by the kernel when a process dies).
    """

    def __init__(self, folder: Path, heartbeat: float | None = None, timeout: float = 10.0,
                 held: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = read_json(self.folder / MANIFEST)
        self.server_uri, self.run_id = self.manifest["server_uri"], self.manifest["run_id"]
        self.state = read_json(self.folder / STATE, {}) or {}
        self.state.setdefault("offset", 0)
        self.state.setdefault("models", {})  # journal model id -> server model id (None: refused)
        self.state.setdefault("artifacts", {})
        self.heartbeat, self.timeout = heartbeat, timeout
        self._last_beat = 0.0
        self.orphaned = False  # the server run was ended by someone else (an orphan verdict) while we ran
        self._seen: dict[str, tuple] = {}  # artifact -> (size, mtime) at the previous scan
        self._lock_fd: int | None = held
        self._sent = 0
        self._client = None
        self._artifacts_repo = None  # the server run's own artifact repository (uploads.repository)
        self._batch = int(os.environ.get(TEST_BATCH) or BATCH_TOTAL)
        self._crash_after = int(os.environ.get(TEST_CRASH_AFTER) or 0)

    # locking ---------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Become the journal's one forwarder (waiting for readers' instants); False when another
        process is."""
        if self._lock_fd is None:
            self._lock_fd = lock_writer(self.folder)
        return self._lock_fd is not None

    def hand_over(self) -> int | None:
        """Give the held lock to the caller (who closes it): the journal is never unlocked in between."""
        fd, self._lock_fd = self._lock_fd, None
        return fd

    def release(self) -> None:
        """Stop being the journal's forwarder."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_live(self) -> bool:
        """Whether a forwarder (this one, a runner's, a sync) holds the journal now."""
        return self._lock_fd is not None or is_held(self.folder)

    # transport -------------------------------------------------------------------------------

    def _call(self, endpoint: str, body: dict | None = None, method: str = "POST") -> dict:
        """One request, no retries (MLflow's client would spend minutes on a dead server)."""
        from mlflow.exceptions import MlflowException
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
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if status == 200:
            return payload
        code = payload.get("error_code") if isinstance(payload, dict) else None
        if status >= 500 or status in (401, 403, 408, 429) or not code:  # not MLflow's answer about the request
            after = response.headers.get("Retry-After", "")
            raise ServerUnreachable(f"HTTP {status}", float(after) if after.isdigit() else None)
        lines = str(payload.get("message") or "refused").splitlines() or ["refused"]
        raise Refused(f"{code}: {lines[0]}", str(code))

    @contextmanager
    def _answered(self) -> Iterator[None]:
        """Calls through MLflow's client or an artifact repository: their errors as Refused or
        ServerUnreachable."""
        from mlflow.exceptions import MlflowException
        from requests import RequestException

        try:
            yield
        except (MlflowException, RequestException) as e:
            raise meaning(e) from None

    @property
    def client(self):
        """MLflow's client of the server (for models and artifacts)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.server_uri, registry_uri=self.server_uri)
        return self._client

    def server_run(self) -> dict:
        """The run as the server has it (JSON)."""
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
        """Whether the server has the whole journal (and, if ``final``, every artifact)."""
        return (self.state["offset"] >= os.path.getsize(self.folder / JOURNAL)
                and (not final or not self._artifacts_pending()))

    def backlog(self) -> tuple[int, int]:
        """Journal bytes and artifacts not yet on the server."""
        return (max(0, os.path.getsize(self.folder / JOURNAL) - self.state["offset"]),
                self._artifacts_pending())

    def _beat(self) -> None:
        if self.heartbeat is None or self.orphaned or time.monotonic() - self._last_beat < self.heartbeat:
            return
        run = self.server_run()
        if run["info"]["status"] != "RUNNING":
            self.orphaned = True  # declared dead meanwhile: never set it RUNNING again
            return
        self._call("/api/2.0/mlflow/runs/set-tag", {"run_id": self.run_id, "key": tracking.HEARTBEAT,
                                                     "value": tracking.heartbeat_value()})
        self._last_beat = time.monotonic()

    def _save(self) -> None:
        write_json(self.folder / STATE, self.state)

    def _send_records(self) -> None:
        group: list[Item] = []
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

    def _full(self, group: list[Item]) -> bool:
        counts = {"m": 0, "p": 0, "g": 0}
        for _, _, r in group:
            counts[r["t"]] += 1
        return (len(group) >= min(self._batch, BATCH_TOTAL) or counts["m"] >= BATCH_METRICS
                or counts["p"] >= BATCH_PARAMS or counts["g"] >= BATCH_TAGS
                or group[-1][1] - group[0][0] >= BATCH_BYTES)

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

    def _server_model(self, local: str) -> str | None:
        """The server's id of a journal model (None when the server refused it); other ids as they are."""
        return self.state["models"].get(local, local)

    def _send_group(self, group: list[Item]) -> None:
        start, end = group[0][0], group[-1][1]
        if self._in_doubt(start):
            group = self._dedupe(group)
        self._begin(start, end)
        self._log_batch(group)
        self._ack(end)

    def _log_batch(self, items: list[Item]) -> None:
        """Send metrics, parameters and tags in one ``log_batch``; when the server refuses it, find the
        records it refuses by halves (dropping what it already took) and quarantine them."""
        metrics = []
        for _, _, r in items:
            if r["t"] != "m":
                continue
            m = {"key": r["k"], "value": _finite(r["v"]), "timestamp": r["ts"], "step": r.get("st", 0)}
            model = self._server_model(r["mid"]) if r.get("mid") else None
            if model:
                m["model_id"] = model
            if r.get("dn"):
                m.update(dataset_name=r["dn"], dataset_digest=r.get("dd"))
            metrics.append(m)
        body = {"run_id": self.run_id, "metrics": metrics,
                "params": [{"key": r["k"], "value": r["v"]} for _, _, r in items if r["t"] == "p"],
                "tags": [{"key": r["k"], "value": r["v"]} for _, _, r in items if r["t"] == "g"]}
        if not (metrics or body["params"] or body["tags"]):
            return
        try:
            self._call("/api/2.0/mlflow/runs/log-batch", body)
        except Refused as e:
            if len(items) == 1:
                quarantine(self.folder, items[0][0], items[0][2], str(e))
                return
            items = self._dedupe(items)  # a store may have taken part of it before refusing
            half = (len(items) + 1) // 2
            for part in (items[:half], items[half:]):
                if part:
                    self._log_batch(part)

    def _dedupe(self, items: list[Item]) -> list[Item]:
        """Drop the metric points and parameters the server already has (a batch whose answer was lost)."""
        run = self.server_run()
        params = {p["key"]: p["value"] for p in run.get("data", {}).get("params", [])}
        have: dict[str, set] = {}
        for key in {r["k"] for _, _, r in items if r["t"] == "m"}:
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
        for item in items:
            r = item[2]
            if r["t"] == "m" and (r["ts"], r.get("st", 0), _finite(r["v"])) in have[r["k"]]:
                continue
            if r["t"] == "p" and params.get(r["k"]) == r["v"]:
                continue
            kept.append(item)
        return kept

    def _send_other(self, offset: int, end: int, r: dict) -> None:
        """Deleted tags, models, inputs, outputs: rare, sent one record at a time; one the server refuses
        is quarantined."""
        self.server_run()  # fail fast while the server is down (MLflow's client retries for minutes)
        doubt = self._in_doubt(offset)
        self._begin(offset, end)
        try:
            self._apply(r, doubt)
        except Refused as e:
            if r.get("t") == "mc":
                self.state["models"][r["id"]] = None  # what refers to it is refused too
            quarantine(self.folder, offset, r, str(e))
        self._ack(end)

    def _apply(self, r: dict, doubt: bool) -> None:
        t = r.get("t")
        if t == "dt":
            self._delete("/api/2.0/mlflow/runs/delete-tag", {"run_id": self.run_id, "key": r["k"]})
        elif t == "mc":
            self.state["models"][r["id"]] = self._create_model(r)
            self._save()
        elif t in ("mf", "mt", "mdt", "mp"):
            self._apply_model(r, doubt)
        elif t == "in":
            self._log_inputs(r, doubt)
        elif t == "out":
            from mlflow.entities import LoggedModelOutput

            have = {o["model_id"] for o in self.server_run().get("outputs", {}).get("model_outputs", [])} if doubt \
                else set()
            outs = [LoggedModelOutput(m, step) for m, step in ((self._server_model(i), s) for i, s in r["models"])
                    if m and m not in have]
            if outs:
                with self._answered():
                    self.client.log_outputs(self.run_id, outs)
        elif t == "lm":
            self._record_model(r["model"])

    def _delete(self, endpoint: str, body: dict) -> None:
        """A delete, retried like any write; one of something already gone is done."""
        try:
            self._call(endpoint, body)
        except Refused as e:
            if e.code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _apply_model(self, r: dict, doubt: bool) -> None:
        """A journal record about a journal model, on the server's model."""
        from mlflow.entities import LoggedModelStatus

        mid, t = self.state["models"].get(r["id"]), r["t"]
        if mid is None:
            raise Refused(f"its model {r['id']} was refused by the server")
        if t == "mdt":
            try:
                with self._answered():
                    self.client.delete_logged_model_tag(mid, r["k"])
            except Refused as e:
                if e.code != "RESOURCE_DOES_NOT_EXIST":  # already gone: done
                    raise
            return
        with self._answered():
            if t == "mf":
                local = self.folder / "models" / r["id"] / "artifacts"
                if r["status"] == "READY" and local.is_dir() and any(local.iterdir()):
                    self._upload_model(mid, local)
                self.client.finalize_logged_model(mid, getattr(LoggedModelStatus, r["status"]))
            elif t == "mt":
                self.client.set_logged_model_tags(mid, r["tags"])
            else:
                params = r["params"]
                if doubt:  # each key once on a model: drop those a lost answer already set
                    have = self.client.get_logged_model(mid).params
                    params = {k: v for k, v in params.items() if have.get(k) != v}
                if params:
                    self.client.log_model_params(mid, params)

    def _upload_model(self, mid: str, local: Path) -> None:
        """A model's files, into the server model's own artifact store, verified there."""
        repo = uploads.repository(self.client.get_logged_model(mid).artifact_location, self.server_uri)
        missing = uploads.upload_tree(repo, local)
        if missing:
            raise ServerUnreachable(f"model {mid}: {len(missing)} file(s) not on the server whole after the upload "
                                    f"({', '.join(missing[:3])})")

    def _log_inputs(self, r: dict, doubt: bool) -> None:
        from mlflow.entities import DatasetInput, LoggedModelInput
        from mlflow.protos.service_pb2 import DatasetInput as DatasetInputProto
        from mlflow.utils.proto_json_utils import parse_dict

        datasets = []
        for text in r.get("datasets", []):
            proto = DatasetInputProto()
            parse_dict(json.loads(text), proto)
            datasets.append(DatasetInput.from_proto(proto))
        have = {i["model_id"] for i in self.server_run().get("inputs", {}).get("model_inputs", [])} if doubt \
            else set()
        models = [LoggedModelInput(m) for m in map(self._server_model, r.get("models", [])) if m and m not in have]
        if datasets or models:
            with self._answered():
                self.client.log_inputs(self.run_id, datasets or None, models or None)

    def _create_model(self, r: dict) -> str:
        """The server model of journal model ``r["id"]``: found (a replay after a crash) or created."""
        with self._answered():
            for model in self.client.search_logged_models([r["exp"]],
                                                          filter_string=f"source_run_id = '{self.run_id}'"):
                if model.tags.get(MODEL_TAG) == r["id"]:
                    return model.model_id
            created = self.client.create_logged_model(r["exp"], name=r["name"], source_run_id=self.run_id,
                                                      tags={**r.get("tags", {}), MODEL_TAG: r["id"]},
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
        root = self.folder / ARTIFACTS
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
        run = self.server_run()
        root = self.folder / ARTIFACTS
        sent: dict[str, int] = {}
        with self._answered():
            if self._artifacts_repo is None:
                self._artifacts_repo = uploads.repository(run["info"]["artifact_uri"], self.server_uri)
        for rel in sorted(todo):
            try:
                with self._answered():
                    uploads.upload_file(self._artifacts_repo, root / rel, rel)
                sent[rel] = files[rel][0]
            except Refused as e:
                quarantine(self.folder, f"artifact:{rel}", {"t": "artifact", "path": rel}, str(e))
                done[rel] = list(files[rel])
                self._save()
        with self._answered():
            whole = uploads.arrived(self._artifacts_repo, sent) if sent else set()
        for rel in whole:
            done[rel] = list(files[rel])
        self._save()
        if len(whole) < len(sent):
            missing = sorted(set(sent) - whole)
            raise ServerUnreachable(f"{len(missing)} artifact(s) not on the server whole after the upload "
                                    f"({', '.join(missing[:3])}): sent again on the next pass")

    # ending ----------------------------------------------------------------------------------

    def end(self) -> None:
        """Set the status the runner recorded in ``end.json`` (or FAILED/orphaned when it died mid-run),
        with ``cd4ml.journal.refused`` when the server refused records.

        A run that someone else ended while its runner was unreachable (an orphan verdict) takes the
        true terminal status; nothing ever sets it RUNNING again."""
        ended = read_json(self.folder / END)
        run = self.server_run()
        status = run["info"]["status"]
        tags = {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}
        count = len(refused(self.folder))
        counted = {REFUSED_TAG: str(count)} if count else {}
        if ended is None:  # the runner died before the notebook ended
            if status == "RUNNING":
                self._end_run("FAILED", {tracking.REASON: "orphaned", "cd4ml.status.message":
                                         "the runner died; `cd4ml-nb runs sync` uploaded its journal", **counted})
            else:
                self._end_run(None, counted)
            return
        if status != "RUNNING":  # ended meanwhile by another path: the recorded end is the true one
            if tags.get(tracking.REASON) == "orphaned":
                self._end_run(None, {"cd4ml.orphan_verdict": tags.get("cd4ml.status.message", "orphaned")})
            for key in ENDING_TAGS:  # the other path's reason, unless the true end has one
                if key in tags and key not in ended["tags"]:
                    self._delete("/api/2.0/mlflow/runs/delete-tag", {"run_id": self.run_id, "key": key})
        self._end_run(ended["status"], {**ended["tags"], **counted})

    def _end_run(self, status: str | None, tags: dict[str, str]) -> None:
        """Tags, then the terminal status (as ``tracking.end_run``, without MLflow's stdout banner)."""
        for key, value in tags.items():
            self._call("/api/2.0/mlflow/runs/set-tag", {"run_id": self.run_id, "key": key,
                                                         "value": tracking.clip(value)})
        if status:
            self._call("/api/2.0/mlflow/runs/update", {"run_id": self.run_id, "status": status,
                                                        "end_time": int(time.time() * 1000)})


def complete(folder: Path, timeout: float = 10.0, on_error: Callable[[str], None] | None = None,
             held: int | None = None, patience: float = 0.0) -> bool:
    """Upload a journal, end its run and remove it (keeping what the server refused); False when it
    stays pending: a live runner or sync holds it, or the server did not take it within ``patience``
    seconds (retried with back-off meanwhile, unless nothing listens at its address). Every reason it
    stays pending is told to ``on_error``. ``held``: the journal's lock, already held by the caller
    (a runner, from its live forwarder on): it is closed here."""
    if held is None:
        held = lock_writer(folder)
        if held is None:
            if on_error and (folder / JOURNAL).exists():
                on_error(f"{folder}: another process (a runner or a sync) is uploading this journal now")
            return not (folder / JOURNAL).exists()  # uploaded meanwhile by that process: done
        if not (folder / JOURNAL).exists():  # uploaded and settled meanwhile (only refused records left)
            os.close(held)
            return True
    fw = Forwarder(folder, timeout=timeout, held=held)
    deadline, backoff = time.monotonic() + patience, Backoff(cap=5.0)
    try:
        while True:
            try:
                _upload_and_end(fw)
                break
            except ServerUnreachable as e:
                delay = backoff.next(e.retry_after)
                if e.down or time.monotonic() + delay > deadline:
                    if on_error:
                        on_error(f"{fw.server_uri}: {e}")
                    return False
                time.sleep(delay)
            except Refused as e:
                if on_error:
                    on_error(f"{fw.server_uri}: {e}")
                return False
        settle(folder)  # before the lock goes: no sync ever finds a journal whose run has ended
    finally:
        fw.release()
    return True


def _upload_and_end(fw: Forwarder) -> None:
    for _ in range(3):  # a kernel that outlived its runner may still be appending
        if fw.step(final=True):
            break
    else:
        raise ServerUnreachable("the journal grew or its artifacts changed during 3 passes: still pending")
    fw.end()
