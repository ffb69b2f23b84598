"""`cd4ml-nb run` with real git repositories, real kernels and real SQLite MLflow stores."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, digest_tree, git, init_repo, percent, wait_until, write_ipynb

SCORE = percent(
    "import mlflow\nmlflow.log_metric('score', alpha * 2)\nmlflow.set_tag('seen', repr((alpha, name)))",
    parameters='alpha: float = 0.5  # weight\nname: str = "x"',
)


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")


def runs_of(repo: Path, experiment: str):
    c = client(repo)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


def all_runs(repo: Path):
    c = client(repo)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = init_repo(tmp_path / "repo", branch="try-random-forest")
    git(repo, "remote", "add", "origin", "https://example.com/team/models.git")
    write_ipynb(repo / "score.ipynb", SCORE)
    commit_all(repo, "score notebook")
    monkeypatch.chdir(repo)
    return repo


def test_run_lands_in_the_branch_experiment_with_provenance(repo, capsys):
    before = digest_tree(repo)
    assert main(["run", "score.ipynb", "-p", "alpha", "0.25", "-p", "name", "007", "-q"]) == 0
    out = capsys.readouterr().out
    assert "finished in experiment 'try-random-forest'" in out and "score=0.5" in out
    assert digest_tree(repo) == before  # the source notebook is never written
    (run,) = runs_of(repo, "try-random-forest")
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["mlflow.source.git.commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "try-random-forest"
    assert tags["mlflow.source.git.repoURL"] == "https://example.com/team/models.git"
    assert tags["mlflow.source.name"] == "score.ipynb" and tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["cd4ml.git.dirty"] == "false"
    assert tags["seen"] == "(0.25, '007')"  # coerced to the declared types inside the kernel
    assert run.data.params == {"alpha": "0.25", "name": "007"}
    assert run.data.metrics == {"score": 0.5}
    artifacts = {a.path for a in client(repo).list_artifacts(run.info.run_id)}
    assert {"score.ipynb", "score.html", "score.source.py"} <= artifacts
    assert "uncommitted.diff" not in artifacts
    assert git(repo, "status", "--porcelain") == ""  # outputs are git-ignored

    git(repo, "checkout", "-q", "-b", "change-max-depth")
    (repo / "extra.txt").write_text("uncommitted\n")
    assert main(["run", "score.ipynb", "-q"]) == 0
    (second,) = runs_of(repo, "change-max-depth")
    assert second.data.tags["mlflow.source.git.branch"] == "change-max-depth"
    assert second.data.tags["cd4ml.git.dirty"] == "true"
    assert "uncommitted.diff" in {a.path for a in client(repo).list_artifacts(second.info.run_id)}
    assert len(runs_of(repo, "try-random-forest")) == 1


def test_runs_lists_this_branch_newest_first(repo, capsys):
    assert main(["run", "score.ipynb", "-q", "-p", "alpha", "1"]) == 0
    assert main(["run", "score.ipynb", "-q", "-p", "alpha", "2", "--no-html"]) == 0
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["experiment"] == "try-random-forest"
    assert [r["params"]["alpha"] for r in data["runs"]] == ["2.0", "1.0"]
    assert all(r["status"] == "FINISHED" for r in data["runs"])
    assert main(["runs"]) == 0
    assert "score=4" in capsys.readouterr().out


def test_cell_exception_fails_the_run_naming_the_cell(repo, capsys):
    (repo / "boom.py").write_text(percent("x = 1", "raise ValueError('bad input data')", "print('never')"))
    assert main(["run", "boom.py", "-q"]) == 1
    captured = capsys.readouterr()
    assert "names no kernel" in captured.err  # a .py without kernelspec runs on python3 and says so
    assert "cell index 1 raised ValueError: bad input data" in captured.out
    (run,) = runs_of(repo, "try-random-forest")
    tags = run.data.tags
    assert run.info.status == "FAILED"
    assert tags["cd4ml.status.reason"] == "cell-exception"
    assert tags["cd4ml.failed_cell"] == "1"
    assert tags["cd4ml.failed_cell.ename"] == "ValueError"
    assert tags["cd4ml.failed_cell.evalue"] == "bad input data"
    executed = Path(tags["cd4ml.output_dir"]) / "boom.ipynb"
    assert executed.exists() and "bad input data" in executed.read_text()
    assert "boom.ipynb" in {a.path for a in client(repo).list_artifacts(run.info.run_id)}


def test_kernel_death_fails_the_run(repo):
    (repo / "die.py").write_text(percent("import os", "os.kill(os.getpid(), 9)"))
    assert main(["run", "die.py", "-q"]) == 1
    (run,) = runs_of(repo, "try-random-forest")
    assert run.info.status == "FAILED"
    assert run.data.tags["cd4ml.status.reason"] == "kernel-died"
    assert run.data.tags["cd4ml.failed_cell"] == "1"


def test_a_kernel_that_dies_at_start_says_why_in_the_runs_message(repo, tmp_path, monkeypatch, capsys):
    """The kernel's stderr goes to kernel.log in the run's folder, not the terminal; its last words
    (why it died) reach the run's message."""
    import json

    spec = tmp_path / "jupyter" / "kernels" / "dying"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", "import sys; sys.exit('no ipykernel here')", "{connection_file}"],
        "display_name": "dying", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    (repo / "pyproject.toml").write_text("[tool.cd4ml_nb]\nkernel_name = 'dying'\nkernel_start_timeout = 60\n")
    (repo / "nb.py").write_text(percent("x = 1"))
    assert main(["run", "nb.py", "-q", "--no-html"]) == 1
    (run,) = runs_of(repo, "try-random-forest")
    assert (run.info.status, run.data.tags["cd4ml.status.reason"]) == ("FAILED", "kernel-start")
    message = run.data.tags["cd4ml.status.message"]
    assert "the kernel's stderr ends: no ipykernel here" in message, message
    log = Path(run.data.tags["cd4ml.output_dir"]) / "kernel.log"
    assert log.read_text().strip() == "no ipykernel here" and str(log) in message
    assert "the kernel's stderr ends: no ipykernel here" in capsys.readouterr().out  # the run's "reason:" line


def test_cell_timeout_fails_the_run(repo):
    (repo / "slow.py").write_text(percent("import time", "time.sleep(30)"))
    assert main(["run", "slow.py", "-q", "--timeout", "2"]) == 1
    (run,) = runs_of(repo, "try-random-forest")
    assert (run.info.status, run.data.tags["cd4ml.status.reason"]) == ("FAILED", "timeout")


# The cell replies at once; the end of its output (the kernel's "idle") comes 6 s later, as when a
# loaded machine holds up the kernel's output thread. nbclient's 4 s default failed such finished
# cells as "cell timed out".
LATE_OUTPUT = percent(
    "x = 1",
    "import time\nkernel = get_ipython().kernel\nsend = kernel.session.send\n"
    "def send_then_hold_output(stream, kind, *args, **kwargs):\n"
    "    sent = send(stream, kind, *args, **kwargs)\n"
    "    if kind == 'execute_reply':\n"
    "        kernel.session.send = send\n"
    "        kernel.iopub_thread.schedule(lambda: time.sleep(6))\n"
    "    return sent\n"
    "kernel.session.send = send_then_hold_output\nprint('all of it')",
)


def test_late_output_of_a_finished_cell_is_waited_for(repo):
    (repo / "late.py").write_text(LATE_OUTPUT)
    assert main(["run", "late.py", "-q"]) == 0
    (run,) = runs_of(repo, "try-random-forest")
    assert run.info.status == "FINISHED", run.data.tags.get("cd4ml.status.message")
    assert "all of it" in (Path(run.data.tags["cd4ml.output_dir"]) / "late.ipynb").read_text()


def test_output_timeout_is_named_and_configurable(repo, capsys):
    (repo / "late.py").write_text(LATE_OUTPUT)
    (repo / "pyproject.toml").write_text("[tool.cd4ml_nb]\niopub_timeout = 1\n")
    assert main(["run", "late.py", "-q"]) == 1
    assert "raise iopub_timeout in [tool.cd4ml_nb]" in capsys.readouterr().out
    (run,) = runs_of(repo, "try-random-forest")
    assert (run.info.status, run.data.tags["cd4ml.status.reason"]) == ("FAILED", "output-timeout")
    assert run.data.tags["cd4ml.failed_cell"] == "1"
    assert "iopub_timeout (1 s)" in run.data.tags["cd4ml.status.message"]


SLEEPER = percent("import pathlib, time\npathlib.Path('started').write_text('1')\ntime.sleep(120)")


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_interrupt_ends_the_run_killed(repo, how):
    (repo / "sleep.py").write_text(SLEEPER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cd4ml_nb.cli", "run", "sleep.py", "-q"],
        cwd=repo, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until((repo / "started").exists, 240, "the notebook starting", interval=0.1, proc=proc)
    except AssertionError as e:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{e}\n{proc.communicate()}") from None
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    else:
        os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "ZMQError" not in err, err  # the kernel's dying words stay off the terminal
    (run,) = runs_of(repo, "try-random-forest")
    assert run.info.status == "KILLED"
    assert run.data.tags["cd4ml.status.reason"] == ("interrupted" if how == "SIGINT" else "terminated")
    assert not [r for r in all_runs(repo) if r.info.status == "RUNNING"]


def test_orphaned_running_run_is_reconciled(repo, capsys):
    import socket

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    project = Project.discover(repo)
    c = tracking.client(project)
    exp = tracking.ensure_experiment(c, project, "try-random-forest")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tracking.create_run(c, exp, "ghost", {tracking.RUNNER: f"{socket.gethostname()}:{dead.stdout.strip()}"}, {})
    assert main(["runs"]) == 0
    got = c.get_run(run.info.run_id)
    assert got.info.status == "FAILED" and got.data.tags["cd4ml.status.reason"] == "orphaned"


def test_outside_git_runs_and_says_so(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "plain"
    folder.mkdir()
    write_ipynb(folder / "score.ipynb", SCORE)
    monkeypatch.chdir(folder)
    assert main(["run", "score.ipynb", "-q", "--no-html"]) == 0
    assert "not in a git repository" in capsys.readouterr().err
    (run,) = runs_of(folder, "no-git")
    assert "mlflow.source.git.commit" not in run.data.tags and run.data.metrics == {"score": 1.0}


def test_parameters_file_and_tracking_uri_flag(repo, tmp_path):
    (repo / "p.yaml").write_text("alpha: 3\nname: '007'\n")
    store = tmp_path / "elsewhere.db"
    assert main(["run", "score.ipynb", "-q", "-f", "p.yaml", "--tracking-uri", f"sqlite:///{store}",
                 "--experiment", "custom"]) == 0
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{store}")
    (run,) = c.search_runs([c.get_experiment_by_name("custom").experiment_id])
    assert run.data.metrics == {"score": 6.0} and run.data.tags["seen"] == "(3.0, '007')"


def test_track_records_an_interactive_session(repo):
    import mlflow

    import cd4ml_nb

    try:
        run = cd4ml_nb.track("score.ipynb")
        mlflow.log_metric("by_hand", 1.0)
        assert cd4ml_nb.track() is mlflow.active_run()  # idempotent while a run is active
    finally:
        mlflow.end_run()
    (got,) = runs_of(repo, "try-random-forest")
    assert got.info.run_id == run.info.run_id and got.data.metrics == {"by_hand": 1.0}
    assert got.data.tags["mlflow.source.git.branch"] == "try-random-forest"
    assert got.data.tags["mlflow.source.name"] == "score.ipynb"
