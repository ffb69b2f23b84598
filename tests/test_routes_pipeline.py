"""The Lab's pipeline routes (#23): list pipeline runs with their steps, start ``pipeline run`` with
an override as a background job, cancel it; bad overrides are refused before anything starts.

A real Jupyter server with the extension, a real git repository, real kernels and the embedded
MLflow store; a two-step pipeline (prep -> train).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cd4ml_nb.routes import ROUTES

from nbfactory import commit_all, init_repo, percent, wait_until_async, write_ipynb
from test_routes import call, wait_job

PREP = percent("import os\nos.makedirs('data', exist_ok=True)\n"
               "open('data/rows.txt', 'w').write(''.join(f'{i}\\n' for i in range(rows)))",
               parameters="rows: int = 3")
TRAIN = percent("import time, mlflow\ntime.sleep(pause)\nn = len(open('data/rows.txt').read().split())\n"
                "mlflow.log_metric('score', n * max_depth)",
                parameters="max_depth: int = 2\npause: float = 0.0")
PIPELINE = """\
steps:
  prep:
    notebook: prep.ipynb
    parameters: {rows: 3}
    outputs: [data/rows.txt]
  train:
    notebook: train.ipynb
    needs: [prep]
    parameters: {max_depth: 2}
"""


@pytest.fixture
def jp_root_dir(tmp_path):
    root = init_repo(tmp_path / "served", branch="master")
    write_ipynb(root / "prep.ipynb", PREP)
    write_ipynb(root / "train.ipynb", TRAIN)
    (root / "cd4ml-pipeline.yaml").write_text(PIPELINE)
    (root / "other.yaml").write_text("steps: {}\n")
    (root / ".gitignore").write_text("data/\n")
    commit_all(root)
    (tmp_path / "outside.yaml").write_text(PIPELINE)
    return root


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _reap_job_processes(request):
    """A test that fails with a job still going leaves nothing running: after the server has
    stopped, each job process its launch record names (pid and start time) is ended, with every
    process under it (kernel, run guard): SIGTERM to the job, then SIGKILL to what is left."""
    root = request.getfixturevalue("jp_root_dir") if "jp_root_dir" in request.fixturenames else None
    yield
    if root is None:
        return
    import psutil

    from cd4ml_nb.processes import launched_process

    for launch in sorted((root / ".cd4ml" / "jobs").glob("*/launch.json")):
        job = launched_process(json.loads(launch.read_text() or "{}"))
        if job is None:
            continue
        try:
            family = [job, *job.children(recursive=True)]
            job.terminate()
        except psutil.NoSuchProcess:
            continue
        _, alive = psutil.wait_procs(family, timeout=30)
        for left in alive:
            try:
                left.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=30)


async def jobs_of(jp_fetch) -> list:
    code, data = await call(jp_fetch, "jobs")
    assert code == 200
    return data["jobs"]


async def pipelines(jp_fetch) -> list:
    code, data = await call(jp_fetch, "pipelines")
    assert code == 200, data
    return data["pipelines"]


def test_routes_are_in_the_inventory():
    """The authorization and authentication tests walk ROUTES: the pipeline routes are there."""
    paths = {path for path, _ in ROUTES}
    assert {"pipelines", "pipelines/file", "pipelines/jobs"} <= paths


@pytest.mark.parametrize("body, status, words", [
    ({"overrides": {"train.depth": "3"}}, 400, ["cd4ml-pipeline.yaml", "train", "depth"]),
    ({"overrides": {"train.max_depth": "three"}}, 400, ["cd4ml-pipeline.yaml", "train", "max_depth"]),
    ({"overrides": {"evaluate.x": "1"}}, 400, ["cd4ml-pipeline.yaml", "evaluate", "no step"]),
    ({"overrides": {"max_depth": "1"}}, 400, ["STEP.NAME"]),
    ({"overrides": {"train.max_depth": 3}}, 400, ["train.max_depth", "text"]),
    ({"overrides": [["train.max_depth", "3"]]}, 400, ["overrides"]),
    ({"steps": ["nope"]}, 400, ["no step 'nope'"]),
    ({"force": "yes"}, 400, ["force"]),
    ({"file": "other.yaml"}, 400, ["other.yaml", "steps"]),
    ({"file": "../outside.yaml"}, 403, ["outside"]),
    ({"file": "missing.yaml"}, 404, ["missing.yaml"]),
    ({"overrides": {"train.max_depth": "9" * 200_000}}, 413, ["train.max_depth", "max_parameter_bytes"]),
])
async def test_bad_requests_start_nothing(jp_fetch, jp_root_dir, body, status, words):
    code, data = await call(jp_fetch, "pipelines", "jobs", method="POST", body=body)
    assert code == status, data
    assert all(w in data["message"] for w in words), data["message"]
    assert "\n" not in data["message"] and str(jp_root_dir) not in data["message"]
    assert await jobs_of(jp_fetch) == []
    assert not (jp_root_dir / ".cd4ml" / "mlflow.db").exists()  # no run, not even a store


async def test_describe_the_pipeline_file(jp_fetch, jp_root_dir):
    code, data = await call(jp_fetch, "pipelines", "file")
    assert code == 200, data
    assert data["file"] == "cd4ml-pipeline.yaml"
    assert [(s["name"], s["notebook"], s["needs"], s["parameters"]) for s in data["steps"]] == [
        ("prep", "prep.ipynb", [], {"rows": 3}), ("train", "train.ipynb", ["prep"], {"max_depth": 2, "pause": 0.0})]
    assert data["steps"][1]["types"] == {"max_depth": "int", "pause": "float"}
    code, data = await call(jp_fetch, "pipelines", "file", params={"path": "../outside.yaml"})
    assert code == 403


async def test_no_pipeline_runs_yet(jp_fetch, jp_root_dir):
    assert await pipelines(jp_fetch) == []


async def test_start_with_an_override_then_all_cache_hits(jp_fetch, jp_root_dir, seed_store):
    seed_store(jp_root_dir)
    body = {"overrides": {"train.max_depth": "5"}}
    code, data = await call(jp_fetch, "pipelines", "jobs", method="POST", body=body)
    assert code == 202, data
    job = await wait_job(jp_fetch, data["id"])
    assert job["state"] == "finished", job
    assert job["kind"] == "pipeline" and job["path"] == "cd4ml-pipeline.yaml"
    assert job["parameters"] == {"train.max_depth": "5"}
    assert job["progress"] == {"done": 2, "total": 2}
    assert [(s["step"], s["status"], s["cache_hit"]) for s in job["steps"]] == [
        ("prep", "FINISHED", None), ("train", "FINISHED", None)]

    [first] = await pipelines(jp_fetch)
    assert first["run_id"] == job["run_id"] and first["status"] == "FINISHED"
    assert first["file"] == "cd4ml-pipeline.yaml" and first["branch"] == "master"
    assert first["counts"] == {"executed": 2, "cache_hits": 0, "failed": 0, "skipped": 0}
    steps = {s["step"]: s for s in first["steps"]}
    assert list(steps) == ["prep", "train"]
    for s in steps.values():
        assert s["status"] == "FINISHED" and s["cache_hit"] is None and s["seconds"] > 0 and s["run_id"]
    assert steps["train"]["metrics"] == {"score": 15.0} and steps["train"]["notebook"] == "train.ipynb"

    code, data = await call(jp_fetch, "pipelines", "jobs", method="POST", body=body)
    assert code == 202, data
    again = await wait_job(jp_fetch, data["id"])
    assert again["state"] == "finished", again
    newest, older = await pipelines(jp_fetch)
    assert older["run_id"] == first["run_id"] and newest["run_id"] == again["run_id"]
    assert newest["counts"] == {"executed": 0, "cache_hits": 2, "failed": 0, "skipped": 0}
    assert {s["step"]: s["cache_hit"] for s in newest["steps"]} == {n: s["run_id"] for n, s in steps.items()}
    assert all(s["status"] == "FINISHED" for s in newest["steps"])
    assert newest["steps"][1]["metrics"] == {"score": 15.0}  # copied from the run it stands for

    code, data = await call(jp_fetch, "pipelines", "jobs", method="POST",
                            body={"overrides": {"train.max_depth": "6"}, "steps": ["train"]})
    assert code == 202
    third = await wait_job(jp_fetch, data["id"])
    assert [(s["step"], bool(s["cache_hit"])) for s in third["steps"]] == [("prep", True), ("train", False)]


async def test_cancel_a_running_pipeline(jp_fetch, jp_root_dir, seed_store):
    seed_store(jp_root_dir)
    code, data = await call(jp_fetch, "pipelines", "jobs", method="POST",
                            body={"overrides": {"train.pause": "600"}})
    assert code == 202, data
    job_id = data["id"]

    async def train_running():
        found = await pipelines(jp_fetch)
        return found and any(s["step"] == "train" and s["status"] == "RUNNING" for s in found[0]["steps"])

    await wait_until_async(train_running, 240, "the train step running")
    [running] = await pipelines(jp_fetch)
    assert running["status"] == "RUNNING" and running["steps"][0]["status"] == "FINISHED"
    code, data = await call(jp_fetch, "jobs", job_id, method="DELETE")
    assert code == 200, data
    job = await wait_job(jp_fetch, job_id)
    assert job["state"] == "killed", job

    async def ended():
        found = await pipelines(jp_fetch)
        return found if found[0]["status"] != "RUNNING" else None

    [pipe] = await wait_until_async(ended, 60, "the pipeline run ending")
    assert pipe["status"] == "KILLED"
    assert [s["status"] for s in pipe["steps"]] == ["FINISHED", "KILLED"]


async def test_untrusted_names_come_back_as_data(jp_fetch, jp_root_dir):
    """A step name is checked by the pipeline file's rules; an override's text is data, never code."""
    body = {"overrides": {"train.max_depth": "<img src=x onerror=alert(1)>"}}
    code, data = await call(jp_fetch, "pipelines", "jobs", method="POST", body=body)
    assert code == 400 and "max_depth" in data["message"]
    assert json.loads(json.dumps(data))["message"] == data["message"]
    assert await jobs_of(jp_fetch) == []
    assert not Path(jp_root_dir / "data").exists()
