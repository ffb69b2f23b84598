"""Team mode's journal against a real `mlflow server`: the kernel's store refuses what the server
would refuse, the forwarder quarantines what the server refuses anyway and goes on, retries what
failed for a while, and renames its state durably."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cd4ml_nb import forwarder, journal, journal_folder

from nbfactory import free_port, stop_group, wait_http

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """A real `mlflow server` on a SQLite store of its own; its URI."""
    base = tmp_path_factory.mktemp("server")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{base / 'mlflow.db'}", "--artifacts-destination", str(base / "artifacts"),
                             "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=base, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


class FaultyHop:
    """A real HTTP hop in front of the real server: while ``failing`` holds a path fragment, requests
    whose path contains it are answered ``status`` with ``body`` (and ``headers``) without reaching the
    server; all else passes."""

    def __init__(self, target: str, status: int = 503) -> None:
        self.target = target.split("//", 1)[1]
        self.status, self.failing, self.failed = status, None, 0
        self.body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "hop"}).encode()
        self.headers = {"Content-Type": "application/json"}
        hop = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hop.failing and hop.failing in self.path:
                    hop.failed += 1
                    self.send_response(hop.status)
                    for key, value in hop.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(hop.body)))
                    self.end_headers()
                    self.wfile.write(hop.body)
                    return
                conn = http.client.HTTPConnection(hop.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body or None, headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _relay

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def new_journal(tmp_path: Path, uri: str, server_uri: str | None = None):
    """A server run, and the journal of it (locked by the caller): (client, run id, folder, lock, store)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    experiment = c.create_experiment(f"e-{uuid.uuid4().hex[:8]}")
    run_id = c.create_run(experiment).info.run_id
    folder = tmp_path / "journal" / run_id
    local, held = journal_folder.create(folder, server_uri or uri, c.get_run(run_id))
    return c, run_id, folder, held, journal.store(local)


def end(folder: Path, status: str = "FINISHED") -> None:
    """What the runner records when the notebook ends."""
    journal_folder.write_json(folder / journal_folder.END, {"status": status, "tags": {}})


def test_invalid_records_are_refused_as_the_server_refuses_them_and_none_is_journaled(tmp_path, server):
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.credentials import get_default_host_creds

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    rest = RestStore(lambda: get_default_host_creds(server))
    experiment_id = c.get_run(run_id).info.experiment_id
    for s in (rest, store):
        s.log_param(run_id, Param("fixed", "1"))
    cases = {
        "metric key with a bad character": lambda s: s.log_batch(run_id, [Metric("a*b", 1.0, 1, 0)], [], []),
        "metric key that climbs out": lambda s: s.log_batch(run_id, [Metric("../m", 1.0, 1, 0)], [], []),
        "negative timestamp": lambda s: s.log_metric(run_id, Metric("m", 1.0, -1, 0)),
        "param key too long": lambda s: s.log_param(run_id, Param("k" * 251, "v")),
        "tag key with a bad character": lambda s: s.set_tag(run_id, RunTag("a*b", "v")),
        "duplicate param keys in one batch": lambda s: s.log_batch(run_id, [], [Param("d", "1"), Param("d", "1")],
                                                                   []),
        "too many params in one batch": lambda s: s.log_batch(run_id, [], [Param(f"p{i}", "1") for i in range(101)],
                                                              []),
        "a changed param": lambda s: s.log_param(run_id, Param("fixed", "2")),
        "a changed param in a batch": lambda s: s.log_batch(run_id, [], [Param("fixed", "3")], []),
        "dataset digest too long": lambda s: s.log_inputs(run_id, [DatasetInput(Dataset("d", "x" * 37, "local", "s"))]),
        "dataset input tag too long": lambda s: s.log_inputs(
            run_id, [DatasetInput(Dataset("d", "abc", "local", "s"), [InputTag("k", "v" * 501)])]),
        "logged model name with a slash": lambda s: s.create_logged_model(experiment_id, "a/b", run_id),
    }
    size = (folder / journal_folder.JOURNAL).stat().st_size
    for what, call in cases.items():
        errors = []
        for s in (rest, store):
            with pytest.raises(MlflowException) as raised:
                call(s)
            errors.append(raised.value)
        by_server, by_journal = errors
        assert (by_journal.error_code, f"{by_journal.error_code}: {by_journal.message}") == (
            by_server.error_code, by_server.message), what
    assert (folder / journal_folder.JOURNAL).stat().st_size == size  # nothing invalid was journaled
    os.close(held)


def test_a_record_the_server_refuses_is_quarantined_and_the_rest_still_arrives(tmp_path, server):
    """The server has parameter p otherwise (set there directly): the journal's p is refused, kept
    beside the journal, counted on the run, and every later record still arrives."""
    from mlflow.entities import Metric, Param, RunTag

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    c.log_param(run_id, "p", "server")
    store.log_batch(run_id, [Metric("before", 1.0, 1, 0)], [Param("p", "kernel"), Param("q", "1")],
                    [RunTag("t", "x")])
    store.log_batch(run_id, [Metric("after", float(i), 1, i) for i in range(5)], [], [])
    fw = forwarder.Forwarder(folder, held=held)
    assert fw.step()  # not blocked: the whole journal is acknowledged
    got = c.get_run(run_id)
    assert got.data.params == {"p": "server", "q": "1"} and got.data.tags["t"] == "x"
    assert [m.step for m in c.get_metric_history(run_id, "after")] == list(range(5))
    assert len(c.get_metric_history(run_id, "before")) == 1
    fw.release()
    end(folder)
    assert forwarder.complete(folder)
    got = c.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.tags["cd4ml.journal.refused"] == "1"
    (kept,) = journal_folder.refused(folder)  # not lost: kept beside the (removed) journal
    assert kept["record"] == {"t": "p", "k": "p", "v": "kernel"} and "INVALID_PARAMETER_VALUE" in kept["error"]
    assert not (folder / journal_folder.JOURNAL).exists()


def test_a_refused_model_does_not_block_the_journal(tmp_path, server):
    """A logged model the server refuses (its experiment was deleted there) is quarantined with what
    depends on it; the records after it still arrive and the run still ends."""
    from mlflow.entities import LoggedModelStatus, Metric

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    gone = c.create_experiment(f"gone-{uuid.uuid4().hex[:8]}")
    c.delete_experiment(gone)
    model = store.create_logged_model(gone, "model", run_id)
    store.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    store.log_metric(run_id, Metric("after", 1.0, 1, 0))
    fw = forwarder.Forwarder(folder, held=held)
    assert fw.step()
    assert len(c.get_metric_history(run_id, "after")) == 1
    fw.release()
    end(folder)
    assert forwarder.complete(folder)
    got = c.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.tags["cd4ml.journal.refused"] == "2"
    assert [r["record"]["t"] for r in journal_folder.refused(folder)] == ["mc", "mf"]


def test_a_tag_delete_that_fails_is_retried_not_acknowledged(tmp_path, server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's client would retry for minutes
    hop = FaultyHop(server)
    try:
        from mlflow.entities import RunTag

        c, run_id, folder, held, store = new_journal(tmp_path, server, server_uri=hop.uri)
        store.set_tag(run_id, RunTag("doomed", "1"))
        store.delete_tag(run_id, "doomed")
        fw = forwarder.Forwarder(folder, held=held)
        hop.failing = "runs/delete-tag"
        with pytest.raises(forwarder.ServerUnreachable):
            fw.step()
        assert hop.failed and "doomed" in c.get_run(run_id).data.tags
        assert not fw.caught_up()  # the delete is still to do
        hop.failing = None
        assert fw.step()
        assert "doomed" not in c.get_run(run_id).data.tags
        fw.release()
    finally:
        hop.close()


@pytest.mark.parametrize("status, body, headers", [
    (429, b'{"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}', {"Retry-After": "3"}),
    (503, b"<html>upstream down</html>", {}),
    (404, b"<html>not found</html>", {}),  # a proxy's answer, not MLflow's: not a refusal of the records
], ids=["429", "503", "404 not from MLflow"])
def test_transient_answers_are_retried_never_quarantined(tmp_path, server, status, body, headers):
    from mlflow.entities import Metric, Param

    hop = FaultyHop(server, status)
    hop.body, hop.headers = body, {"Content-Type": "text/html", **headers}
    try:
        c, run_id, folder, held, store = new_journal(tmp_path, server, server_uri=hop.uri)
        store.log_batch(run_id, [Metric("m", 1.0, 1, 0)], [Param("p", "1")], [])
        fw = forwarder.Forwarder(folder, held=held)
        hop.failing = "runs/log-batch"
        with pytest.raises(forwarder.ServerUnreachable) as raised:
            fw.step()
        assert raised.value.retry_after == (3.0 if status == 429 else None)
        assert not fw.caught_up() and not journal_folder.refused(folder)
        hop.failing = None
        assert fw.step()
        got = c.get_run(run_id)
        assert got.data.params == {"p": "1"} and got.data.metrics == {"m": 1.0}
        fw.release()
    finally:
        hop.close()


def test_state_files_are_renamed_durably(tmp_path, server, monkeypatch):
    """Every rename of a state file is followed by an fsync of its folder (else a power cut can undo it)."""
    events: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst, *args, **kw):
        real_replace(src, dst, *args, **kw)
        events.append(("replace", os.path.dirname(os.path.abspath(dst))))

    def fsync(fd):
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    from mlflow.entities import Metric

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    store.log_metric(run_id, Metric("m", 1.0, 1, 0))
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    fw = forwarder.Forwarder(folder, held=held)
    assert fw.step()
    end(folder)
    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    assert len(renames) >= 3  # in doubt, acknowledged, end
    for i in renames:
        assert ("fsync", events[i][1]) in events[i + 1:i + 2], f"no fsync of the folder after rename {i}: {events}"
    fw.release()


def test_every_store_method_is_journaled_forwarded_or_refused_by_name(tmp_path, server):
    """No method of MLflow's store reaches the server unless it is listed; others say which they are."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.abstract_store import AbstractStore

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    names = {n for n in dir(AbstractStore) if not n.startswith("_") and callable(getattr(AbstractStore, n))}
    journaled, forwarded = set(journal.JOURNALED), set(journal.FORWARDED)
    assert not journaled & forwarded and {"log_batch", "log_inputs", "delete_tag", "get_run"} <= journaled
    for name in sorted(names - journaled - forwarded):
        with pytest.raises(MlflowException, match=name):
            getattr(store, name)()
    with pytest.raises(MlflowException, match="delete_run"):
        store.delete_run(run_id)  # forwarded for other runs, never for the journaled one
    assert c.get_run(run_id).info.lifecycle_stage == "active"
    other = c.create_run(c.get_run(run_id).info.experiment_id).info.run_id
    store.delete_run(other)
    assert c.get_run(other).info.lifecycle_stage == "deleted"
    os.close(held)


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    backoff = forwarder.Backoff(first=0.5, cap=8.0, jitter=0.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.next(retry_after=30.0) == 8.0  # a server's Retry-After is honoured up to the cap
    backoff.reset()
    assert backoff.next() == 0.5
    jittered = forwarder.Backoff(first=1.0, cap=8.0)
    assert all(0.5 <= d <= 8.0 for d in (jittered.next() for _ in range(20)))


def test_a_reader_never_keeps_a_writer_from_completing_and_a_writer_is_reported(tmp_path, server):
    """Readers check a journal's liveness under a shared lock: a writer waits out their instant. When
    another writer (a runner, a sync) holds the journal, completing it says so and ends nothing."""
    import fcntl

    from mlflow.entities import Metric

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    store.log_metric(run_id, Metric("m", 1.0, 1, 0))
    end(folder)
    assert journal_folder.is_held(folder)  # the runner's lock
    told: list[str] = []
    assert not forwarder.complete(folder, on_error=told.append)
    assert "another process" in told[0] and c.get_run(run_id).info.status == "RUNNING"
    os.close(held)
    assert not journal_folder.is_held(folder)
    reader = os.open(folder / journal_folder.LOCK, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH)  # a reader in the middle of its check
    assert journal_folder.is_held(folder) is False  # readers do not exclude each other
    timer = threading.Timer(0.1, os.close, (reader,))
    timer.start()
    assert forwarder.complete(folder, on_error=told.append), told  # waited for the reader
    timer.join()
    got = c.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.metrics == {"m": 1.0} and not folder.exists()


def test_runs_sync_ends_a_run_another_path_ended_with_its_true_status_and_no_stale_reason(tmp_path, server):
    """A run ended FAILED (reason error) by another path while its journal was pending: the upload sets
    the recorded end and removes the other path's reason and message."""
    from mlflow.entities import Metric

    c, run_id, folder, held, store = new_journal(tmp_path, server)
    store.log_metric(run_id, Metric("m", 1.0, 1, 0))
    os.close(held)
    end(folder)
    c.set_tag(run_id, "cd4ml.status.reason", "error")
    c.set_tag(run_id, "cd4ml.status.message", "ended by another path")
    c.set_terminated(run_id, "FAILED")
    assert forwarder.complete(folder)
    got = c.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.metrics == {"m": 1.0}
    assert not {"cd4ml.status.reason", "cd4ml.status.message"} & set(got.data.tags)
