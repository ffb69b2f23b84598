"""papermill's own test notebooks (shipped inside the installed package) through `cd4ml-nb`:
error-marker cells, the `python` kernel alias, parameters cells papermill half-infers, remote paths."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbfactory import commit_all, init_repo


def corpus() -> Path:
    import papermill

    return Path(papermill.__file__).parent / "tests" / "notebooks"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo")
    for name in ("broken1.ipynb", "complex_parameters.ipynb", "simple_execute.ipynb"):
        shutil.copy(corpus() / name, repo / name)
    commit_all(repo)
    return repo


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", *args], cwd=repo, capture_output=True, text=True,
                          timeout=600)


def only_run(repo: Path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    (run,) = c.search_runs([e.experiment_id for e in c.search_experiments()])
    return run


def test_failed_cell_counts_the_error_marker_cells_papermill_drops(repo):
    done = cli(repo, "run", "broken1.ipynb", "-q", "--no-html")
    assert done.returncode == 1, done.stderr
    tags = only_run(repo).data.tags
    source = json.loads((repo / "broken1.ipynb").read_text())["cells"]
    assert "".join(source[int(tags["cd4ml.failed_cell"])]["source"]) == "assert False"
    assert tags["cd4ml.failed_cell.ename"] == "AssertionError"
    assert "Exception encountered" not in done.stdout  # -q: no papermill banner (shown unquiet: test_papermill_door)


def test_the_python_kernel_alias_runs_on_python3(repo):
    nb = json.loads((repo / "simple_execute.ipynb").read_text())
    nb["metadata"]["kernelspec"]["name"] = "python"
    (repo / "simple_execute.ipynb").write_text(json.dumps(nb))
    done = cli(repo, "run", "simple_execute.ipynb", "-q", "--no-html", "-p", "msg", "hello")
    assert done.returncode == 0, done.stderr
    assert only_run(repo).data.tags["cd4ml.kernel"] == "python3"


def test_a_parameters_cell_papermill_half_infers(repo):
    shown = cli(repo, "params", "complex_parameters.ipynb", "--json")
    assert shown.returncode == 0, shown.stderr
    contract = json.loads(shown.stdout)
    assert [p["name"] for p in contract["parameters"]] == ["msg", "a", "b", "c", "d"]
    assert contract["notes"] == ["line 14: cannot be read (invalid syntax)"]
    refused = cli(repo, "run", "complex_parameters.ipynb", "-q", "-p", "a", "3")
    assert refused.returncode == 2 and "line 14: cannot be read" in refused.stderr
    assert not (repo / ".cd4ml" / "runs").exists()  # no run folder, so no kernel


@pytest.mark.parametrize("url", ["s3://papermill-test/simple.ipynb", "gs://bucket/nb.ipynb",
                                 "https://example.com/nb.ipynb"])
def test_remote_notebooks_are_refused_clearly(repo, url):
    for command in (("run", url), ("params", url)):
        done = cli(repo, *command)
        assert done.returncode == 2 and done.stderr.count("\n") == 1
        assert url in done.stderr and "remote notebooks" in done.stderr
