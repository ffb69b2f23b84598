"""The job manager: each job in its own process, a limit with a queue, state found again on disk."""
from __future__ import annotations

import pytest

from cd4ml_nb.exceptions import NotFound, ParameterError
from cd4ml_nb.jobs import JobManager
from cd4ml_nb.project import Project

from nbfactory import commit_all, init_repo, percent, write_ipynb


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "jobs", branch="try-random-forest")
    write_ipynb(repo / "nb.ipynb", percent("import time, mlflow\ntime.sleep(pause)\nmlflow.log_metric('m', pause)",
                                           parameters="pause: float = 0.0"))
    commit_all(repo)
    return Project.discover(repo)


def test_limit_queues_and_a_new_manager_finds_the_jobs(project):
    manager = JobManager(project, limit=1)
    first = manager.submit("nb.ipynb", {"pause": 3})
    second = manager.submit("nb.ipynb", {"pause": 0})
    assert manager.get(second.id).state == "queued"  # the limit is one running job
    assert manager.wait(first.id).state == "finished"
    done = manager.wait(second.id)
    assert done.state == "finished" and done.metrics == {"m": 0.0}
    assert done.executed.startswith("cd4ml-runs/")  # visible, so JupyterLab can open it ...
    from nbfactory import git

    assert git(project.root, "status", "--porcelain") == ""  # ... and git-ignored
    again = JobManager(project)  # e.g. after a page reload or a server restart
    assert [j.id for j in again.list()] == [second.id, first.id]
    assert {j.state for j in again.list()} == {"finished"}


def test_a_queued_job_cancelled_never_starts(project):
    manager = JobManager(project, limit=1)
    running = manager.submit("nb.ipynb", {"pause": 30})
    queued = manager.submit("nb.ipynb", {"pause": 0})
    assert manager.cancel(queued.id).state == "killed"
    manager.cancel(running.id)
    assert manager.wait(running.id).state == "killed"
    assert manager.get(queued.id).run_id is None


def test_bad_requests(project):
    manager = JobManager(project)
    with pytest.raises(ParameterError):
        manager.submit("nb.ipynb", {"pause": "soon"})
    with pytest.raises(NotFound):
        manager.get("../../etc")
    assert manager.list() == []
