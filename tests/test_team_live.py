"""Team mode against a real `mlflow server`: metrics are live while the notebook runs, nothing is
lost or duplicated when the server or the runner dies, and a run whose heartbeat stopped is marked
orphaned from any host without being resurrected by its runner."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import reliability_suite as suite
from cd4ml_nb.cli import main
from cd4ml_nb.forwarder import TEST_BATCH, TEST_CRASH_AFTER
from cd4ml_nb.tracking import HEARTBEAT, heartbeat_value

from nbfactory import free_port, mlflow_server, team_backend, wait_http, wait_until

ROOT = Path(__file__).resolve().parents[1]

# One point every `pause` seconds until the test creates `stop`; the count is written at the end.
LOOP = suite.percent(
    "import pathlib, time, mlflow\nn = 0\n"
    "while not pathlib.Path('stop').exists() and n < 400:\n"
    "    mlflow.log_metric('live', n, step=n)\n    n += 1\n    time.sleep(PAUSE)\n"
    "pathlib.Path('logged').write_text(str(n))")


def source_plugins(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """Kernels and subprocesses import this source tree and find the MLflow entry points its
    pyproject declares (what `pip install -e .` gives); returns the environment for subprocesses."""
    import tomllib

    info = tmp_path / "site" / "cd4ml_nb_source-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cd4ml-nb-source\nVersion: 0\n")
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) + "\n"
        for group, points in groups.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(info.parent)]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return dict(os.environ)


def notebook_repo(tmp_path: Path, pause: float, config: str = "") -> Path:
    repo = suite.make_repo(tmp_path)
    (repo / "live.py").write_text(LOOP.replace("PAUSE", repr(pause)))
    if config:
        (repo / "pyproject.toml").write_text(f"[tool.cd4ml_nb]\n{config}\n")
    suite.commit_all(repo)
    return repo


def start_run(repo: Path, uri: str, env: dict, html: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "live.py", "-q", "--json",
                             *([] if html else ["--no-html"]), "--tracking-uri", uri], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def the_run(uri: str):
    """The one run of experiment master on the server (None before it exists)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    found = c.get_experiment_by_name("master")
    runs = c.search_runs([found.experiment_id]) if found else []
    assert len(runs) <= 1, "the run was duplicated"
    return runs[0] if runs else None


def server_artifacts(uri: str, run_id: str, dest: Path) -> dict[str, bytes]:
    """Every artifact of the run as the server has it, downloaded through a repository built here for
    the run's artifact URI (never MLflow's per-process cache of repositories by run id)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import MlflowClient

    repo = get_artifact_repository(MlflowClient(uri).get_run(run_id).info.artifact_uri, tracking_uri=uri)
    dest.mkdir(parents=True, exist_ok=True)
    repo.download_artifacts("", str(dest))
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def assert_artifacts_on_server(uri: str, run_id: str, out_dir: Path, names: tuple[str, ...], dest: Path) -> None:
    """The run's files (executed notebook, HTML, source, environment) are on the server, byte for byte."""
    got = server_artifacts(uri, run_id, dest)
    for name in names:
        assert name in got, f"{name} is not on the server (it has {sorted(got)})"
        assert got[name] == (out_dir / name).read_bytes(), f"{name} differs on the server"


def points(uri: str, run_id: str, key: str = "live") -> list[int]:
    from mlflow.tracking import MlflowClient

    return [int(m.step) for m in MlflowClient(uri).get_metric_history(run_id, key)]


def report(fault: str, logged: int, steps: list[int], note: str = "") -> None:
    """With CD4ML_FAULT_REPORT=FILE, add a line of docs/reliability.md's team-mode table to FILE."""
    if os.environ.get("CD4ML_FAULT_REPORT"):
        with open(os.environ["CD4ML_FAULT_REPORT"], "a") as f:
            f.write(json.dumps({"fault": fault, "logged": logged, "on_server": len(set(steps)),
                                "duplicates": len(steps) - len(set(steps)), "note": note}) + "\n")


def kill_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=60)


def finish(run: subprocess.Popen, repo: Path) -> tuple[dict, int]:
    (repo / "stop").write_text("1")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    return json.loads(out), int((repo / "logged").read_text())


def test_points_are_on_the_server_while_the_notebook_runs(tmp_path, monkeypatch):
    env = source_plugins(tmp_path, monkeypatch)
    repo = notebook_repo(tmp_path, 0.5)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    run = start_run(repo, uri, env, html=True)
    try:
        def live() -> bool:
            r = the_run(uri)
            return r is not None and r.info.status == "RUNNING" and len(points(uri, r.info.run_id)) >= 10

        wait_until(live, 90, "10 points on the server while the run is RUNNING", proc=run, ignore=(OSError,))
        seen_live = len(points(uri, the_run(uri).info.run_id))
        result, logged = finish(run, repo)
        r = the_run(uri)
        report("none (1 point / 0.5 s)", logged, points(uri, r.info.run_id),
               f"{seen_live} on the server while RUNNING")
        assert r.info.status == "FINISHED" and result["spooled"] is None
        assert sorted(points(uri, r.info.run_id)) == list(range(logged))  # every point, once
        assert r.data.tags[HEARTBEAT] and r.data.tags["cd4ml.runner"]
        assert not list((repo / ".cd4ml" / "spool").iterdir())
        # on the server before the command returned (the journal, and its local copies, are gone)
        assert_artifacts_on_server(uri, r.info.run_id, Path(result["output_dir"]),
                                   ("live.ipynb", "live.html", "live.source.py", "environment.json"),
                                   tmp_path / "downloaded")
    finally:
        if run.poll() is None:
            run.kill()
        kill_server(server)


def test_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    env = source_plugins(tmp_path, monkeypatch)
    repo = notebook_repo(tmp_path, 0.1)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    run = start_run(repo, uri, env)
    try:
        first = wait_until(lambda: (r := the_run(uri)) and len(points(uri, r.info.run_id)) >= 3 and r,
                           90, "points on the server", proc=run, ignore=(OSError,))
        kill_server(server)
        journal = repo / ".cd4ml" / "spool" / first.info.run_id / "journal.jsonl"
        at_kill = len(journal.read_text().splitlines())
        wait_until(lambda: len(journal.read_text().splitlines()) >= at_kill + 10, 60,
                   "the notebook logging on while the server is down", proc=run)
        server = mlflow_server(repo, port)  # the same store, the same port
        wait_until(lambda: len(points(uri, first.info.run_id)) > at_kill + 10, 60, "the journal replayed live",
                   proc=run)
        result, logged = finish(run, repo)
        r = the_run(uri)
        assert r.info.status == "FINISHED" and result["spooled"] is None
        steps = points(uri, r.info.run_id)
        report("server SIGKILLed mid-run, restarted on the same store and port", logged, steps,
               f"{at_kill} journaled when killed; run FINISHED, nothing pending")
        assert len(steps) == logged and sorted(steps) == list(range(logged))
    finally:
        if run.poll() is None:
            run.kill()
        if server.poll() is None:
            kill_server(server)


@pytest.mark.skipif(team_backend() != "postgres", reason="the server's PostgreSQL is stopped: "
                    "CD4ML_NB_TEST_TEAM_BACKEND=postgres")
def test_postgres_stopped_for_8_s_mid_run_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    import pgcluster

    env = source_plugins(tmp_path, monkeypatch)
    repo = notebook_repo(tmp_path, 0.2)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    run = start_run(repo, uri, env)
    try:
        first = wait_until(lambda: (r := the_run(uri)) and len(points(uri, r.info.run_id)) >= 3 and r,
                           90, "points on the server", proc=run, ignore=(OSError,))
        journal = repo / ".cd4ml" / "spool" / first.info.run_id / "journal.jsonl"
        pgcluster.stop()
        try:
            at_stop = len(journal.read_text().splitlines())
            # 40 more points, one every 0.2 s: the database is down for at least 8 s of logging
            wait_until(lambda: len(journal.read_text().splitlines()) >= at_stop + 40, 120,
                       "the notebook logging on while PostgreSQL is down", proc=run)
        finally:
            pgcluster.start()
        wait_until(lambda: len(points(uri, first.info.run_id)) > at_stop + 40, 120, "the journal replayed live",
                   proc=run, ignore=(Exception,))
        result, logged = finish(run, repo)
        r = the_run(uri)
        assert r.info.status == "FINISHED" and result["spooled"] is None
        steps = points(uri, r.info.run_id)
        report("PostgreSQL behind the server stopped for 8 s mid-run, then started", logged, steps,
               f"{at_stop} journaled when stopped; run FINISHED, nothing pending")
        assert len(steps) == logged and sorted(steps) == list(range(logged))
    finally:
        if run.poll() is None:
            run.kill()
        kill_server(server)


def file_store_server(base: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on a file store: unlike a SQL backend it keeps a point sent twice twice,
    so a duplicate made by a replay shows."""
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             (base / "mlruns").as_uri(), "--artifacts-destination", str(base / "artifacts"),
                             "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=base, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    return proc


BURST = suite.percent(
    "import pathlib, time, mlflow\nmlflow.log_metric('before', 1.0)\n"
    "while not pathlib.Path('go').exists():\n    time.sleep(0.05)\n"
    "mlflow.log_metrics({'a': 1.0, 'b': 2.0}, step=0)\n"
    "for i in range(300):\n    mlflow.log_metric('burst', i, step=i)\nmlflow.log_param('size', 300)")


def test_runner_killed_mid_replay_then_a_second_sync_completes_without_duplicates(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    env = source_plugins(tmp_path, monkeypatch)
    repo = suite.make_repo(tmp_path)
    (repo / "burst.py").write_text(BURST)
    suite.commit_all(repo)
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = file_store_server(store, port)
    run = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "burst.py", "-q", "--no-html", "--json",
                            "--tracking-uri", uri], cwd=repo, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        r = wait_until(lambda: (r := the_run(uri)) and points(uri, r.info.run_id, "before") and r, 90,
                       "the run on the server", proc=run, ignore=(OSError,))
        kill_server(server)
        (repo / "go").write_text("1")
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        result = json.loads(out)
        assert result["spooled"]  # ended locally, journal pending
        listing = subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "runs", "--tracking-uri", uri], cwd=repo,
                                 env=env, capture_output=True, text=True, timeout=120)
        assert f"pending: run {r.info.run_id[:12]} (ended FINISHED)" in listing.stdout
        server = file_store_server(store, port)

        def sync(**hooks: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "runs", "sync", "--tracking-uri", uri],
                                  cwd=repo, env={**env, **hooks}, capture_output=True, text=True, timeout=300)

        killed = sync(**{TEST_BATCH: "50", TEST_CRASH_AFTER: "3"})  # dies after batch 3 is sent, unacknowledged
        assert killed.returncode == -signal.SIGKILL
        partial = points(uri, r.info.run_id, "burst")
        assert 0 < len(partial) < 300 and the_run(uri).info.status != "FINISHED"
        done = sync()
        assert done.returncode == 0, done.stdout + done.stderr
        c = MlflowClient(uri)
        got = c.get_run(r.info.run_id)
        assert got.info.status == "FINISHED" and got.data.params["size"] == "300"
        burst = points(uri, r.info.run_id, "burst")
        report("server down until the end; `runs sync` SIGKILLed after 3 batches of 50 (the 3rd sent, not "
               "acknowledged); second `runs sync`", 300, burst,
               f"{len(partial)} on the server after the kill; file-store server (keeps a point sent twice)")
        assert len(burst) == 300 and sorted(burst) == list(range(300))
        assert [len(points(uri, r.info.run_id, k)) for k in ("before", "a", "b")] == [1, 1, 1]
        assert_artifacts_on_server(uri, r.info.run_id, Path(result["output_dir"]),
                                   ("burst.ipynb", "burst.source.py", "environment.json"), tmp_path / "downloaded")
        assert sync().stdout.startswith("uploaded 0")
    finally:
        if run.poll() is None:
            run.kill()
        if server.poll() is None:
            kill_server(server)


def test_runs_sync_wait_returns_once_the_journal_is_on_the_server(tmp_path, monkeypatch):
    """Server down from mid-run on: `runs` lists the pending journal; `runs sync --wait` keeps trying
    while the server is down and exits 0 only when the run is complete on it, every point once."""
    from mlflow.tracking import MlflowClient

    env = source_plugins(tmp_path, monkeypatch)
    repo = suite.make_repo(tmp_path)
    (repo / "burst.py").write_text(BURST)
    suite.commit_all(repo)
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = file_store_server(store, port)
    cli = [sys.executable, "-m", "cd4ml_nb.cli"]
    run = subprocess.Popen(cli + ["run", "burst.py", "-q", "--no-html", "--json", "--tracking-uri", uri], cwd=repo,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiter = None
    try:
        r = wait_until(lambda: (r := the_run(uri)) and points(uri, r.info.run_id, "before") and r, 90,
                       "the run on the server", proc=run, ignore=(OSError,))
        kill_server(server)
        (repo / "go").write_text("1")
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        folder = Path(json.loads(out)["spooled"])
        assert folder.is_dir()
        listing = subprocess.run(cli + ["runs", "--tracking-uri", uri], cwd=repo, env=env, capture_output=True,
                                 text=True, timeout=120)
        assert f"pending: run {r.info.run_id[:12]} (ended FINISHED)" in listing.stdout
        errors = tmp_path / "waiter.err"
        with open(tmp_path / "waiter.out", "w") as out_file, open(errors, "w") as err_file:
            waiter = subprocess.Popen(cli + ["runs", "sync", "--wait", "--tracking-uri", uri], cwd=repo, env=env,
                                      stdout=out_file, stderr=err_file, text=True)
        # Two failed passes and still waiting: `--wait` does not give up while the server is down.
        wait_until(lambda: errors.read_text().count(uri) >= 2, 120, "`runs sync --wait` retrying", proc=waiter)
        assert waiter.poll() is None and folder.is_dir()
        server = file_store_server(store, port)
        assert waiter.wait(timeout=300) == 0, errors.read_text()
        assert (tmp_path / "waiter.out").read_text().strip().endswith("uploaded 1 journaled run(s); 0 still pending")
        got = MlflowClient(uri).get_run(r.info.run_id)
        assert got.info.status == "FINISHED" and got.data.params["size"] == "300"
        assert sorted(points(uri, r.info.run_id, "burst")) == list(range(300))  # every point, once
        assert [len(points(uri, r.info.run_id, k)) for k in ("before", "a", "b")] == [1, 1, 1]
        assert not folder.exists()
    finally:
        for proc in (run, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        if server.poll() is None:
            kill_server(server)


# The notebook sets p on the server itself, then logs another p through the journal: the server
# refuses the journal's p; the points after it must still arrive.
REFUSED = suite.percent(
    "import mlflow\nfrom mlflow.tracking import MlflowClient\nmlflow.log_metric('before', 1.0)\n"
    "MlflowClient(SERVER).log_param(mlflow.active_run().info.run_id, 'p', 'server')\n"
    "mlflow.log_param('p', 'kernel')\nfor i in range(5):\n    mlflow.log_metric('after', i, step=i)")


def test_a_record_the_server_refuses_is_kept_and_shown_and_the_run_still_ends(tmp_path, monkeypatch):
    env = source_plugins(tmp_path, monkeypatch)
    repo = suite.make_repo(tmp_path)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    (repo / "refused.py").write_text(REFUSED.replace("SERVER", repr(uri)))
    suite.commit_all(repo)
    server = mlflow_server(repo, port)
    cli = [sys.executable, "-m", "cd4ml_nb.cli"]
    try:
        done = subprocess.run(cli + ["run", "refused.py", "-q", "--no-html", "--json", "--tracking-uri", uri],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        r = the_run(uri)
        assert result["status"] == "FINISHED" and r.info.status == "FINISHED"
        assert r.data.tags["cd4ml.journal.refused"] == "1" and r.data.params["p"] == "server"
        assert points(uri, r.info.run_id, "after") == list(range(5))  # the records after it arrived
        listed = subprocess.run(cli + ["runs", "--json", "--tracking-uri", uri], cwd=repo, env=env,
                                capture_output=True, text=True, timeout=120)
        (shown,) = json.loads(listed.stdout)["pending"]
        assert shown["run_id"] == r.info.run_id and shown["uploaded"]
        (kept,) = shown["refused"]
        assert kept["record"] == {"t": "p", "k": "p", "v": "kernel"} and "INVALID_PARAMETER_VALUE" in kept["error"]
        synced = subprocess.run(cli + ["runs", "sync", "--tracking-uri", uri], cwd=repo, env=env,
                                capture_output=True, text=True, timeout=120)
        assert synced.returncode == 0 and "0 still pending" in synced.stdout, synced.stdout + synced.stderr
    finally:
        kill_server(server)


def test_stale_heartbeat_is_orphaned_from_any_host(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    source_plugins(tmp_path, monkeypatch)
    repo = suite.make_repo(tmp_path)
    monkeypatch.chdir(repo)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    try:
        c = MlflowClient(uri)
        experiment = c.create_experiment("master")
        now = time.time()
        runs = {name: c.create_run(experiment, tags=tags).info.run_id for name, tags in {
            "stale": {"cd4ml.runner": "other-host:1", HEARTBEAT: heartbeat_value(now - 1000)},
            "fresh": {"cd4ml.runner": "other-host:2", HEARTBEAT: heartbeat_value(now)},
            "no heartbeat": {"cd4ml.runner": "other-host:3"},
        }.items()}
        assert main(["runs", "--tracking-uri", uri]) == 0
        status = {name: c.get_run(run_id) for name, run_id in runs.items()}
        assert status["stale"].info.status == "FAILED"
        assert status["stale"].data.tags["cd4ml.status.reason"] == "orphaned"
        assert "heartbeat" in status["stale"].data.tags["cd4ml.status.message"]
        assert [status[n].info.status for n in ("fresh", "no heartbeat")] == ["RUNNING", "RUNNING"]
    finally:
        kill_server(server)


def test_runs_json_stays_json_when_it_marks_an_orphan(tmp_path, monkeypatch, capsys):
    """Marking an orphan on a tracking server prints nothing of MLflow's ("View run …") to stdout."""
    from mlflow.tracking import MlflowClient

    source_plugins(tmp_path, monkeypatch)
    repo = suite.make_repo(tmp_path)
    monkeypatch.chdir(repo)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    try:
        c = MlflowClient(uri)
        stale = c.create_run(c.create_experiment("master"), tags={
            "cd4ml.runner": "other-host:1", HEARTBEAT: heartbeat_value(time.time() - 1000)}).info.run_id
        capsys.readouterr()
        assert main(["runs", "--json", "--tracking-uri", uri]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(r["run_id"], r["status"], r["reason"]) for r in listed["runs"]] == [(stale, "FAILED", "orphaned")]
        assert c.get_run(stale).info.end_time  # ended with an end time, as MLflow's set_terminated does
    finally:
        kill_server(server)


@pytest.mark.timeout(400)
def test_runner_back_after_its_orphaning_neither_resurrects_nor_duplicates_the_run(tmp_path, monkeypatch):
    """The runner stops answering (SIGSTOP) long enough for another host to mark its run orphaned;
    when it resumes, the run never goes back to RUNNING, stays one run, gets every point once and
    ends with the notebook's true status."""
    from mlflow.tracking import MlflowClient

    env = source_plugins(tmp_path, monkeypatch)
    repo = notebook_repo(tmp_path, 0.2, "heartbeat_interval = 0.5\nheartbeat_timeout = 3.0")
    elsewhere = suite.make_repo(tmp_path, "elsewhere")  # another host's checkout: the journal is not there
    (elsewhere / "pyproject.toml").write_text("[tool.cd4ml_nb]\nheartbeat_timeout = 3.0\n")
    monkeypatch.chdir(elsewhere)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    run = start_run(repo, uri, env)
    c = MlflowClient(uri)
    try:
        r = wait_until(lambda: (r := the_run(uri)) and HEARTBEAT in r.data.tags and len(points(uri, r.info.run_id)) > 2
                       and r, 90, "a live run with a heartbeat", proc=run, ignore=(OSError,))
        os.kill(run.pid, signal.SIGSTOP)
        c.set_tag(r.info.run_id, "cd4ml.runner", "another-host:4242")  # its runner is on another machine
        wait_until(lambda: main(["runs", "--tracking-uri", uri]) == 0 and
                   c.get_run(r.info.run_id).info.status == "FAILED", 60, "the run marked orphaned")
        verdict = c.get_run(r.info.run_id)
        assert verdict.data.tags["cd4ml.status.reason"] == "orphaned"
        before = len(points(uri, r.info.run_id))
        os.kill(run.pid, signal.SIGCONT)

        def forwarding_again() -> bool:
            assert the_run(uri).info.status != "RUNNING", "the run was resurrected"
            return len(points(uri, r.info.run_id)) > before + 5

        wait_until(forwarding_again, 60, "the runner forwarding again", proc=run)
        result, logged = finish(run, repo)
        end = the_run(uri)
        assert end.info.run_id == r.info.run_id and result["status"] == "FINISHED"
        assert end.info.status == "FINISHED" and "cd4ml.status.reason" not in end.data.tags
        assert "heartbeat" in end.data.tags["cd4ml.orphan_verdict"]
        steps = points(uri, r.info.run_id)
        report("runner SIGSTOPped until another host marks it orphaned (heartbeat 0.5 s, timeout 3 s), then resumed",
               logged, steps, "one run; never RUNNING again; ends FINISHED with the verdict kept as a tag")
        assert len(steps) == logged and sorted(steps) == list(range(logged))
    finally:
        if run.poll() is None:
            os.kill(run.pid, signal.SIGCONT)
            run.kill()
        kill_server(server)


def test_runs_json_with_the_server_down_still_lists_pending_journals(tmp_path, monkeypatch, capsys):
    """`runs --json` answers JSON (pending journals, the error) and exit 1 when the server is down."""
    from nbfactory import init_repo

    repo = init_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    assert main(["runs", "--json", "--tracking-uri", f"http://127.0.0.1:{free_port()}"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["runs"] == [] and data["pending"] == [] and "not reachable" in data["error"]


TRIAL = suite.percent(
    "import mlflow\nfor i in range(POINTS):\n    mlflow.log_metric('loss', (x - 3) ** 2 + i, step=i)",
    parameters="x: int = 0")


class OldStyleReader(threading.Thread):
    """A reader of the spool that waits for each journal's lock *exclusively* (a blocking ``flock``: it
    gets it the instant its holder lets go) and then holds it a second, the way `cd4ml-nb runs` once
    checked a journal's liveness. A runner that let go of its journal between the notebook's end and
    the upload would find this reader holding it then."""

    def __init__(self, spool: Path) -> None:
        super().__init__(daemon=True)
        self.spool, self.halt, self.caught = spool, threading.Event(), 0
        self.waiting: dict[Path, threading.Thread] = {}

    def run(self) -> None:
        from cd4ml_nb import journal_folder

        while not self.halt.wait(0.05):
            for folder in list(self.spool.iterdir()) if self.spool.is_dir() else ():
                if folder not in self.waiting and (folder / journal_folder.MANIFEST).exists():
                    self.waiting[folder] = threading.Thread(target=self.hold, args=(folder,), daemon=True)
                    self.waiting[folder].start()

    def hold(self, folder: Path) -> None:
        import fcntl

        from cd4ml_nb import journal_folder

        try:
            fd = os.open(folder / journal_folder.LOCK, os.O_RDWR)
        except FileNotFoundError:  # uploaded and removed already
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if (folder / journal_folder.END).exists() and (folder / journal_folder.JOURNAL).exists():
                self.caught += 1  # the runner let go before its upload
            self.halt.wait(1.0)
        finally:
            os.close(fd)


def test_sweep_beside_runs_and_a_lock_holding_reader_ends_every_trial_finished_on_the_server(tmp_path, monkeypatch,
                                                                                            capsys):
    """8 trials against a live server while `cd4ml-nb runs` lists every 0.2 s and another reader grabs
    each ended journal's lock when it can: every trial FINISHED on the server and in the sweep's report,
    exactly its points, its artifacts there, no reason tag, nothing pending."""
    env = source_plugins(tmp_path, monkeypatch)
    repo = suite.make_repo(tmp_path)
    (repo / "trial.py").write_text(TRIAL.replace("POINTS", "30"))
    suite.commit_all(repo)
    monkeypatch.chdir(repo)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    sweep = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "sweep", "trial.py", "--grid",
                              "x=0,1,2,3,4,5,6,7", "--parallel", "4", "-q", "--json", "--tracking-uri", uri],
                             cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = OldStyleReader(repo / ".cd4ml" / "spool")
    reader.start()
    try:
        listings = 0
        while sweep.poll() is None:  # `cd4ml-nb runs` beside the sweep, every 0.2 s (a load, not a wait)
            assert main(["runs", "--tracking-uri", uri]) == 0
            listings += 1
            time.sleep(0.2)
        out, err = sweep.communicate(timeout=60)
        assert sweep.returncode == 0, err
        reported = json.loads(out)["trials"]
        assert listings > 5 and len(reported) == 8 and {t["status"] for t in reported} == {"FINISHED"}
        from mlflow.tracking import MlflowClient

        c = MlflowClient(uri)
        kids = [r for r in c.search_runs([c.get_experiment_by_name("master").experiment_id], max_results=100)
                if "mlflow.parentRunId" in r.data.tags]
        assert sorted(int(k.data.params["x"]) for k in kids) == list(range(8))
        for kid in kids:
            assert kid.info.status == "FINISHED" and "cd4ml.status.reason" not in kid.data.tags, kid.data.tags
            assert sorted(points(uri, kid.info.run_id, "loss")) == list(range(30))  # every point, once
            names = {a.path for a in c.list_artifacts(kid.info.run_id)}
            assert {"trial.ipynb", "trial.source.py", "environment.json"} <= names, names
        assert not list((repo / ".cd4ml" / "spool").iterdir())  # nothing pending
        logs = list((repo / ".cd4ml" / "runs").glob("*/kernel.log"))
        assert len(logs) == 8 and not [log for log in logs if "KeyboardInterrupt" in log.read_text()]
    finally:
        reader.halt.set()
        for waiting in reader.waiting.values():
            waiting.join(timeout=30)
        if sweep.poll() is None:
            sweep.kill()
        kill_server(server)
