"""Every run this project creates ends, and records what ran: killed runners, killed kernels under
track() and nbval, sweep trials whose machinery raised, Lab jobs with unwritable values, job
processes that die, defaults, and more than 100 parameters (locally and through a tracking server)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cd4ml_nb.cli import main
from cd4ml_nb.exceptions import ParameterError
from cd4ml_nb.project import Project

from nbfactory import commit_all, free_port, init_repo, mlflow_server, percent, wait_until, write_ipynb

# Drops its kernel's pid in MARKER once it runs, then waits (bounded) for the test to act.
WAITS = percent(
    "import os, pathlib, time\npathlib.Path(os.environ['MARKER']).write_text(str(os.getpid()))\n"
    "deadline = time.monotonic() + 300\nwhile time.monotonic() < deadline and not pathlib.Path("
    "os.environ['MARKER'] + '.go').exists():\n    time.sleep(0.05)",
    parameters='name: str = "x"',
)
DEFAULTS = percent("import mlflow\nmlflow.log_metric('depth', max_depth)",
                   parameters='model: str = "decision_tree"\nmax_depth: int = 8\nlabel = None')
MANY = percent(
    "import mlflow\nmlflow.log_params({f'p{i:03d}': i for i in range(150)})\n"
    "mlflow.set_tags({f't{i:03d}': i for i in range(150)})\n"
    "for step in range(2500):\n    mlflow.log_metric('curve', step * 0.5, step=step)")
TRACKED = percent("import cd4ml_nb, mlflow\nrun = cd4ml_nb.track()\nmlflow.log_metric('seen', 1)")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo", branch="master")
    for name, text in (("waits", WAITS), ("defaults", DEFAULTS), ("many", MANY), ("tracked", TRACKED)):
        write_ipynb(repo / f"{name}.ipynb", text)
    commit_all(repo)
    monkeypatch.chdir(repo)
    return repo


def client(repo: Path):
    from cd4ml_nb import tracking

    return tracking.client(Project.discover(repo))


def all_runs(repo: Path) -> list:
    c = client(repo)
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)


def status_of(repo: Path, run_id: str) -> str:
    return client(repo).get_run(run_id).info.status


def end_kernel(marker: Path) -> None:
    """Let the waiting cell go, and end the kernel the test's run started (by its pid)."""
    marker.with_name(marker.name + ".go").touch()
    try:
        os.kill(int(marker.read_text()), signal.SIGKILL)
    except (ProcessLookupError, ValueError, OSError):
        pass


def test_runner_killed_mid_run_ends_its_run(repo, tmp_path):
    marker = tmp_path / "kernel.pid"
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "waits.ipynb", "-q", "--no-html"],
                            cwd=repo, env={**os.environ, "MARKER": str(marker)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(marker.exists, 300, "the notebook running", proc=proc)
        (run,) = wait_until(lambda: all_runs(repo) or None, 300, "the run created (beside the kernel)", proc=proc)
        assert run.info.status == "RUNNING"
        proc.kill()
        proc.wait(timeout=60)
        wait_until(lambda: status_of(repo, run.info.run_id) == "FAILED", 120, "the run ending FAILED")
        ended = client(repo).get_run(run.info.run_id)
        assert ended.data.tags["cd4ml.status.reason"] == "orphaned"
        assert f":{proc.pid})" in ended.data.tags["cd4ml.status.message"]
    finally:
        proc.kill()
        end_kernel(marker)


# An owner that starts its guard, creates a run tagged as its own, and dies before telling the guard.
DIES_BEFORE_TELLING = """
import os, socket, sys
from mlflow.tracking import MlflowClient
from cd4ml_nb.guard import Guard
uri = sys.argv[1]
guard = Guard(uri)
c = MlflowClient(tracking_uri=uri)
run = c.create_run(c.create_experiment("owned"), tags={"cd4ml.runner": f"{socket.gethostname()}:{os.getpid()}"})
other = c.create_run(c.get_experiment_by_name("owned").experiment_id, tags={"cd4ml.runner": "elsewhere:1"})
print(run.info.run_id, other.info.run_id, flush=True)
sys.stdin.read()
"""


def test_runner_killed_between_creating_its_run_and_telling_the_guard_ends_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-c", DIES_BEFORE_TELLING, uri], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        owned, other = proc.stdout.readline().split()
        proc.kill()
        proc.wait(timeout=60)
        from mlflow.tracking import MlflowClient

        c = MlflowClient(tracking_uri=uri)
        wait_until(lambda: c.get_run(owned).info.status == "FAILED", 120, "the owned run ending FAILED")
        assert c.get_run(owned).data.tags["cd4ml.status.reason"] == "orphaned"
        assert c.get_run(other).info.status == "RUNNING"  # another owner's run is not touched
    finally:
        proc.kill()


def test_nbval_run_of_a_tracked_notebook_ends_with_the_notebook_named(repo):
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                           "tracked.ipynb"], cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    (run,) = wait_until(lambda: [r for r in all_runs(repo) if r.info.status != "RUNNING"] or None, 120,
                        "the tracked session's run ending")
    assert run.info.status in ("FINISHED", "KILLED") and run.data.metrics == {"seen": 1.0}
    assert run.data.tags["cd4ml.notebook"] == "tracked.ipynb"


def test_killed_kernel_under_track_ends_its_run(repo):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(repo))
    try:
        reply = kc.execute_interactive("import cd4ml_nb\nrun = cd4ml_nb.track('tracked.ipynb')\n"
                                       "open('run.id', 'w').write(run.info.run_id)", timeout=300)
        assert reply["content"]["status"] == "ok"
        run_id = (repo / "run.id").read_text()
        assert status_of(repo, run_id) == "RUNNING"
        km.shutdown_kernel(now=True)  # SIGKILL, as nbval and a "restart kernel" do
        wait_until(lambda: status_of(repo, run_id) == "KILLED", 120, "the session's run ending KILLED")
        assert client(repo).get_run(run_id).data.tags["cd4ml.status.reason"] == "session-ended"
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)


def test_sweep_trial_whose_machinery_raises_is_ended(repo):
    """The first trial corrupts the notebook file: later trials cannot even read it."""
    write_ipynb(repo / "corrupts.ipynb", percent(
        "import pathlib\nif x == 0:\n    pathlib.Path('corrupts.ipynb').write_text('not a notebook')",
        parameters="x: int = 0"))
    commit_all(repo)
    assert main(["sweep", "corrupts.ipynb", "--grid", "x=0,1,2", "--parallel", "1", "-q"]) == 1
    runs = all_runs(repo)
    assert len(runs) == 4 and "RUNNING" not in {r.info.status for r in runs}
    failed = [r for r in runs if r.info.status == "FAILED" and "mlflow.parentRunId" in r.data.tags]
    assert len(failed) == 2 and all("corrupts.ipynb" in r.data.tags["cd4ml.status.message"] for r in failed)


def test_lab_job_with_a_lone_surrogate_is_refused_before_any_run(repo):
    from cd4ml_nb.jobs import JobManager

    with pytest.raises(ParameterError, match="lone surrogate"):
        JobManager(Project.discover(repo)).submit("waits.ipynb", {"name": "bad \ud800 text"})
    assert not (repo / ".cd4ml" / "mlflow.db").exists()


def test_job_process_that_dies_ends_its_run_while_the_server_lives(repo, tmp_path, monkeypatch):
    from cd4ml_nb.jobs import JobManager

    marker = tmp_path / "job-kernel.pid"
    monkeypatch.setenv("MARKER", str(marker))
    manager = JobManager(Project.discover(repo))
    job = manager.submit("waits.ipynb", {})
    try:
        wait_until(marker.exists, 300, "the job's notebook running")
        run_id = wait_until(lambda: manager.get(job.id).run_id, 60, "the job's run id")
        launch = json.loads((repo / ".cd4ml" / "jobs" / job.id / "launch.json").read_text())
        os.kill(launch["pid"], signal.SIGKILL)  # the job process this test's manager started
        wait_until(lambda: status_of(repo, run_id) == "FAILED", 120, "the job's run ending FAILED")
        assert wait_until(lambda: manager.get(job.id).state in ("failed", "killed"), 60, "the job ending")
    finally:
        end_kernel(marker)
        manager.shutdown()


def test_every_value_the_notebook_ran_with_is_recorded(repo):
    assert main(["run", "defaults.ipynb", "-q", "--no-html", "-p", "max_depth", "3"]) == 0
    (run,) = all_runs(repo)
    assert run.data.params == {"model": "decision_tree", "max_depth": "3", "label": "null"}
    assert run.data.tags["cd4ml.params.defaults"] == "label,model"
    assert run.data.metrics == {"depth": 3.0}


def test_more_than_a_hundred_parameters_on_a_local_store(repo):
    from cd4ml_nb import tracking

    project = Project.discover(repo)
    c = tracking.client(project)
    experiment = tracking.ensure_experiment(c, project, "wide")
    values = {f"p{i:03d}": i for i in range(150)}
    run = tracking.create_run(c, experiment, "wide", {f"t{i}": i for i in range(120)}, values)
    got = c.get_run(run.info.run_id).data
    assert len(got.params) == 150 and got.params["p149"] == "149"
    assert len([k for k in got.tags if k.startswith("t")]) == 120


def test_team_mode_uploads_every_parameter_tag_and_point_once(repo):
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    try:
        assert main(["run", "many.ipynb", "-q", "--no-html", "--tracking-uri", uri]) == 0
        c = MlflowClient(uri)
        (run,) = c.search_runs([c.get_experiment_by_name("master").experiment_id])
        assert run.info.status == "FINISHED"
        assert len(run.data.params) == 150 and run.data.params["p149"] == "149"
        assert len([k for k in run.data.tags if k.startswith("t")]) == 150
        history = c.get_metric_history(run.info.run_id, "curve")
        assert sorted(m.step for m in history) == list(range(2500))
        assert not list((repo / ".cd4ml" / "spool").iterdir())
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
