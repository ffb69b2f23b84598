"""The oldest MLflow this package declares really installs and runs.

A new venv gets ``pip install "mlflow==<floor>" <this package>``, the floor read from
``pyproject.toml`` (pip resolves everything else as a user's install would today), then that venv's
``cd4ml-nb`` runs a tiny notebook on two branches, lists the runs and compares them. The floor is
``mlflow>=3.9`` because every older release fails with today's SQLAlchemy 2.1: their store imports
``FallbackAsyncAdaptedQueuePool``, which SQLAlchemy 2.1 removed (MLflow 3.9.0 imports it only if
present). Such an MLflow is not verified for the light client, so this also runs the MlflowClient
path in a real install.

Slow (about two minutes, mostly pip) and it needs the package registry: it runs in CI (``CI`` set,
as ``.ci/run`` does) or with ``CD4ML_NB_OLDEST_MLFLOW=1``, and skips elsewhere.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbfactory import commit_all, git, init_repo, percent, write_ipynb

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WANTED = os.environ.get("CD4ML_NB_OLDEST_MLFLOW", os.environ.get("CI", "")).lower() in ("1", "true", "yes")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(not WANTED, reason="installs MLflow in a new venv (minutes, network): runs in CI "
                                          "or with CD4ML_NB_OLDEST_MLFLOW=1"),
]


def declared_floor() -> str:
    """The lowest MLflow release ``pyproject.toml`` allows (``mlflow>=X``)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    for requirement in dependencies:
        found = re.fullmatch(r"mlflow\s*>=\s*([0-9.]+)\s*(?:,.*)?", requirement.strip())
        if found:
            return found.group(1)
    raise AssertionError(f"no 'mlflow>=X' among the dependencies of {ROOT / 'pyproject.toml'}: {dependencies}")


@pytest.fixture(scope="module")
def oldest(tmp_path_factory) -> tuple[Path, str]:
    """A new venv with the oldest declared MLflow and this package (its own copy, not editable)."""
    floor = declared_floor()
    venv = tmp_path_factory.mktemp("oldest-mlflow") / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                           "-q", f"mlflow=={floor}", str(ROOT)], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, f"pip install mlflow=={floor} {ROOT} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    print(f"venv with mlflow=={floor} and cd4ml_nb installed in {time.monotonic() - started:.0f} s")
    return venv, floor


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH", "JUPYTER_PATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def cli(venv: Path, repo: Path, *args: str) -> dict:
    done = subprocess.run([str(venv / "bin" / "cd4ml-nb"), *args, "--json"], cwd=repo, env=_env(venv),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"cd4ml-nb {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_the_oldest_declared_mlflow_runs_lists_and_compares(oldest, tmp_path):
    venv, floor = oldest
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.metadata as m, json; from cd4ml_nb.sqlite_client import verified_revision; "
         "print(json.dumps([m.version('mlflow'), m.version('sqlalchemy'), verified_revision()]))"],
        env=_env(venv), capture_output=True, text=True, check=True)
    mlflow_version, sqlalchemy_version, light = json.loads(probe.stdout)
    assert tuple(map(int, mlflow_version.split("."))) == tuple(map(int, (floor + ".0.0").split(".")[:3]))
    print(f"MLflow {mlflow_version}, SQLAlchemy {sqlalchemy_version}, light client: {light or 'no (MlflowClient)'}")

    repo = init_repo(tmp_path / "project")
    write_ipynb(repo / "train.ipynb", percent(
        "import mlflow\nmlflow.log_metric('loss', 1.0 - alpha)\nmlflow.set_tag('kernel.mlflow', mlflow.__version__)",
        parameters="alpha = 0.5"))
    (repo / ".gitignore").write_text(".cd4ml/\n")
    commit_all(repo)

    base = cli(venv, repo, "run", "train.ipynb", "-q")
    assert (base["status"], base["metrics"], base["experiment"]) == ("FINISHED", {"loss": 0.5}, "master")
    git(repo, "checkout", "-q", "-b", "feature")
    branch = cli(venv, repo, "run", "train.ipynb", "-q", "-p", "alpha", "0.25")
    assert (branch["status"], branch["metrics"], branch["parameters"]) == ("FINISHED", {"loss": 0.75}, {"alpha": 0.25})

    listed = cli(venv, repo, "runs")
    assert [(r["run_id"], r["status"], r["params"], r["metrics"]) for r in listed["runs"]] == [
        (branch["run_id"], "FINISHED", {"alpha": "0.25"}, {"loss": 0.75})]
    compared = cli(venv, repo, "compare")
    [notebook] = compared["notebooks"]
    assert (notebook["base"]["run_ids"], notebook["branch"]["run_ids"]) == ([base["run_id"]], [branch["run_id"]])
    assert [(d["metric"], d["base"], d["branch"]) for d in notebook["deltas"]] == [("loss", 0.5, 0.75)]

    tags = subprocess.run(  # the kernel logged with the venv's MLflow, into the store that MLflow made
        [str(venv / "bin" / "python"), "-c",
         "import sys; from mlflow.tracking import MlflowClient; "
         "print(MlflowClient(sys.argv[1]).get_run(sys.argv[2]).data.tags['kernel.mlflow'])",
         branch["tracking_uri"], branch["run_id"]], env=_env(venv), capture_output=True, text=True, check=True)
    assert tags.stdout.split()[-1] == mlflow_version
