"""`GET runs` over a store with 1,000 runs, through a real `jupyter server`: pages of at most 500,
every run once, newest first, the notebook filter, and a root in a subfolder of the repository."""
from __future__ import annotations

import pytest

from nbfactory import commit_all, init_repo, percent
from test_server_root import served

COUNT = 1000


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from mlflow.entities import Metric, Param

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    repo = init_repo(tmp_path_factory.mktemp("runs") / "repo", branch="master")
    (repo / "lab").mkdir()
    for name in ("a", "b"):
        (repo / "lab" / f"{name}.py").write_text(percent("x = 1"))
    commit_all(repo)
    project = Project.discover(repo)
    c = tracking.client(project)
    experiment = tracking.ensure_experiment(c, project, "master")
    for i in range(COUNT):
        run = c.create_run(experiment, start_time=1_700_000_000_000 + i,
                           tags={tracking.NOTEBOOK: f"lab/{'ab'[i % 2]}.py"})
        c.log_batch(run.info.run_id, metrics=[Metric("score", i, 0, 0)], params=[Param("i", str(i))])
        c.set_terminated(run.info.run_id, "FINISHED")
    return repo


def pages(server, query: dict) -> list[list[dict]]:
    found, token = [], None
    while True:
        reply = server.call("GET", "runs", {**query, **({"page_token": token} if token else {})})
        assert reply.status == 200, reply.body
        data = reply.json()
        found.append(data["runs"])
        token = data["next_page_token"]
        if not token:
            return found


def test_a_thousand_runs_page_by_page(repo):
    with served(repo / "lab") as server:
        listed = pages(server, {"max_results": "500"})
        assert [len(p) for p in listed] == [500, 500]
        runs = [r for p in listed for r in p]
        assert len({r["run_id"] for r in runs}) == COUNT
        assert [int(r["params"]["i"]) for r in runs] == list(range(COUNT - 1, -1, -1))  # newest first
        assert runs[0]["notebook"] == "b.py"  # relative to Jupyter's root, not the repository
        only_a = [r for p in pages(server, {"max_results": "300", "notebook": "a.py"}) for r in p]
        assert len(only_a) == COUNT // 2 and {r["notebook"] for r in only_a} == {"a.py"}
        too_many = server.call("GET", "runs", {"max_results": "100000"})
        assert too_many.status == 200 and len(too_many.json()["runs"]) == 500  # capped, not refused


def test_a_run_whose_heartbeat_expires_while_the_server_runs_is_shown_orphaned(tmp_path):
    """The panel and dashboard read `GET runs`: a run another host stopped beating for is FAILED
    (orphaned) there, as in `cd4ml-nb runs`, not only at server start; a fresh heartbeat stays RUNNING."""
    import time

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    from nbfactory import wait_until

    repo = init_repo(tmp_path / "repo", branch="master")
    (repo / "train.py").write_text(percent("x = 1"))
    commit_all(repo)
    project = Project.discover(repo)
    c = tracking.client(project)
    experiment = tracking.ensure_experiment(c, project, "master")

    def running(n: int, beat: float) -> str:
        tags = {tracking.RUNNER: f"other-host:{n}", tracking.HEARTBEAT: tracking.heartbeat_value(beat)}
        return c.create_run(experiment, tags=tags).info.run_id

    canary = running(0, time.time() - 10_000)
    with served(repo) as server:
        # the start-up pass has looked (it ended the canary): what expires now, only GET runs can see
        wait_until(lambda: c.get_run(canary).info.status == "FAILED", 120, "the start-up pass over orphans")
        stale, fresh = running(1, time.time() - 10_000), running(2, time.time() + 600)
        reply = server.call("GET", "runs", {"branch": "master"})
        assert reply.status == 200, reply.body
        status = {r["run_id"]: r["status"] for r in reply.json()["runs"]}
    assert status == {canary: "FAILED", stale: "FAILED", fresh: "RUNNING"}
    assert c.get_run(stale).data.tags[tracking.REASON] == "orphaned"
