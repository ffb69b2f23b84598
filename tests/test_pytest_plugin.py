"""The pytest plugin: `pytest --cd4ml notebooks/` runs paired notebooks as regression tests (real
pytest sessions in subprocesses, real kernels, real MLflow stores); the example notebook among them."""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, init_repo, percent, write_ipynb
from test_imports import loaded_after

ROOT = Path(__file__).resolve().parents[1]


def plugin_args() -> list[str]:
    """``-p cd4ml_nb.pytest_plugin`` unless the installed distribution already registers it."""
    installed = any(ep.value == "cd4ml_nb.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "cd4ml_nb.pytest_plugin"]


def pytest_run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *plugin_args(), "-p", "no:cacheprovider", "-o", "addopts=",
                           "-o", "testpaths=", *args], cwd=repo, capture_output=True, text=True, timeout=600)


def cd4ml_test_runs(repo: Path) -> list:
    from mlflow.tracking import MlflowClient

    db = repo / ".cd4ml" / "mlflow.db"
    if not db.exists():
        return []
    c = MlflowClient(f"sqlite:///{db}")
    return [r for r in c.search_runs([e.experiment_id for e in c.search_experiments()])
            if r.data.tags.get("cd4ml.test") == "true"]


def test_the_entry_point_is_declared_and_the_plugin_is_light():
    import tomllib

    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    assert table == {"cd4ml_nb": "cd4ml_nb.pytest_plugin"}
    assert loaded_after("import cd4ml_nb.pytest_plugin") == []  # pytest loads it in every session


@pytest.fixture
def example(tmp_path, monkeypatch):
    """A repository holding the example notebooks and their committed baseline."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "demo", branch="master")
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", ".cd4ml")
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=ignore)
    shutil.copytree(ROOT / ".cd4ml-baselines", repo / ".cd4ml-baselines")
    commit_all(repo, "example")
    return repo


@pytest.mark.slow
def test_the_example_notebook_passes_against_its_committed_baseline(example):
    baseline = json.loads((example / ".cd4ml-baselines" / "notebooks" / "train.json").read_text())
    assert baseline["parameters"] == {"model": "decision_tree", "max_depth": 3, "validation_days": 7}  # smoke.yaml
    assert set(baseline["metrics"]) == {"nwrmsle", "mae", "r2"}

    deselected = pytest_run(example, "--cd4ml", "notebooks/", "-k", "not train", "-q")
    assert deselected.returncode == 5 and "1 deselected" in deselected.stdout, deselected.stdout
    assert cd4ml_test_runs(example) == []

    done = pytest_run(example, "--cd4ml", "notebooks/", "-k", "train", "-v", "-rP")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "notebooks/train.ipynb::regression PASSED" in done.stdout
    assert "notebooks/train.ipynb: within tolerance" in done.stdout and "nwrmsle" in done.stdout
    (run,) = cd4ml_test_runs(example)
    assert run.info.status == "FINISHED" and run.data.tags["cd4ml.test.via"] == "pytest"
    assert run.data.params["max_depth"] == "3" and run.data.tags["cd4ml.test.result"] == "pass"


LOSS = percent("import mlflow\nmlflow.log_metric('loss', 0.8)")


@pytest.mark.slow
def test_failures_print_the_table_and_x_stops_at_the_first(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "proj", branch="master")
    (repo / "pyproject.toml").write_text("[tool.cd4ml_nb]\nhtml = false\n")
    monkeypatch.chdir(repo)
    for name in ("a", "b"):
        write_ipynb(repo / f"{name}.ipynb", LOSS)
        assert main(["pair", f"{name}.ipynb"]) == 0
        baseline = {"format": 1, "notebook": f"{name}.ipynb", "parameters": {}, "seeds": None, "cells": [],
                    "metrics": {"loss": {"mean": 1.0, "spread": 0.0, "values": [1.0]}}, "source": {}}
        (repo / ".cd4ml-baselines").mkdir(exist_ok=True)
        (repo / ".cd4ml-baselines" / f"{name}.json").write_text(json.dumps(baseline))
    write_ipynb(repo / "scratch.ipynb", LOSS)  # not paired: not collected
    commit_all(repo)

    collected = pytest_run(repo, "--cd4ml", ".", "--collect-only", "-q")
    assert collected.stdout.split("\n\n")[0].split() == ["a.ipynb::regression", "b.ipynb::regression"]

    done = pytest_run(repo, "--cd4ml", ".", "-x")
    assert done.returncode == 1 and "1 failed" in done.stdout and "b.ipynb" not in done.stdout.split("FAILURES")[1]
    assert "a.ipynb: REGRESSION" in done.stdout
    assert "FAIL    a.ipynb   loss            1         0.8  -0.2   ±1e-05 (rtol 1e-05, atol 1e-08)" in done.stdout
    assert "record a new baseline: `cd4ml-nb test a.ipynb --update`" in done.stdout
    (run,) = cd4ml_test_runs(repo)  # -x: b never ran
    assert run.data.tags["cd4ml.notebook"] == "a.ipynb" and run.data.tags["cd4ml.test.result"] == "regression"
