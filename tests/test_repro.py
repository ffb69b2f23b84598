"""`cd4ml-nb reproduce`: re-run a past run at its commit, in a worktree, and prove it reproduced.

Real git repositories (commits, uncommitted edits, worktrees), real kernels, real SQLite stores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, digest_tree, git, init_repo, percent, write_ipynb


def scorer(offset: int) -> str:
    return percent(
        "import mlflow, pandas as pd\nimport cd4ml_nb\n"
        "df = pd.read_csv(data_path)\ncd4ml_nb.log_dataset(df, 'sales')",
        f"OFFSET = {offset}\nmlflow.log_metric('score', float(df['x'].mean()) * alpha + OFFSET)",
        parameters='alpha: float = 1.0  # weight\ndata_path: str = "data.csv"',
    )


def write_data(path: Path, rows: int = 50, extra: bool = False) -> None:
    lines = ["x,y" + (",z" if extra else "")] + [f"{i},{i % 3}" + (",1" if extra else "") for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo", branch="master")
    write_ipynb(repo / "score.ipynb", scorer(0))
    write_data(repo / "data.csv")
    commit_all(repo, "score notebook")
    monkeypatch.chdir(repo)
    return repo


def client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")


def run(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["run", *args, "-q", "--no-html", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["run_id"]


def test_reproduce_an_earlier_dirty_run_after_further_commits(repo, capsys):
    write_ipynb(repo / "score.ipynb", scorer(10))  # uncommitted edit: the run depends on it
    original = run(capsys, "score.ipynb", "-p", "alpha", "2")
    assert client(repo).get_run(original).data.metrics == {"score": 24.5 * 2 + 10}

    commit_all(repo, "offset 10")
    write_ipynb(repo / "score.ipynb", scorer(100))
    write_data(repo / "data.csv", rows=80)
    commit_all(repo, "offset 100, more data")
    write_ipynb(repo / "score.ipynb", scorer(1000))  # more uncommitted work, and an untracked file
    (repo / "notes.txt").write_text("work in progress\n")
    before, status = digest_tree(repo), git(repo, "status", "--porcelain")

    capsys.readouterr()
    assert main(["reproduce", original, "-q"]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED" in out and "ok   score: 59.0 -> 59.0" in out

    assert digest_tree(repo) == before and git(repo, "status", "--porcelain") == status
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # the temporary worktree is gone
    c = client(repo)
    first = c.get_run(original)
    (again,) = c.search_runs([first.info.experiment_id], filter_string=f"tags.`cd4ml.reproduces` = '{original}'")
    assert again.info.status == "FINISHED" and again.info.experiment_id == first.info.experiment_id
    assert again.data.metrics == first.data.metrics and again.data.params == first.data.params
    assert again.data.tags["mlflow.source.git.commit"] == first.data.tags["mlflow.source.git.commit"]
    assert again.data.tags["cd4ml.data.sales.digest"] == first.data.tags["cd4ml.data.sales.digest"]
    assert again.data.tags["cd4ml.env.hash"] == first.data.tags["cd4ml.env.hash"]


def test_unseeded_random_metric_does_not_reproduce(repo, capsys):
    write_ipynb(repo / "noise.ipynb", percent("import mlflow, numpy as np\nmlflow.log_metric('noise', np.random.rand())"))
    commit_all(repo, "noise")
    original = run(capsys, "noise.ipynb")
    capsys.readouterr()
    assert main(["reproduce", original, "-q"]) == 1
    out = capsys.readouterr().out
    assert "NOT REPRODUCED: differing axes: metrics: noise" in out and "beyond rtol 1e-06" in out
    assert "DIFF noise" in out


def test_changed_external_data_fails_unless_allowed(repo, tmp_path, capsys):
    external = tmp_path / "warehouse.csv"  # data outside git: the commit does not pin it
    write_data(external)
    original = run(capsys, "score.ipynb", "-p", "data_path", str(external))
    write_data(external, extra=True)  # a column is added; the metric does not depend on it
    capsys.readouterr()
    assert main(["reproduce", original, "-q"]) == 1
    out = capsys.readouterr().out
    assert "data: sales changed" in out and "--allow-data-change" in out and "ok   score" in out
    assert main(["reproduce", original, "-q", "--allow-data-change", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reproduced"] and result["data_changed"] == ["sales"]


def test_reproduce_unknown_run_is_bad_input(repo, capsys):
    assert main(["reproduce", "0123456789abcdef", "-q"]) == 2
    assert "no run '0123456789abcdef'" in capsys.readouterr().err
