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
