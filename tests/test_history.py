"""One notebook, one honest history: a pair is one notebook, a stale side never runs, every run has
a kind, and assessment compares like with like.

One real git repository walked through the everyday workflow on two branches with real kernels
and a real SQLite store: the `.ipynb` runs on master, the `.py` on a feature branch, then a sweep, a
regression test and a worse plain run on the branch.
"""
from __future__ import annotations

import json
import os

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, git, init_repo, percent, write_ipynb

NOTEBOOK = percent(
    "import mlflow\nif depth < 0:\n    raise ValueError('depth must not be negative')",
    "accuracy = 0.5 + depth / 100\nmlflow.log_metric('accuracy', accuracy)",
    "if save:\n    import mlflow.pyfunc\n\n    class Constant(mlflow.pyfunc.PythonModel):\n"
    "        def predict(self, context, model_input):\n            return model_input\n\n"
    "    mlflow.pyfunc.log_model(name='model', python_model=Constant())",
    parameters="depth: int = 3\nsave: bool = False",
)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def runs_json(capsys, *argv: str) -> list[dict]:
    code, out, err = cli(capsys, "runs", "--json", "--limit", "100", *argv)
    assert code == 0, err
    return json.loads(out)["runs"]


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """master: the .ipynb ran (depth 3). feature: the .py ran, worse (depth 1), then a sweep of
    depth 6 and 7 (saving a model) and a regression test: the latest runs are not plain runs."""
    old, saved = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    repo = init_repo(tmp_path_factory.mktemp("history") / "repo", branch="master")
    write_ipynb(repo / "nb.ipynb", NOTEBOOK)
    os.chdir(repo)
    try:
        assert main(["pair", "nb.ipynb"]) == 0
        commit_all(repo, "a paired notebook")
        assert main(["run", "nb.ipynb", "-q", "--no-html"]) == 0
        git(repo, "checkout", "-q", "-b", "feature")
        assert main(["run", "nb.py", "-q", "--no-html", "-p", "depth", "1"]) == 0
        assert main(["sweep", "nb.ipynb", "--grid", "depth=6,7,7", "-p", "save", "true", "--parallel", "1",
                     "--metric", "accuracy", "-q"]) == 0
        assert main(["test", "nb.py", "-q"]) == 0
        yield repo
    finally:
        os.chdir(old)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def at(walk, monkeypatch):
    monkeypatch.chdir(walk)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return walk


def test_both_sides_of_a_pair_are_one_notebook(at, capsys):
    branch = runs_json(capsys, "--notebook", "nb.py")
    assert {r["notebook"] for r in branch} == {"nb.ipynb"}
    assert len(branch) == 5  # the .py run, the sweep and its 2 trials, the test run
    assert runs_json(capsys, "--notebook", "nb.ipynb") == branch
    base = runs_json(capsys, "--notebook", "nb.py", "--branch", "master")
    assert len(base) == 1 and base[0]["notebook"] == "nb.ipynb"
    code, out, err = cli(capsys, "compare", "--json", "--base", "master")
    assert code == 0, err
    sections = json.loads(out)["notebooks"]
    assert [s["notebook"] for s in sections] == ["nb.ipynb"]
    assert sections[0]["base"]["run_ids"] == [base[0]["run_id"]] and sections[0]["branch"] is not None


def test_every_run_has_a_kind_and_trials_are_children_of_their_sweep(at, capsys):
    runs = runs_json(capsys)
    kinds = sorted(r["kind"] for r in runs)
    assert kinds == ["run", "sweep", "test", "trial", "trial"]
    sweep = next(r for r in runs if r["kind"] == "sweep")
    trials = sorted((r for r in runs if r["kind"] == "trial"), key=lambda r: r["start_time"])
    assert all(t["parent_run_id"] == sweep["run_id"] for t in trials)
    # each trial starts when it runs (--parallel 1: one after the other), not when the sweep did
    assert sweep["start_time"] <= trials[0]["start_time"] < trials[1]["start_time"]
    assert trials[0]["end_time"] <= trials[1]["start_time"]
    assert [r["kind"] for r in runs_json(capsys, "--kind", "trial")] == ["trial", "trial"]
    code, out, _ = cli(capsys, "runs")
    assert code == 0 and f"trial of {sweep['run_id'][:8]}" in out and "sweep" in out and " test " in out


def test_the_gate_judges_plain_runs_and_flags_differing_parameters(at, capsys):
    code, out, err = cli(capsys, "gate", "--metric", "accuracy", "--max-regression", "0.001", "--base", "master")
    assert code == 1, out + err  # the worse plain run (depth 1), not the later test (0.53) nor the better trials
    assert "FAIL nb.ipynb accuracy (maximize): base 0.53 -> branch 0.51" in out
    assert "parameters differ: depth" in out
    code, out, err = cli(capsys, "compare", "--json", "--base", "master")
    section = json.loads(out)["notebooks"][0]
    assert section["parameters_differ"] == ["depth"] and section["branch"]["metrics"]["accuracy"] == 0.51
    code, out, err = cli(capsys, "gate", "--metric", "accuracy", "--base", "master", "--kind", "test")
    assert code == 2 and "has no FINISHED run of kind 'test' of nb.ipynb" in err


def test_promote_if_gate_passes_gates_the_run_it_promotes(at, capsys):
    trials = runs_json(capsys, "--kind", "trial")
    best = max(trials, key=lambda r: r["metrics"]["accuracy"])
    code, out, err = cli(capsys, "promote", best["run_id"][:10], "--model", "nb", "--if-gate-passes",
                         "--metric", "accuracy", "--base", "master")
    assert code == 0, out + err
    assert "PASS nb.ipynb accuracy (maximize): base 0.53 -> branch 0.57" in out
    assert "models:/nb@champion" in out


def test_a_sweep_says_how_many_duplicate_trials_it_dropped(at, capsys):
    # the walk asked for depth=6,7,7: 2 trials ran (counted above); the message is checked on a plan
    from cd4ml_nb import notebooks, params, sweep

    contract = params.read_contract(notebooks.read(at / "nb.ipynb").node, "nb.ipynb")
    planned = sweep.plan(contract, "nb.ipynb", {"depth": ["6", "7", "7", "6"]})
    assert (len(planned.trials), planned.duplicates) == (2, 2)


def test_a_stale_side_is_refused_and_sync_runs_the_new_code(at, capsys):
    before = len(runs_json(capsys))
    text = (at / "nb.py").read_text()
    (at / "nb.py").write_text(text.replace("accuracy = 0.5 + depth / 100", "accuracy = 0.9 + depth / 100"))
    ipynb = (at / "nb.ipynb").read_bytes()
    code, out, err = cli(capsys, "run", "nb.ipynb", "-q", "--no-html")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("cd4ml-nb: error: nb.ipynb: the two sides of its pair differ, nb.py is newer")
    assert "`cd4ml-nb sync nb.ipynb`" in err and "--sync" in err
    assert len(runs_json(capsys)) == before and (at / "nb.ipynb").read_bytes() == ipynb  # no run, nothing written
    for argv in (["test", "nb.ipynb", "-q"], ["sweep", "nb.py", "--grid", "depth=1,2", "-q"]):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and "nb.py is newer" in out + err, argv
    assert len(runs_json(capsys)) == before
    code, out, err = cli(capsys, "run", "nb.ipynb", "-q", "--no-html", "--sync", "--json")
    assert code == 0, err
    assert json.loads(out)["metrics"]["accuracy"] == pytest.approx(0.93)
    assert main(["check"]) == 0
    git(at, "checkout", "-q", "--", ".")  # the other tests see the walk's notebook


def test_runs_says_why_a_run_failed(at, capsys):
    code, _, _ = cli(capsys, "run", "nb.ipynb", "-q", "--no-html", "-p", "depth", "-1")
    assert code == 1
    failed = runs_json(capsys)[0]
    assert failed["status"] == "FAILED" and failed["reason"] == "cell-exception" and failed["failed_cell"] is not None
    assert "depth must not be negative" in failed["message"]
    code, out, _ = cli(capsys, "runs", "--limit", "1")
    assert f"cell-exception at cell {failed['failed_cell']}: " in out and "depth must not be negative" in out
