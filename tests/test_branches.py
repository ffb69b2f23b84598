"""Branches over time: a real git repository walked through a fast-forward merge, a ``--no-ff``
merge, a squash merge, an unmerged deletion and reused branch names, with runs of real kernels in a
real SQLite store; ``branches sync`` records each state, archives after the grace period only,
changes nothing the second time; ``restore`` brings an archived experiment back."""
from __future__ import annotations

import json
import os

import pytest

from cd4ml_nb import branches, tracking
from cd4ml_nb.cli import main
from cd4ml_nb.project import Project

from nbfactory import commit_all, git, init_repo, percent, write_ipynb

NOTEBOOK = percent("if log:\n    import mlflow\n    mlflow.log_metric('accuracy', 0.5 + depth / 100)",
                   parameters="depth: int = 3\nlog: bool = False")
pytestmark = pytest.mark.timeout(900)  # the module's repository takes nine kernel runs


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run(repo, depth: int, log: bool = False) -> None:
    """One kernel run; only ``log`` imports MLflow in the kernel (seconds on a busy machine)."""
    assert main(["run", "nb.ipynb", "-q", "--no-html", "-p", "depth", str(depth), "-p", "log", str(log)]) == 0


def edit(repo, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text)
    return commit_all(repo, message)


def snapshot(repo) -> dict:
    """Every experiment's lifecycle and tags, as MLflow itself reads them."""
    from mlflow.tracking import MlflowClient
    from mlflow.entities import ViewType

    c = MlflowClient(tracking_uri=f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    return {e.name: (e.lifecycle_stage, dict(e.tags)) for e in c.search_experiments(view_type=ViewType.ALL)}


def listed(capsys) -> dict[str, dict]:
    code, out, err = cli(capsys, "branches", "--json")
    assert code == 0, err
    return {r["experiment"]: r for r in json.loads(out)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """master ran; ``ff`` fast-forwarded, ``noff`` merged with a merge commit, ``sq`` squash-merged
    then deleted, ``rb`` rebase-merged (its commits cherry-picked) then deleted, ``gone`` deleted
    unmerged — each ran once on its own commits."""
    old, saved = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    repo = init_repo(tmp_path_factory.mktemp("branches") / "repo", branch="master")
    write_ipynb(repo / "nb.ipynb", NOTEBOOK)
    (repo / ".gitignore").write_text(".cd4ml/\n")
    commit_all(repo, "a notebook")
    os.chdir(repo)
    try:
        run(repo, 1)
        shas = {"root": git(repo, "rev-parse", "HEAD")}
        git(repo, "checkout", "-q", "-b", "ff")
        shas["ff"] = edit(repo, "ff.txt", "ff\n", "ff work")
        run(repo, 2)
        git(repo, "checkout", "-q", "master")
        git(repo, "merge", "-q", "--ff-only", "ff")
        git(repo, "checkout", "-q", "-b", "noff")
        shas["noff"] = edit(repo, "noff.txt", "noff\n", "noff work")
        run(repo, 3, log=True)
        git(repo, "checkout", "-q", "master")
        edit(repo, "main.txt", "main moves on\n", "master work")
        git(repo, "merge", "-q", "--no-ff", "-m", "merge noff", "noff")
        shas["noff-merge"] = git(repo, "rev-parse", "HEAD")
        git(repo, "checkout", "-q", "-b", "sq")
        edit(repo, "sq.txt", "one\n", "sq one")
        edit(repo, "sq.txt", "one\ntwo\n", "sq two")
        run(repo, 4)
        git(repo, "checkout", "-q", "master")
        edit(repo, "main.txt", "main moves on again\n", "master work 2")
        git(repo, "merge", "-q", "--squash", "sq")
        shas["sq-merge"] = commit_all(repo, "squashed sq")
        git(repo, "branch", "-q", "-D", "sq")
        git(repo, "checkout", "-q", "-b", "rb")
        edit(repo, "rb.txt", "1\n", "rb one")
        edit(repo, "rb.txt", "1\n2\n", "rb two")
        run(repo, 9)
        git(repo, "checkout", "-q", "master")
        # master moves first: a cherry-pick onto the branch's own fork point within the same second
        # recreates the very same commits (a fast-forward), as CI once met
        edit(repo, "main.txt", "main moves on a third time\n", "master work 3")
        git(repo, "cherry-pick", "rb~1", "rb")  # a rebase merge: each commit copied onto master
        shas["rb-merge"] = git(repo, "rev-parse", "HEAD")
        git(repo, "branch", "-q", "-D", "rb")
        git(repo, "checkout", "-q", "-b", "gone")
        edit(repo, "gone.txt", "abandoned\n", "gone work")
        run(repo, 5)
        git(repo, "checkout", "-q", "master")
        git(repo, "branch", "-q", "-D", "gone")
        shas["master"] = git(repo, "rev-parse", "HEAD")
        yield repo, shas
    finally:
        os.chdir(old)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def test_sync_records_merges_and_archives_after_the_grace_period_only(repo, capsys):
    repo, shas = repo
    from mlflow.tracking import MlflowClient

    own = MlflowClient(tracking_uri=f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    by_hand = own.create_experiment("named-by-hand")  # `run --experiment NAME`: no branch's, left alone
    own.set_terminated(own.create_run(by_hand).info.run_id)
    before = listed(capsys)
    assert {r["state"] for r in before.values()} == {"active"}  # nothing synced yet
    assert "named-by-hand" not in before
    code, out, err = cli(capsys, "branches", "sync", "--json")
    assert code == 0, err
    rows = listed(capsys)
    assert rows["ff"]["state"] == "merged" and rows["ff"]["merge_commit"] == shas["ff"]
    assert rows["noff"]["state"] == "merged" and rows["noff"]["merge_commit"] == shas["noff-merge"]
    assert rows["sq"]["state"] == "squash-merged" and rows["sq"]["merge_commit"] == shas["sq-merge"]
    assert rows["rb"]["state"] == "squash-merged" and rows["rb"]["merge_commit"] == shas["rb-merge"]
    assert rows["gone"]["state"] == "deleted" and not rows["gone"]["archived"]  # within 30 days
    assert rows["master"]["state"] == "active" and rows["master"]["runs"] == 1
    assert all(rows[b]["merged_into"] == "master" for b in ("ff", "noff", "sq"))
    assert rows["noff"]["runs"] == 1 and rows["noff"]["latest"] == pytest.approx(0.53)
    assert rows["noff"]["metric"] == "accuracy" and rows["noff"]["best"] == pytest.approx(0.53)

    first = snapshot(repo)
    assert first["named-by-hand"] == ("active", {})
    code, out, err = cli(capsys, "branches", "sync", "--json")
    assert code == 0 and json.loads(out) == [], out
    assert snapshot(repo) == first  # a second sync changes nothing

    code, out, err = cli(capsys, "branches", "sync", "--archive-after", "0", "--json")
    assert code == 0 and [(c["experiment"], c["key"]) for c in json.loads(out)] == [("gone", "lifecycle")]
    after = snapshot(repo)
    assert after["gone"][0] == "deleted" and after["ff"] == first["ff"]
    assert listed(capsys)["gone"]["archived"] is True
    code, out, err = cli(capsys, "branches", "sync", "--archive-after", "0", "--json")
    assert code == 0 and json.loads(out) == [] and snapshot(repo) == after


def test_runs_of_merged_branches_stay_readable(repo, capsys):
    repo, shas = repo
    for branch, depth in (("ff", 2), ("noff", 3), ("sq", 4)):
        code, out, err = cli(capsys, "runs", "--branch", branch, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["experiment"] == branch and [r["params"]["depth"] for r in data["runs"]] == [str(depth)]
    code, out, err = cli(capsys, "compare", "--branch", "noff", "--json")
    assert code == 0, err
    assert "0.53" in out


def test_a_reused_name_gets_a_new_experiment_and_restore_brings_the_old_back(repo, capsys):
    repo, shas = repo
    assert snapshot(repo)["gone"][0] == "deleted"  # archived by the test before
    git(repo, "checkout", "-q", "-b", "gone")
    try:
        edit(repo, "gone.txt", "second try\n", "gone again")
        run(repo, 6)
        capsys.readouterr()
        new = f"gone@{shas['master'][:7]}"
        code, out, err = cli(capsys, "runs", "--json")
        assert code == 0 and json.loads(out)["experiment"] == new, out
        assert [r["params"]["depth"] for r in json.loads(out)["runs"]] == ["6"]
        stored = snapshot(repo)
        assert stored[new][1][branches.BRANCH] == "gone" and stored[new][1][branches.FORK] == shas["master"]
        assert stored["gone"][0] == "deleted"  # the archived history was not mixed in, nor restored

        code, out, err = cli(capsys, "branches", "restore", "gone")
        assert code == 0 and "'gone'" in out, err
        assert snapshot(repo)["gone"][0] == "active"
        assert tracking.branch_experiment(Project.discover(repo), "gone") == new  # still the new line's
        code, out, err = cli(capsys, "branches", "sync", "--archive-after", "0", "--json")
        assert code == 0 and [(c["experiment"], c["key"], c["new"]) for c in json.loads(out)] == \
            [(new, branches.STATE, "active")], out  # the restored one stays; the new line is active
        code, out, err = cli(capsys, "branches", "sync", "--archive-after", "0", "--json")
        assert code == 0 and json.loads(out) == [], out
        rows = listed(capsys)
        assert rows["gone"]["state"] == "deleted" and not rows["gone"]["archived"]
        assert rows[new]["state"] == "active" and rows[new]["branch"] == "gone"
    finally:
        git(repo, "checkout", "-q", "master")


def test_a_branch_recreated_from_another_point_gets_a_new_experiment(repo, capsys):
    repo, shas = repo
    git(repo, "checkout", "-q", "-b", "topic")
    try:
        edit(repo, "topic.txt", "first\n", "topic work")
        run(repo, 7)
        project = Project.discover(repo)
        assert tracking.branch_experiment(project, "topic") == "topic"
        git(repo, "checkout", "-q", "master")
        git(repo, "branch", "-q", "-D", "topic")  # no sync in between
        git(repo, "checkout", "-q", "-b", "topic", shas["root"])
        edit(repo, "topic.txt", "elsewhere\n", "topic from the root")
        run(repo, 8)
        capsys.readouterr()
        new = f"topic@{shas['root'][:7]}"
        assert tracking.branch_experiment(project, "topic") == new
        code, out, err = cli(capsys, "runs", "--branch", "topic", "--json")
        assert json.loads(out)["experiment"] == new and len(json.loads(out)["runs"]) == 1
        assert snapshot(repo)["topic"][0] == "active"
    finally:
        git(repo, "checkout", "-q", "master")


def test_sync_refuses_an_unknown_base(repo, capsys):
    code, out, err = cli(capsys, "branches", "sync", "--base", "no-such-branch")
    assert code == 2 and err.count("\n") == 1 and "no-such-branch" in err


@pytest.fixture
def jp_root_dir(repo):
    return repo[0]


async def test_the_lab_lists_branches_and_filters_runs_by_branch(jp_fetch, repo):
    from test_routes import call

    root, shas = repo
    code, data = await call(jp_fetch, "branches")
    assert code == 200, data
    assert data["base"] == "master" and data["current"] == "master" and data["experiment"] == "master"
    rows = {r["experiment"]: r for r in data["branches"]}
    assert rows["noff"]["state"] == "merged" and rows["noff"]["merge_commit"] == shas["noff-merge"]
    assert rows["gone"]["state"] == "deleted" and rows[f"gone@{shas['master'][:7]}"]["state"] == "active"
    assert rows[f"gone@{shas['master'][:7]}"]["query"] == f"gone@{shas['master'][:7]}"
    assert rows["gone"]["query"] == "gone@" and rows["noff"]["query"] == "noff"  # `gone` is on its new line
    for experiment, row in rows.items():
        if row["archived"]:
            continue
        code, page = await call(jp_fetch, "runs", params={"branch": row["query"]})
        assert code == 200 and page["experiment"] == experiment, (experiment, page)
        assert len(page["runs"]) == row["runs"]
