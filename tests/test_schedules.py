"""Scheduled retraining (#24): schedules in pyproject.toml fire a branch's HEAD in a temporary git
work tree, tracked as cd4ml.kind=schedule, gated against the previous fire, notifying a webhook.

Real git repositories, real kernels, the real embedded MLflow store, a real loopback HTTP server for
the webhook and a real `jupyter server` for the server-driven fire. The clock is a parameter of the
core (``now``): no test waits for a cron time.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from cd4ml_nb import schedule_fire, schedules
from cd4ml_nb.cli import main
from cd4ml_nb.project import Project

from nbfactory import (commit_all, digest_tree, free_port, git, init_repo, jupyter_port, percent, stop_group,
                       wait_http, wait_until, write_ipynb)

TRAIN = percent(
    "import mlflow, os, time\nscore = float(open('score.txt').read())\n"
    "time.sleep(float(open('sleep.txt').read()) if os.path.exists('sleep.txt') else 0)\n"
    "if open('fail.txt').read().strip() == 'yes':\n    raise ValueError('broken on purpose')\n"
    "mlflow.log_metric('score', score)",
    parameters="tag: str = 'default'")
UTC = timezone.utc


def env_without_tracking() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


class Webhook:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(autouse=True)
def no_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def make_repo(path: Path, schedules_toml: str, extra: str = "") -> Path:
    """master with the schedules and the notebook (score 0.5); branch ``retrain`` (score 0.9); the
    user back on master."""
    repo = init_repo(path, branch="master")
    (repo / "pyproject.toml").write_text(f"[tool.cd4ml_nb]\n{extra}\n{schedules_toml}")
    write_ipynb(repo / "train.ipynb", TRAIN)
    (repo / "score.txt").write_text("0.5")
    (repo / "fail.txt").write_text("no")
    commit_all(repo, "notebook and schedules")
    git(repo, "checkout", "-q", "-b", "retrain")
    (repo / "score.txt").write_text("0.9")
    commit_all(repo, "retrain: better data")
    git(repo, "checkout", "-q", "master")
    return repo


def commit_on(repo: Path, branch: str, files: dict[str, str]) -> str:
    """A commit on ``branch`` made in a work tree of the test's own (the user's stays as it is)."""
    other = Path(tempfile.mkdtemp(prefix="committer-")) / "tree"
    git(repo, "worktree", "add", "-q", str(other), branch)
    try:
        for name, text in files.items():
            (other / name).write_text(text)
        return commit_all(other, f"change {', '.join(files)}")
    finally:
        git(repo, "worktree", "remove", "--force", str(other))


def runs_of(project: Project, schedule: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(project.tracking_uri)
    ids = [e.experiment_id for e in c.search_experiments()]
    return c.search_runs(ids, f"tags.`cd4ml.schedule` = '{schedule}'", order_by=["attributes.start_time ASC"])


NIGHTLY = """
[tool.cd4ml_nb.schedules.nightly]
notebook = "train.ipynb"
branch = "retrain"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
parameters = {{ tag = "nightly" }}
notify_url = "{url}"
"""


def test_a_schedule_fires_the_branch_head_in_a_worktree_gates_and_notifies(tmp_path, monkeypatch, webhook, capsys,
                                                                          seed_store):
    repo = make_repo(tmp_path / "repo", NIGHTLY.format(url=webhook.url), 'mlflow_ui_url = "http://mlflow.example"')
    seed_store(repo)
    monkeypatch.chdir(repo)
    # the user is on master with uncommitted edits that would break the notebook if they were used
    (repo / "score.txt").write_text("not a number")
    (repo / "train.ipynb").write_text((repo / "train.ipynb").read_text().replace("score.txt", "nowhere.txt"))
    before = digest_tree(repo)
    project = Project.discover(repo)
    head = git(repo, "rev-parse", "retrain")

    assert schedule_fire.run_due(project, now=datetime(2030, 1, 1, 12, tzinfo=UTC)) == []  # first sight
    first = schedule_fire.run_due(project, now=datetime(2030, 1, 2, 12, tzinfo=UTC))
    assert [(r.status, r.verdict, r.commit) for r in first] == [("FINISHED", "no-baseline", head)]
    assert first[0].slot == "2030-01-02T02:00:00+00:00"  # 03:00 in Berlin
    assert schedule_fire.run_due(project, now=datetime(2030, 1, 2, 13, tzinfo=UTC)) == []  # that slot is done

    [run] = runs_of(project, "nightly")
    tags = run.data.tags
    assert tags["cd4ml.kind"] == "schedule" and tags["cd4ml.schedule.slot"] == first[0].slot
    assert tags["mlflow.source.git.commit"] == head and tags["mlflow.source.git.branch"] == "retrain"
    assert tags["cd4ml.git.dirty"] == "false" and tags["cd4ml.notebook"] == "train.ipynb"
    assert run.data.metrics["score"] == 0.9 and run.data.params["tag"] == "nightly"
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(project.tracking_uri).get_experiment(run.info.experiment_id)
    assert experiment.name == "retrain" and experiment.tags["cd4ml.branch"] == "retrain"  # made from a detached tree
    assert experiment.tags["cd4ml.branch.fork"] == git(repo, "merge-base", "master", "retrain")
    assert digest_tree(repo) == before and git(repo, "branch", "--show-current") == "master"
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # the temporary work tree is gone
    assert webhook.bodies == []  # nothing to report

    # a commit on the branch between two fires shows in the second, which regressed: one POST
    newer = commit_on(repo, "retrain", {"score.txt": "0.4"})
    second = schedule_fire.run_due(project, now=datetime(2030, 1, 3, 12, tzinfo=UTC))
    assert [(r.status, r.verdict, r.commit, r.notified) for r in second] == [("FINISHED", "regression", newer, "sent")]
    assert len(webhook.bodies) == 1
    body = webhook.bodies[0]
    assert {k: body[k] for k in ("schedule", "run_id", "status", "verdict")} == {
        "schedule": "nightly", "run_id": second[0].run_id, "status": "FINISHED", "verdict": "regression"}
    assert body["mlflow_link"].startswith("http://mlflow.example/#/experiments/")
    assert body["mlflow_link"].endswith(second[0].run_id)

    # a failing notebook: exactly one more POST, status FAILED
    commit_on(repo, "retrain", {"fail.txt": "yes"})
    third = schedule_fire.run_due(project, now=datetime(2030, 1, 4, 12, tzinfo=UTC))
    assert [(r.status, r.verdict) for r in third] == [("FAILED", "failed")]
    assert len(webhook.bodies) == 2 and webhook.bodies[1]["status"] == "FAILED"
    assert webhook.bodies[1]["run_id"] == third[0].run_id
    assert len(runs_of(project, "nightly")) == 3
    assert digest_tree(repo) == before and len(git(repo, "worktree", "list").splitlines()) == 1

    # schedule list: next fire and last result
    capsys.readouterr()
    assert main(["schedule", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)["schedules"]
    assert (listed["name"], listed["next_fire"][11:]) == ("nightly", "02:00:00+00:00")  # 03:00 Berlin, winter
    assert {k: listed["last"][k] for k in ("status", "verdict", "run_id", "notified")} == {
        "status": "FAILED", "verdict": "failed", "run_id": third[0].run_id, "notified": "sent"}


def test_a_failed_notification_is_reported_not_fatal(tmp_path, monkeypatch, seed_store):
    closed = f"http://127.0.0.1:{free_port()}/hook"
    repo = make_repo(tmp_path / "repo", NIGHTLY.format(url=closed))
    seed_store(repo)
    commit_on(repo, "retrain", {"fail.txt": "yes"})
    monkeypatch.chdir(repo)
    project = Project.discover(repo)
    schedules.write_state(project, "nightly", since="2030-01-01T00:00:00+00:00")
    warned = []
    [result] = schedule_fire.run_due(project, now=datetime(2030, 1, 2, 12, tzinfo=UTC), warn=warned.append)
    assert result.status == "FAILED" and result.notified.startswith("failed")
    assert any("notification" in w for w in warned)
    assert schedules.read_state(project, "nightly")["notified"] == result.notified
    # the state file forgot the slot (another host's fire, a lost .cd4ml): the store's slot tag holds
    schedules.write_state(project, "nightly", slot=None)
    assert schedule_fire.run_due(project, now=datetime(2030, 1, 2, 12, tzinfo=UTC)) == []
    assert len(runs_of(project, "nightly")) == 1


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, message, *args):
        self.lines.append(message % args)

    info = warning


def test_the_server_loop_logs_a_bad_schedule_once_and_fires_nothing(tmp_path):
    from cd4ml_nb.schedule_loop import ScheduleLoop

    table = 'notebook = "train.ipynb"\nbranch = "retrain"\ncron = "0 3 * * *"\nretries = 3\n'
    repo = make_repo(tmp_path / "repo", f"[tool.cd4ml_nb.schedules.broken]\n{table}")
    project = Project.discover(repo)
    log = Log()
    loop = ScheduleLoop(lambda: project, log)
    assert loop.tick() == 30.0 and loop.tick() == 30.0
    assert len(log.lines) == 1 and f"{repo / 'pyproject.toml'}: [tool.cd4ml_nb.schedules.broken]" in log.lines[0]
    assert "unknown key(s) retries" in log.lines[0]
    assert not (repo / ".cd4ml" / "schedules").exists() and loop.child is None


CATCH_UP = """
[tool.cd4ml_nb.schedules.latest]
notebook = "train.ipynb"
branch = "retrain"
cron = "0 * * * *"

[tool.cd4ml_nb.schedules.none]
notebook = "train.ipynb"
branch = "retrain"
cron = "0 * * * *"
catch_up = "none"
"""


def test_catch_up_latest_fires_once_for_missed_slots_none_waits_for_the_next(tmp_path):
    project = Project.discover(make_repo(tmp_path / "repo", CATCH_UP))
    latest, none = schedules.load_valid(project)
    assert (latest.name, none.name) == ("latest", "none")

    def claim(schedule, *when):
        return schedules.claim(project, schedule, datetime(2030, 1, 1, *when, tzinfo=UTC))

    assert claim(latest, 0, 30) is None and claim(none, 0, 30) is None  # first sight: nothing from the past
    # five hours missed (01:00 .. 05:00): latest fires once, for 05:00; none skips them all
    assert claim(latest, 5, 30) == datetime(2030, 1, 1, 5, tzinfo=UTC)
    assert claim(latest, 5, 40) is None
    assert claim(none, 5, 30) is None
    assert schedules.read_state(project, "none")["status"] == "SKIPPED"
    # the next slot, on time: both fire once
    assert claim(latest, 6, 2) == datetime(2030, 1, 1, 6, tzinfo=UTC)
    assert claim(none, 6, 2) == datetime(2030, 1, 1, 6, tzinfo=UTC)
    assert claim(none, 6, 3) is None
    listed, problems = schedules.listing(project, datetime(2030, 1, 1, 6, 3, tzinfo=UTC))
    assert problems == [] and [item.next_fire.hour for item in listed] == [7, 7]


@pytest.mark.parametrize("table, problem", [
    ('notebook = "train.ipynb"\nbranch = "retrain"\ncron = "0 3 * * *"\ncolour = "red"', "unknown key(s) colour"),
    ('notebook = "train.ipynb"\nbranch = "retrain"\ncron = "0 25 * * *"', "cron '0 25 * * *'"),
    ('notebook = "train.ipynb"\nbranch = "retrain"\ncron = "0 3 * *"', "must have 5 fields"),
    ('notebook = "train.ipynb"\nbranch = "retrain"\ncron = "0 3 * * *"\ntimezone = "Mars/Olympus"', "timezone"),
    ('notebook = "missing.ipynb"\nbranch = "retrain"\ncron = "0 3 * * *"', "notebook 'missing.ipynb' is not in"),
    ('notebook = "train.ipynb"\nbranch = "gone"\ncron = "0 3 * * *"', "branch 'gone' does not exist"),
    ('notebook = "train.ipynb"\nbranch = "retrain"\ncron = "0 3 * * *"\ncatch_up = "all"', "catch_up 'all'"),
])
def test_a_bad_schedule_is_one_line_naming_file_and_schedule_exit_2(tmp_path, monkeypatch, capsys, table, problem):
    repo = make_repo(tmp_path / "repo", f"[tool.cd4ml_nb.schedules.broken]\n{table}\n")
    monkeypatch.chdir(repo)
    assert main(["schedule", "run-due"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{repo / 'pyproject.toml'}: [tool.cd4ml_nb.schedules.broken]" in err[0]
    assert problem in err[0], err[0]
    assert not (repo / ".cd4ml" / "mlflow.db").exists()  # nothing started
    assert main(["schedule", "list"]) == 2
    assert problem in capsys.readouterr().err


YEARLY = """
[tool.cd4ml_nb.schedules.yearly]
notebook = "train.ipynb"
branch = "retrain"
cron = "{cron}"
"""


def test_two_run_due_at_once_fire_once(tmp_path):
    repo = make_repo(tmp_path / "repo", YEARLY.format(cron="0 0 1 1 *"))
    project = Project.discover(repo)
    schedules.write_state(project, "yearly", since="2020-01-01T00:00:00+00:00")  # this year's slot is due
    command = [sys.executable, "-m", "cd4ml_nb.cli", "schedule", "run-due", "--json"]
    procs = [subprocess.Popen(command, cwd=repo, env=env_without_tracking(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    fired = sorted(len(json.loads(out)) for out, _ in outputs)
    assert fired == [0, 1], outputs
    assert len(runs_of(project, "yearly")) == 1


def test_the_jupyter_server_fires_a_due_schedule_and_stops_cleanly(tmp_path, seed_store):
    repo = make_repo(tmp_path / "repo", YEARLY.format(cron="* * * * *"), "schedule_check_seconds = 1")
    seed_store(repo)
    project = Project.discover(repo)
    past = datetime.now(UTC) - timedelta(minutes=3)
    schedules.write_state(project, "yearly", since=past.isoformat())  # missed fires: latest fires once
    runtime = Path(tempfile.mkdtemp(prefix="jupyter-runtime-"))
    env = {**env_without_tracking(), "JUPYTER_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                             f"--port={free_port()}", "--ip=127.0.0.1", "--IdentityProvider.token=t",
                             f"--ServerApp.root_dir={repo}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{jupyter_port(runtime, proc)}/api/status?token=t", proc=proc)
        state = wait_until(lambda: schedules.read_state(project, "yearly").get("verdict") and
                           schedules.read_state(project, "yearly"), timeout=300, what="a server-driven fire", proc=proc)
        assert state["status"] == "FINISHED", state
        runs = runs_of(project, "yearly")  # every minute: a slow machine may see a second fire
        assert state["run_id"] in [r.info.run_id for r in runs]
        assert {r.data.tags["cd4ml.kind"] for r in runs} == {"schedule"}

        # the next minute's fire runs a notebook that takes ten minutes; the server stops meanwhile
        commit_on(repo, "retrain", {"sleep.txt": "600"})
        running = wait_until(lambda: [r for r in runs_of(project, "yearly") if r.info.status == "RUNNING"],
                             timeout=300, what="a slow fire running", proc=proc)
        child = int(schedules.read_state(project, "yearly")["claimed_by"].rsplit(":", 1)[1])
        assert psutil.pid_exists(child)
        os.kill(proc.pid, signal.SIGTERM)  # the server alone, not its process group
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            stop_group(proc)
        shutil.rmtree(runtime, ignore_errors=True)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    from mlflow.tracking import MlflowClient

    ended = MlflowClient(project.tracking_uri).get_run(running[0].info.run_id)
    assert ended.info.status == "KILLED", ended.info.status  # ended with the server, not left RUNNING
    # a restarted server (or a system cron) does not fire that slot again
    slot = datetime.fromisoformat(ended.data.tags["cd4ml.schedule.slot"])
    [schedule] = schedules.load_valid(project)
    assert schedules.claim(project, schedule, slot + timedelta(seconds=30)) is None
    assert len(git(repo, "worktree", "list").splitlines()) == 1


PIPELINED = """
[tool.cd4ml_nb.schedules.piped]
pipeline = "cd4ml-pipeline.yaml"
branch = "retrain"
cron = "0 0 1 1 *"
parameters = { "train.tag" = "piped" }
"""


def test_a_pipeline_schedule_runs_the_pipeline_of_the_branch_head(tmp_path, monkeypatch, seed_store):
    repo = make_repo(tmp_path / "repo", PIPELINED)
    seed_store(repo)
    commit_on(repo, "retrain", {"cd4ml-pipeline.yaml": "steps:\n  train:\n    notebook: train.ipynb\n"})
    head = git(repo, "rev-parse", "retrain")
    monkeypatch.chdir(repo)
    project = Project.discover(repo)
    schedules.write_state(project, "piped", since="2020-01-01T00:00:00+00:00")
    [result] = schedule_fire.run_due(project)
    assert (result.status, result.commit) == ("FINISHED", head), result
    [parent] = runs_of(project, "piped")
    assert parent.info.run_id == result.run_id
    tags = parent.data.tags
    assert (tags["cd4ml.kind"], tags["mlflow.source.git.commit"], tags["mlflow.source.git.branch"]) == (
        "pipeline", head, "retrain")  # a pipeline whatever started it: the Pipelines view and --step see it
    assert tags["cd4ml.schedule"] == "piped" and tags["cd4ml.schedule.slot"]
    from mlflow.tracking import MlflowClient

    c = MlflowClient(project.tracking_uri)
    assert c.get_experiment(parent.info.experiment_id).name == "retrain"
    [step] = c.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert step.data.params["tag"] == "piped" and step.data.metrics["score"] == 0.9
    assert len(git(repo, "worktree", "list").splitlines()) == 1
