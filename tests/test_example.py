"""The example notebook as a tracked experiment: metrics and the model land in the run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, digest_tree, init_repo

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "demo", branch="master")
    shutil.copytree(NOTEBOOKS, repo / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints", ".cd4ml"))
    commit_all(repo, "example")
    monkeypatch.chdir(repo)
    return repo


def test_example_pair_is_in_sync(project):
    assert main(["check"]) == 0


def test_example_runs_as_a_tracked_experiment(project, capsys):
    from mlflow.tracking import MlflowClient

    before = digest_tree(project)
    assert main(["run", "notebooks/train.ipynb", "-f", "notebooks/smoke.yaml", "-q"]) == 0
    assert main(["run", "notebooks/train.py", "-p", "model", "random_forest", "-p", "n_estimators", "10",
                 "-q", "--no-html"]) == 0
    assert digest_tree(project) == before
    c = MlflowClient(f"sqlite:///{project / '.cd4ml' / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("master").experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.params["model"] for r in runs] == ["decision_tree", "random_forest"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"nwrmsle", "mae", "r2"} <= set(run.data.metrics)
        assert 0 < run.data.metrics["nwrmsle"] < 2
        models = c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
        assert [m.name for m in models] == ["model"]
    assert runs[0].data.params["max_depth"] == "3"  # from smoke.yaml
