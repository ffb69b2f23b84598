"""compare, gate and report in a repository with several notebooks: each one assessed on its own.

Real git repository and SQLite store. Runs are recorded through the project's own tracking
functions (as `cd4ml-nb run` tags them); only the `ci` test starts real kernels.
"""
from __future__ import annotations

import json
import os

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, git, init_repo, percent, write_ipynb
from test_run_ids import record_run

TRAIN = percent("import mlflow\nmlflow.log_metric('loss', loss)\nmlflow.log_metric('accuracy', 1 - loss / 10)",
                parameters="loss: float = 1.0")
NEW = percent("import mlflow\nmlflow.log_metric('loss', 5.0)\nmlflow.log_metric('rmse', 3.0)")
NO_BASE = "notebooks/new.ipynb: no base: run it on master first: `cd4ml-nb run notebooks/new.ipynb`"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """master: train (loss 1.0, its model is demand@champion) and old; feature: train (loss 1.05) and new."""
    old, saved = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    repo = init_repo(tmp_path_factory.mktemp("notebooks") / "repo", branch="master")
    (repo / "notebooks").mkdir()
    write_ipynb(repo / "notebooks" / "train.ipynb", TRAIN)
    os.chdir(repo)
    try:
        assert main(["pair", "notebooks/train.ipynb"]) == 0
        commit_all(repo, "train notebook")
        champion = record_run(repo, "notebooks/train.ipynb", {"loss": 1.0, "accuracy": 0.9}, model=True)
        record_run(repo, "notebooks/old.ipynb", {"loss": 0.5})  # a notebook the branch no longer runs
        assert main(["promote", champion, "--model", "demand"]) == 0
        git(repo, "checkout", "-q", "-b", "feature")
        write_ipynb(repo / "notebooks" / "new.ipynb", NEW)
        assert main(["pair", "notebooks/new.ipynb"]) == 0
        commit_all(repo, "a new notebook")
        record_run(repo, "notebooks/train.ipynb", {"loss": 1.05, "accuracy": 0.895})
        record_run(repo, "notebooks/new.py", {"loss": 5.0, "rmse": 3.0})  # recorded under the .py side (old runs)
        yield repo
    finally:
        os.chdir(old)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved



def gate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["gate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_notebook_without_base_does_not_block_the_others(here, capsys):
    code, out, err = gate(capsys, "--metric", "loss", "--max-regression", "10%")
    assert code == 0, err
    assert "PASS notebooks/train.ipynb loss" in out and NO_BASE in out
    code, out, _ = gate(capsys, "--metric", "loss", "--max-regression", "1%")
    assert code == 1 and "FAIL notebooks/train.ipynb loss" in out and NO_BASE in out


def test_notebook_selects_either_side_of_a_pair(here, capsys):
    code, out, err = gate(capsys, "--metric", "loss", "--max-regression", "10%", "--notebook", "notebooks/train.py")
    assert code == 0, err
    assert "PASS notebooks/train.ipynb loss" in out and "new.py" not in out
    code, out, err = gate(capsys, "--metric", "loss", "--notebook", "notebooks/new.ipynb")
    assert code == 2 and "no base: run it on master first: `cd4ml-nb run notebooks/new.ipynb`" in err
    code, _, err = gate(capsys, "--metric", "loss", "--notebook", "notebooks/absent.py")
    assert code == 2 and "no FINISHED run of notebooks/absent.py" in err


def test_nothing_to_evaluate_is_exit_2_saying_what_was_logged(here, capsys):
    code, _, err = gate(capsys, "--metric", "rmse")
    assert code == 2
    assert "notebooks/train.ipynb: metric 'rmse' was not logged" in err and "(logged: accuracy, loss)" in err
    assert NO_BASE in err
    code, _, err = gate(capsys, "--metric", "loss", "--metric", "precision")
    assert code == 2 and "metric 'precision' was not logged" in err and "accuracy, loss" in err
    code, _, err = gate(capsys, "--metric", "loss", "--base", "develop")
    assert code == 2 and "base branch 'develop' has no FINISHED run of notebooks/train.ipynb" in err


def test_against_a_registered_model_checks_the_notebook_it_came_from(here, capsys):
    code, out, err = gate(capsys, "--metric", "loss", "--max-regression", "10%", "--against", "models:/demand@champion")
    assert code == 0, out + err
    assert "PASS notebooks/train.ipynb loss" in out and "new.py" not in out
    code, _, err = gate(capsys, "--metric", "loss", "--against", "models:/demand@champion",
                        "--notebook", "notebooks/new.py")
    assert code == 2 and "comes from a run of notebooks/train.ipynb" in err


def test_compare_per_notebook_and_selected(here, capsys):
    assert main(["compare", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {nb["notebook"]: nb for nb in data["notebooks"]}
    assert set(by_name) == {"notebooks/train.ipynb", "notebooks/new.ipynb", "notebooks/old.ipynb"}
    assert by_name["notebooks/new.ipynb"]["base"] is None
    assert main(["compare", "--json", "--notebook", "notebooks/new.py"]) == 0
    assert [nb["notebook"] for nb in json.loads(capsys.readouterr().out)["notebooks"]] == ["notebooks/new.ipynb"]
    assert main(["compare", "--notebook", "notebooks/new.py"]) == 0
    assert "no base: run it on master first" in capsys.readouterr().out


def test_report_gates_each_notebook_on_its_own(here, capsys, tmp_path):
    out = tmp_path / "r.md"
    assert main(["report", "--metric", "loss", "--max-regression", "10%", "-o", str(out)]) == 0, capsys.readouterr()
    text = out.read_text()
    assert "| loss | minimize | 1 | 1.05 | 0.05 | +5.00% | ✅ pass |" in text
    assert NO_BASE in text and "## `notebooks/new.ipynb`" in text
    assert main(["report", "--notebook", "notebooks/train.py", "--format", "html", "-o", str(out)]) == 0
    page = out.read_text()
    assert "<h2><code>notebooks/train.ipynb</code></h2>" in page
    assert "<h2><code>notebooks/new.ipynb</code></h2>" not in page


CI_CONFIG = """
[tool.cd4ml_nb]
ci_notebooks = ["notebooks/train.ipynb"]
ci_gate = [{metric = "loss", goal = "minimize", max_regression = "5%"}]
"""


@pytest.mark.slow
def test_ci_passes_when_the_branch_adds_a_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "ci", branch="master")
    (repo / "notebooks").mkdir()
    write_ipynb(repo / "notebooks" / "train.ipynb", TRAIN)
    (repo / "pyproject.toml").write_text(CI_CONFIG)
    monkeypatch.chdir(repo)
    assert main(["pair", "notebooks/train.ipynb"]) == 0
    commit_all(repo)
    assert main(["ci"]) == 0, capsys.readouterr()  # the base's smoke run: what ci on a branch compares with
    git(repo, "checkout", "-q", "-b", "feature")
    write_ipynb(repo / "notebooks" / "new.ipynb", NEW)
    assert main(["pair", "notebooks/new.ipynb"]) == 0
    commit_all(repo, "a new notebook")
    assert main(["run", "notebooks/new.py", "-q", "--no-html"]) == 0
    capsys.readouterr()
    assert main(["ci"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    # ci compares smoke runs with the base's smoke runs: the branch's new notebook is no ci notebook
    assert "PASS notebooks/train.ipynb loss" in out and "new.ipynb" not in out and "ci passed" in out
