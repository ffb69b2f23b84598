"""Sweeps: local parallel trials, a dying kernel, Dask with a killed worker, tracking server checks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, end_processes, free_port, init_repo, mlflow_server, percent, wait_until, write_ipynb

NOTEBOOK = percent(  # with TRIAL_MARKERS set, a pausing trial drops a file there as its pause begins
    "import os, pathlib, time, mlflow\nif die:\n    os.kill(os.getpid(), 9)\n"
    "if pause and os.environ.get('TRIAL_MARKERS'):\n    pathlib.Path(os.environ['TRIAL_MARKERS'], str(x)).touch()\n"
    "time.sleep(pause)",
    "mlflow.log_metric('loss', (x - 3) ** 2 + y)",
    parameters="x: int = 0\ny: float = 0.0\ndie: bool = False\npause: float = 0.0",
)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "sweep", branch="change-max-depth")
    write_ipynb(repo / "trial.ipynb", NOTEBOOK)
    commit_all(repo)
    monkeypatch.chdir(repo)
    return repo


def runs(uri: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)


def children(all_runs):
    parents = [r for r in all_runs if r.data.tags.get("cd4ml.sweep") == "true"]
    assert len(parents) == 1
    kids = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


def store(repo: Path) -> str:
    return f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}"


def test_grid_in_parallel_into_a_fresh_store(repo, capsys):
    assert not (repo / ".cd4ml").exists()
    assert main(["sweep", "trial.ipynb", "--grid", "x=1,2", "--grid", "y=0.5,1.5", "--parallel", "2",
                 "--metric", "loss", "-q"]) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out and "x=2" in out.split("best:")[1] and "y=0.5" in out.split("best:")[1]
    parent, kids = children(runs(store(repo)))
    assert parent.info.status == "FINISHED" and len(kids) == 4
    seen = set()
    for kid in kids:
        assert kid.info.status == "FINISHED"
        x, y = int(kid.data.params["x"]), float(kid.data.params["y"])
        assert kid.data.metrics["loss"] == (x - 3) ** 2 + y
        assert kid.data.tags["mlflow.source.git.branch"] == "change-max-depth"
        seen.add(kid.data.tags["cd4ml.trial.key"])
    assert len(seen) == 4
    assert parent.data.metrics["best_loss"] == 1.5


def test_eight_trials_at_once_lose_nothing(repo, seed_store):
    seed_store(repo)  # a fresh store's creation: test_grid_in_parallel_into_a_fresh_store
    (repo / "sweep.yaml").write_text("grid:\n  x: [0, 1, 2, 3, 4, 5, 6, 7]\nmetric: loss\n")
    assert main(["sweep", "trial.ipynb", "-f", "sweep.yaml", "--parallel", "8", "-q"]) == 0
    parent, kids = children(runs(store(repo)))
    assert sorted(int(k.data.params["x"]) for k in kids) == list(range(8))
    assert all(k.info.status == "FINISHED" and "loss" in k.data.metrics for k in kids)


def test_a_dying_kernel_fails_its_trial_alone(repo, capsys, seed_store):
    seed_store(repo)  # a fresh store's creation: test_grid_in_parallel_into_a_fresh_store
    assert main(["sweep", "trial.ipynb", "--grid", "x=1,2,3", "--grid", "die=false,true", "-p", "y", "0",
                 "--parallel", "2", "-q"]) == 1
    out = capsys.readouterr().out
    parent, kids = children(runs(store(repo)))
    failed = [k for k in kids if k.info.status == "FAILED"]
    assert len(kids) == 6 and len(failed) == 3
    assert all(k.data.params["die"] == "true" for k in failed)
    assert all(k.data.tags["cd4ml.status.reason"] == "kernel-died" for k in failed)
    assert all(k.info.status == "FINISHED" for k in kids if k.data.params["die"] == "false")
    assert parent.info.status == "FAILED"
    assert out.count("FAILED: the kernel died") == 3


def test_invalid_trials_are_refused_before_anything_starts(repo, capsys):
    assert main(["sweep", "trial.ipynb", "--grid", "x=1,abc", "--grid", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "x='abc' does not fit int" in err and "unknown parameter 'nope'" in err
    assert not (repo / ".cd4ml").exists()


def test_random_samples_and_explicit_trials(repo, seed_store):
    seed_store(repo)  # a fresh store's creation: test_grid_in_parallel_into_a_fresh_store
    (repo / "sweep.yaml").write_text(
        "parameters: {y: 1.0}\ntrials: [{x: 9}]\nrandom: {n: 2, seed: 7, space: {x: {randint: [0, 5]}}}\n")
    assert main(["sweep", "trial.ipynb", "-f", "sweep.yaml", "-q"]) == 0
    _, kids = children(runs(store(repo)))
    xs = sorted(int(k.data.params["x"]) for k in kids)
    assert 9 in xs and len(kids) == len(set(xs)) and all(k.data.params["y"] == "1.0" for k in kids)


def test_ctrl_c_leaves_no_running_run(repo, tmp_path, seed_store):
    seed_store(repo)  # a fresh store's creation: test_grid_in_parallel_into_a_fresh_store
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "sweep", "trial.ipynb", "--grid", "x=1,2,3,4",
                             "-p", "pause", "60", "--parallel", "2", "-q"], cwd=repo, start_new_session=True,
                            env={**os.environ, "TRIAL_MARKERS": str(markers)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Not polling the store: a client of our own opening it while the sweep creates it races the creation.
    wait_until(lambda: len(list(markers.iterdir())) >= 2, 240, "two trials pausing in their kernels", proc=proc)
    started = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        end_processes(started)  # kernels the sweep should have ended already
    assert proc.returncode == 130, (out, err)
    all_runs = runs(store(repo))
    assert all_runs and not [r for r in all_runs if r.info.status == "RUNNING"]
    parent, kids = children(all_runs)
    assert parent.info.status == "KILLED" and {k.info.status for k in kids} == {"KILLED"}


def test_unreachable_tracking_server_is_a_clear_error_in_bounded_time(repo, capsys):
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    (repo / "pyproject.toml").write_text("[tool.cd4ml_nb]\nhealth_timeout = 3\n")
    try:  # how long it takes is measured by bench/reliability.py (tracking area), not judged here
        assert main(["run", "trial.ipynb", "--tracking-uri", f"http://127.0.0.1:{port}", "-q"]) == 1
        assert f"MLflow tracking server http://127.0.0.1:{port} is not reachable" in capsys.readouterr().err
        assert main(["sweep", "trial.ipynb", "--grid", "x=1,2", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 1
        assert "is not reachable" in capsys.readouterr().err
    finally:
        silent.close()
    assert main(["run", "trial.ipynb", "--tracking-uri", f"http://127.0.0.1:{port}", "-q"]) == 1  # refused
    assert not (repo / ".cd4ml" / "runs").exists() or not any((repo / ".cd4ml" / "runs").iterdir())


def test_sqlite_with_a_remote_scheduler_is_refused(repo, capsys):
    assert main(["sweep", "trial.ipynb", "--grid", "x=1,2", "--dask", "tcp://10.255.255.1:8786"]) == 2
    assert "cannot be shared with Dask workers on 10.255.255.1" in capsys.readouterr().err
    assert not (repo / ".cd4ml" / "mlflow.db").exists()


# --- Dask and a real mlflow server -------------------------------------------------------------


@pytest.fixture
def cluster(repo, tmp_path):
    """A real `mlflow server` (through `cd4ml-nb server`), a Dask scheduler and two worker processes."""
    procs = []

    def start(*cmd, **kw):
        proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, **kw)
        procs.append(proc)
        return proc

    mlflow_port, sched_port = free_port(), free_port()
    procs.append(mlflow_server(repo, mlflow_port))
    start(sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(sched_port),
          "--no-dashboard")
    address = f"tcp://127.0.0.1:{sched_port}"
    workers = [start(sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                     "--nworkers", "1", "--no-dashboard", "--name", f"w{i}") for i in range(2)]
    uri = f"http://127.0.0.1:{mlflow_port}"
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    yield uri, address, workers
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_dask_sweep_survives_a_killed_worker(repo, cluster, capsys):
    uri, address, workers = cluster
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "sweep", "trial.ipynb", "--grid", "x=1,2,3,4",
                             "-p", "pause", "4", "--dask", address, "--tracking-uri", uri, "--metric", "loss", "-q"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # a trial adopted its run on a worker (the server's store exists already): kill one worker mid-trial
    wait_until(lambda: [r for r in runs(uri) if r.data.params.get("x")], 240, "a trial adopting its run", interval=0.5,
               proc=proc, ignore=(Exception,))
    os.killpg(workers[0].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    parent, kids = children(runs(uri))
    assert parent.info.status == "FINISHED"
    keys = [k.data.tags["cd4ml.trial.key"] for k in kids]
    assert len(keys) == 4 and len(set(keys)) == 4  # exactly one run per trial key
    assert all(k.info.status == "FINISHED" and k.data.metrics["loss"] == (int(k.data.params["x"]) - 3) ** 2
               for k in kids)
