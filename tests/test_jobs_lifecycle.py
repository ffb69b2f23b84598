"""Job lifecycle and limits: ended jobs are never signalled, processes are known by pid and start
time, queued jobs resume after a restart, the cap counts processes until reaped, the list is paged,
ended jobs are pruned (count and age, `cd4ml-nb gc`), parameters are capped, reads write nothing."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid

import psutil
import pytest

from cd4ml_nb import jobs, processes
from cd4ml_nb.cli import main
from cd4ml_nb.exceptions import BadInput, Conflict, Forbidden, NotFound, TooLarge
from cd4ml_nb.jobs import JobManager
from cd4ml_nb.project import Project

from nbfactory import commit_all, git, init_repo, percent, wait_until, write_ipynb

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
NOTEBOOK = percent("import time, mlflow\ntime.sleep(pause)\nmlflow.log_metric('m', pause)",
                   parameters='pause: float = 0.0\nlabel: str = ""')


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "jobs", branch="try-random-forest")
    write_ipynb(repo / "nb.ipynb", NOTEBOOK)
    (repo / "sub").mkdir()
    write_ipynb(repo / "sub" / "nb.ipynb", NOTEBOOK)
    commit_all(repo)
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture
def managers():
    """Managers a test makes; their job processes are cancelled and waited for at the end."""
    made: list[JobManager] = []
    yield made
    for manager in made:
        manager.shutdown()


def manager_of(managers, repo, root=None, **config) -> JobManager:
    manager = JobManager(Project.discover(repo, **config), root)
    managers.append(manager)
    return manager


@contextlib.contextmanager
def deaf_sleep():
    """A harmless `sleep` with SIGTERM blocked: a SIGTERM sent to it stays pending, visible in /proc."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        proc = subprocess.Popen(["sleep", "600"])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def sigterm_pending(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return bool((int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & SIGTERM_BIT)


def fake_job(manager: JobManager, created: float, state: str | None = "finished", *, launch: dict | None = None,
             output_bytes: int = 0, html: bool = False) -> str:
    """A job folder as a job leaves it, without running one (for listing and pruning)."""
    job_id = uuid.uuid4().hex[:12]
    job_dir = manager.project.ensure_state_dir() / "jobs" / job_id
    job_dir.mkdir(parents=True)
    output = manager.runs_dir / job_id
    (job_dir / "spec.json").write_text(json.dumps({
        "id": job_id, "root": str(manager.root), "path": "nb.ipynb", "parameters": {}, "created": created,
        "output": str(output)}))
    status = {"state": state} if state else None
    if output_bytes or html:
        (output / "run").mkdir(parents=True)
        (output / "run" / "nb.ipynb").write_bytes(b"x" * output_bytes)
        if html:
            (output / "run" / "nb.html").write_text("<p>done</p>")
            status = {**(status or {}), "html": f"{manager.runs_dir.name}/{job_id}/run/nb.html"}
    if status:
        (job_dir / "status.json").write_text(json.dumps(status))
    if launch:
        (job_dir / "launch.json").write_text(json.dumps(launch))
    return job_id


def backdate(path, days: float) -> None:
    stamp = time.time() - days * 86400
    for folder, _, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(folder, name), (stamp, stamp))
        os.utime(folder, (stamp, stamp))


def snapshot(root) -> dict:
    """Every path outside .git with its mtime, size and mode."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return found


def job_children() -> list[psutil.Process]:
    """Live job processes started by this test process."""
    live = []
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "cd4ml_nb.jobs" in child.cmdline():
                live.append(child)
        except psutil.Error:
            pass
    return live


# --- lifecycle ---------------------------------------------------------------------------------


def test_cancelling_an_ended_job_is_a_conflict_and_signals_nobody(repo, managers):
    manager = manager_of(managers, repo)
    job = manager.submit("nb.ipynb", {"pause": 0})
    assert manager.wait(job.id).state == "finished"
    wait_until(lambda: not job_children(), 120, "the job process exiting")
    launch_path = repo / ".cd4ml" / "jobs" / job.id / "launch.json"
    launch = json.loads(launch_path.read_text())
    assert launch["create_time"] == pytest.approx(launch["started"], abs=5)
    with deaf_sleep() as stranger:  # a process that now has the job's old pid
        launch_path.write_text(json.dumps({**launch, "pid": stranger.pid}))
        with pytest.raises(Conflict, match="already ended"):
            manager.cancel(job.id)
        assert stranger.poll() is None and not sigterm_pending(stranger.pid)
    assert not (launch_path.parent / "cancel").exists()
    assert manager.get(job.id).state == "finished"


def test_a_job_process_is_known_by_pid_and_start_time(repo, managers):
    manager = manager_of(managers, repo)
    with deaf_sleep() as proc:
        started = psutil.Process(proc.pid).create_time()
        reused = fake_job(manager, 1.0, state="running", launch={"pid": proc.pid, "create_time": started - 100})
        assert processes.launched_process({"pid": proc.pid, "create_time": started - 100}) is None
        job = manager.get(reused)  # same pid, another start time: the job's own process is gone
        assert job.state == "failed" and "exited without a result" in job.error
        with pytest.raises(Conflict):
            manager.cancel(reused)
        assert not sigterm_pending(proc.pid)

        own = fake_job(manager, 2.0, state="running", launch={"pid": proc.pid, "create_time": started})
        assert processes.launched_process({"pid": proc.pid, "create_time": started}).pid == proc.pid
        assert manager.get(own).state == "running"
        assert manager.cancel(own).state == "running"  # still stopping: SIGTERM is blocked in this one
        assert wait_until(lambda: sigterm_pending(proc.pid), 30, "SIGTERM reaching the job's process")


def test_queued_jobs_start_after_a_restart(repo, managers):
    before = manager_of(managers, repo, max_jobs=1)
    running = before.submit("nb.ipynb", {"pause": 600})
    queued = before.submit("nb.ipynb", {"pause": 0})
    assert before.get(queued.id).state == "queued"
    before.shutdown(cancel=False)  # the server stops; the job process lives on in its own session

    after = manager_of(managers, repo, max_jobs=1)  # the server starts again
    after.resume()
    assert after.get(running.id).state == "running"
    assert after.get(queued.id).state == "queued"  # the job still running counts against the cap
    after.cancel(running.id)  # a process this manager did not start, found by pid and start time
    done = wait_until(lambda: after.get(queued.id).state in jobs.TERMINAL and after.get(queued.id), 300,
                      "the queued job starting and ending with no new submit")
    assert done.state == "finished" and done.metrics == {"m": 0.0}
    assert after.get(running.id).state == "killed"


def test_the_cap_counts_job_processes_until_they_are_reaped(repo, managers):
    manager = manager_of(managers, repo, max_jobs=1)
    most, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            most[0] = max(most[0], len(job_children()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        submitted = [manager.submit("nb.ipynb", {"pause": 0}) for _ in range(3)]
        wait_until(lambda: all(manager.get(j.id).state in jobs.TERMINAL for j in submitted), 600,
                   "the three jobs ending")
        wait_until(lambda: not job_children() and not manager._procs, 120, "the job processes exiting")
    finally:
        stop.set()
        sampler.join()
    assert [manager.get(j.id).state for j in submitted] == ["finished"] * 3
    assert most[0] == 1


# --- listing and reading -----------------------------------------------------------------------


def test_the_job_list_is_paged_newest_first(repo, managers):
    manager = manager_of(managers, repo)
    ids = [fake_job(manager, created) for created in (1.0, 2.0, 3.0, 4.0, 5.0)]
    page, total = manager.list_page(2)
    assert [j.id for j in page] == [ids[4], ids[3]] and total == 5
    page, total = manager.list_page(2, offset=4)
    assert [j.id for j in page] == [ids[0]] and total == 5
    assert manager.list_page(2, offset=9) == ([], 5)
    assert [j.id for j in manager.list()] == ids[::-1]
    with pytest.raises(BadInput):
        manager.list_page(-1)


def test_paths_are_relative_to_the_server_root(repo, managers):
    manager = manager_of(managers, repo, root=repo / "sub")
    with pytest.raises(Forbidden):
        manager.submit("../nb.ipynb", {})
    job = manager.wait(manager.submit("nb.ipynb", {"pause": 0}).id)
    assert job.state == "finished" and job.path == "nb.ipynb"
    assert job.executed.startswith("cd4ml-runs/") and (repo / "sub" / job.executed).is_file()
    assert manager.html_path(job.id) == (repo / "sub" / job.html).resolve()
    assert git(repo, "status", "--porcelain") == ""  # the run folder is git-ignored
    assert JobManager(Project.discover(repo)).list() == []  # a server with another root sees other jobs
    with pytest.raises(NotFound):
        JobManager(Project.discover(repo)).get(job.id)


def test_reads_write_nothing(repo, managers):
    manager = manager_of(managers, repo)
    assert manager.list() == [] and manager.list_page(10) == ([], 0)
    with pytest.raises(NotFound):
        manager.get("0123456789ab")
    manager.resume()
    assert manager.prune(dry_run=True) == []
    assert not (repo / ".cd4ml").exists() and not (repo / "cd4ml-runs").exists()

    done = fake_job(manager, 1.0, html=True, output_bytes=10)
    died = fake_job(manager, 2.0, state="running", launch={"pid": 1, "create_time": 0.0})
    cancelled = fake_job(manager, 3.0, state=None)
    (repo / ".cd4ml" / "jobs" / cancelled / "cancel").touch()
    before = snapshot(repo)
    assert [j.state for j in manager.list()] == ["killed", "failed", "finished"]
    assert manager.list_page(1, 1)[0][0].id == died
    assert manager.html_path(done).read_text() == "<p>done</p>"
    assert JobManager(Project.discover(repo)).get(died).error == "the job process exited without a result"
    assert snapshot(repo) == before


# --- limits and retention ----------------------------------------------------------------------


def test_parameter_values_are_capped(repo, managers):
    manager = manager_of(managers, repo, max_parameter_bytes=1000)
    with pytest.raises(TooLarge, match=r"parameter 'label'.*max_parameter_bytes"):
        manager.submit("nb.ipynb", {"pause": 0, "label": "x" * 1000})  # 1002 bytes as JSON
    with pytest.raises(TooLarge, match="parameter 'label'"):
        manager_of(managers, repo).submit("nb.ipynb", {"label": "x" * 10_000_000})
    assert not (repo / ".cd4ml").exists()


def test_ended_jobs_beyond_the_count_are_pruned_with_their_run_folders(repo, managers):
    from mlflow.tracking import MlflowClient

    manager = manager_of(managers, repo, job_retention_count=1)
    first = manager.wait(manager.submit("nb.ipynb", {"pause": 0}).id)
    second = manager.wait(manager.submit("nb.ipynb", {"pause": 1}).id)
    assert first.state == second.state == "finished"
    wait_until(lambda: [j.id for j in manager.list()] == [second.id], 120, "the older job being pruned")
    assert not (repo / first.executed).exists() and not (repo / "cd4ml-runs" / first.id).exists()
    assert (repo / second.executed).is_file()
    client = MlflowClient(manager.project.tracking_uri)
    for job in (first, second):  # the MLflow runs and their artifacts stay
        assert client.get_run(job.run_id).info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(job.run_id)} >= {"nb.ipynb"}


def test_ended_jobs_past_the_age_are_pruned_but_never_live_ones(repo, managers):
    manager = manager_of(managers, repo, job_retention_days=30)
    old = fake_job(manager, 1.0, output_bytes=1000)
    recent = fake_job(manager, 2.0, output_bytes=1000)
    queued = fake_job(manager, 3.0, state=None)
    with deaf_sleep() as proc:  # its status says finished, but its process is still logging
        alive = fake_job(manager, 4.0, launch={"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()})
        for job_id in (old, queued, alive):
            backdate(repo / ".cd4ml" / "jobs" / job_id, 40)
        backdate(repo / "cd4ml-runs" / old, 40)
        removed = manager.prune()
        assert [(r.name, r.bytes) for r in removed] == [(old, pytest.approx(1000, abs=500))]
        assert {j.id for j in manager.list()} == {recent, queued, alive}
        assert not (repo / "cd4ml-runs" / old).exists() and (repo / "cd4ml-runs" / recent).is_dir()
        assert {r.name for r in manager.prune(keep=0)} == {recent}  # never the queued or the live one


def test_gc_keeps_live_jobs_and_mlflow_runs(repo, managers, capsys):
    from mlflow.tracking import MlflowClient

    assert main(["run", "nb.ipynb", "-q", "--no-html"]) == 0
    assert main(["run", "nb.ipynb", "-q", "--no-html", "-p", "pause", "1"]) == 0
    runs_dir = repo / ".cd4ml" / "runs"
    cli_runs = sorted(runs_dir.iterdir())
    unfinished = runs_dir / "20990101T000000Z-nb-0000"  # a run still going: no source copy yet
    unfinished.mkdir()
    manager = manager_of(managers, repo, max_jobs=1)
    running = manager.submit("nb.ipynb", {"pause": 600})
    queued = manager.submit("nb.ipynb", {"pause": 0})
    ended = fake_job(manager, 1.0, output_bytes=2 * 2**20)
    client = MlflowClient(manager.project.tracking_uri)
    experiment = client.get_experiment_by_name("try-random-forest").experiment_id
    run_ids = {r.info.run_id for r in client.search_runs([experiment]) if r.info.status == "FINISHED"}
    assert len(run_ids) == 2
    capsys.readouterr()

    assert main(["gc", "--dry-run", "--keep", "0"]) == 0
    said = capsys.readouterr().out
    assert f"would remove job {ended}" in said and re.search(r"would free 2\.\d MB", said)
    assert all(p.exists() for p in cli_runs) and (repo / "cd4ml-runs" / ended).exists()

    assert main(["gc", "--keep", "0"]) == 0
    said = capsys.readouterr().out
    assert f"removed job {ended}" in said
    assert re.search(r"removed 1 job\(s\) and 2 run folder\(s\), freed 2\.\d MB", said)
    assert not any(p.exists() for p in cli_runs) and unfinished.is_dir()
    assert not (repo / "cd4ml-runs" / ended).exists()
    assert {j.id: j.state for j in manager.list()} == {running.id: "running", queued.id: "queued"}
    assert {r.info.run_id for r in client.search_runs([experiment]) if r.info.status == "FINISHED"} == run_ids
    assert all(client.list_artifacts(run_id) for run_id in run_ids)
    assert main(["gc", "--days", "-1"]) == 2
    manager.cancel(queued.id)
    manager.cancel(running.id)
    assert manager.wait(running.id).state == "killed"
