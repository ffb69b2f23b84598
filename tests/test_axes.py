"""What ran is what is recorded (issue #10): the environment axis describes the interpreter the
kernel ran, and the schema axis survives pandas renaming its dtypes.

Real virtual environments and kernelspecs, real kernels, real SQLite MLflow stores, real DataFrames.
"""
from __future__ import annotations

import hashlib
import json
import site
import subprocess
import sys
from pathlib import Path

import pytest

from cd4ml_nb import axes, data
from cd4ml_nb.cli import main

from nbfactory import commit_all, init_repo, percent

PROBE_PACKAGE = "cd4ml-axes-probe"  # installed in the test venv only


# --- a second interpreter: a venv with a distribution of its own, and a kernelspec for it ----


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> str:
    """A venv over this interpreter's packages (ipykernel, mlflow) plus one distribution of its own.

    Its ``python`` is this interpreter's binary (the base one when this runs in a venv): only the
    venv tells the two environments apart.
    ``--system-site-packages`` alone shows the *base* interpreter's packages, which are not this
    interpreter's when the suite itself runs in a venv; a ``.pth`` file adds this interpreter's
    site directories (with their own ``.pth`` files, so editable installs come along)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(root)], check=True)
    python = str(root / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "cd4ml_axes_outer.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages()))
    info = Path(purelib) / "cd4ml_axes_probe-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PROBE_PACKAGE}\nVersion: 1.0\n")
    return python


def add_kernelspec(jupyter_path: Path, name: str, argv: list[str], language: str = "python") -> None:
    folder = jupyter_path / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": language}))


@pytest.fixture
def kernels(tmp_path, monkeypatch, venv_python) -> Path:
    """A temp JUPYTER_PATH with the venv's kernel and some that cannot be inspected."""
    path = tmp_path / "jupyter"
    add_kernelspec(path, "axes-venv", [venv_python, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    add_kernelspec(path, "axes-shell", ["/bin/sh", "-c", "exit 1", "{connection_file}"], language="bash")
    add_kernelspec(path, "axes-false", ["/bin/false", "-f", "{connection_file}"])
    add_kernelspec(path, "axes-gone", [str(tmp_path / "no" / "python"), "-f", "{connection_file}"])
    monkeypatch.setenv("JUPYTER_PATH", str(path))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite MLflow store with its own artifact root; returns (client, experiment id)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("store")
    c = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return c, c.create_experiment("axes", artifact_location=(root / "artifacts").as_uri())


# --- defect 1: the environment axis ----------------------------------------------------------


def test_native_kernel_is_this_interpreter_described_in_process():
    env = axes.environment("python3")
    assert env["inspected"] == "in-process" and env["executable"] == sys.executable
    assert env["packages"] == axes.environment()["packages"] and "mlflow" in env["packages"]


def test_a_kernel_on_another_interpreter_records_that_interpreter(kernels, venv_python):
    here = axes.environment()
    env = axes.environment("axes-venv")
    assert env["executable"] == venv_python and env["inspected"] == "subprocess"
    assert env["packages"][PROBE_PACKAGE] == "1.0" and PROBE_PACKAGE not in here["packages"]
    assert axes.environment_hash(env) != axes.environment_hash(here)
    assert axes.environment("axes-venv") is env  # described once per interpreter in a process


@pytest.mark.parametrize("kernel, reason", [
    ("axes-shell", "bash kernel"), ("axes-false", "could not describe itself"),
    ("axes-gone", "no such program"), ("axes-missing", "not installed"),
])
def test_a_kernel_that_cannot_be_inspected_is_recorded_as_such(kernels, store, tmp_path, kernel, reason):
    c, experiment_id = store
    run_id = c.create_run(experiment_id).info.run_id
    tags = axes.record_axes(c, run_id, tmp_path, kernel)
    assert reason in tags[axes.ENV_NOT_INSPECTED] and len(tags[axes.ENV_HASH]) == 16
    assert axes.ENV_PYTHON not in tags  # the runner's Python is not the kernel's
    env = json.loads(Path(c.download_artifacts(run_id, axes.ENV_ARTIFACT, str(tmp_path / "dl"))).read_text())
    assert env["kernel"] == kernel and env["inspected"] is False and env["packages"] == {}


def test_a_run_on_another_interpreter_records_the_kernels_environment(kernels, venv_python, tmp_path, monkeypatch,
                                                                       capsys):
    import jupytext
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo")
    nb = jupytext.reads(percent(
        "import sys, importlib.metadata, mlflow\n"
        "mlflow.set_tag('test.executable', sys.executable)\n"
        f"mlflow.set_tag('test.probe', importlib.metadata.version({PROBE_PACKAGE!r}))"), fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "axes-venv", "display_name": "axes-venv", "language": "python"}
    jupytext.write(nb, repo / "env.ipynb", fmt="ipynb")
    commit_all(repo, "notebook")
    monkeypatch.chdir(repo)
    assert main(["run", "env.ipynb", "-q", "--no-html", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    c = MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    tags = c.get_run(run_id).data.tags
    assert tags["test.executable"] == venv_python and tags["test.probe"] == "1.0"  # what the kernel saw
    env = json.loads(Path(c.download_artifacts(run_id, axes.ENV_ARTIFACT, str(tmp_path / "dl"))).read_text())
    assert env["packages"].get(PROBE_PACKAGE) == "1.0"
    assert env["kernel"] == "axes-venv" and env["executable"] == venv_python
    assert tags[axes.ENV_INTERPRETER] == venv_python and tags[axes.ENV_HASH] == axes.environment_hash(env)
    assert tags[axes.ENV_HASH] != axes.environment_hash(axes.environment())


# --- defect 2: the schema axis across pandas versions ----------------------------------------


def frame(strings_as_object: bool = False, x=(1, 2, 3), x_name: str = "x"):
    import pandas as pd

    store = ["a", "b", "c"]
    return pd.DataFrame({x_name: list(x), "store": pd.Series(store, dtype=object) if strings_as_object else store})


def pandas2_record(df, name: str = "sales") -> dict:
    """The fingerprint JSON a run under pandas 2 recorded for ``df`` (dtype names; no logical types)."""
    import pandas as pd

    schema = {str(c): "object" if str(t) in ("str", "object") else str(t) for c, t in df.dtypes.items()}
    content = hashlib.sha256(json.dumps(list(schema)).encode())
    content.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    columns = {c: {"dtype": t, "missing": 0} for c, t in schema.items()}
    return {"name": name, "context": "training", "source": None, "schema": schema,
            "schema_hash": hashlib.sha256(json.dumps(list(schema.items())).encode()).hexdigest()[:16],
            "rows": len(df), "digest": content.hexdigest()[:32], "columns": columns}


def test_str_and_object_string_columns_have_the_same_schema():
    import pandas as pd

    new, old = frame(), frame(strings_as_object=True)
    assert str(new["store"].dtype) == "str" and str(old["store"].dtype) == "object"
    a, b = data.fingerprint(old, "sales"), data.fingerprint(new, "sales")
    assert a.schema_hash == b.schema_hash and a.logical == {"x": "integer", "store": "string"}
    d = data.diff_fingerprints(a, b)
    assert not d.schema_changed and not d.sampling_changed
    nullable = frame().astype({"x": "Int64", "store": "string[pyarrow]"})
    assert data.fingerprint(nullable, "sales").schema_hash == b.schema_hash
    assert data.logical_type(pd.Series([1, "a"], dtype=object)) == "other"


def test_a_pandas2_record_compares_with_a_pandas3_fingerprint():
    old = data.Fingerprint.from_json(pandas2_record(frame(strings_as_object=True)))
    new = data.fingerprint(frame(), "sales")
    for a, b in ((old, new), (new, old)):
        d = data.diff_fingerprints(a, b)
        assert not d.schema_changed and not d.sampling_changed, d


def test_real_schema_changes_are_still_detected():
    base = data.fingerprint(frame(), "sales")
    floats = data.diff_fingerprints(base, data.fingerprint(frame(x=(1.5, 2.0, 3.0)), "sales"))
    assert floats.schema_changed and floats.type_changed == {"x": ("integer", "float")}
    renamed = data.diff_fingerprints(base, data.fingerprint(frame(x_name="qty"), "sales"))
    assert renamed.added == ("qty",) and renamed.removed == ("x",) and renamed.schema_changed
    old = data.Fingerprint.from_json(pandas2_record(frame(strings_as_object=True)))
    assert data.diff_fingerprints(old, data.fingerprint(frame(x=(1.5, 2.0, 3.0)), "sales")).schema_changed


def record_run(store, fingerprint_json: dict) -> object:
    """A run carrying a dataset's tags and artifact as ``log_dataset`` writes them."""
    c, experiment_id = store
    run_id = c.create_run(experiment_id).info.run_id
    name = fingerprint_json["name"]
    c.set_tag(run_id, data.schema_tag(name), fingerprint_json["schema_hash"])
    c.set_tag(run_id, data.digest_tag(name), fingerprint_json["digest"])
    c.set_tag(run_id, data.rows_tag(name), str(fingerprint_json["rows"]))
    c.log_dict(run_id, fingerprint_json, f"{data.ARTIFACT_DIR}/{name}.json")
    return c.get_run(run_id)


def test_runs_recorded_under_pandas2_and_pandas3_show_no_schema_change(store):
    c, _ = store
    pandas2 = record_run(store, pandas2_record(frame(strings_as_object=True)))
    pandas3 = record_run(store, data.fingerprint(frame(), "sales").to_json())
    assert pandas2.data.tags[data.schema_tag("sales")] != pandas3.data.tags[data.schema_tag("sales")]
    assert data.schema_changes(c, pandas2, pandas3) == [] == data.schema_changes(c, pandas3, pandas2)
    floats = record_run(store, data.fingerprint(frame(x=(1.5, 2.0, 3.0)), "sales").to_json())
    assert data.schema_changes(c, pandas2, floats) == ["sales"] == data.schema_changes(c, pandas3, floats)
    other = record_run(store, data.fingerprint(frame(), "stores").to_json())
    assert data.schema_changes(c, pandas3, other) == ["sales", "stores"]


def test_gate_compares_a_pandas2_base_with_a_pandas3_branch(tmp_path, monkeypatch):
    """The gate refuses to compare across a schema change; a pandas upgrade alone is not one."""
    from cd4ml_nb import compare, tracking
    from cd4ml_nb.project import Project

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo", branch="master")
    (repo / "train.py").write_text(percent("x = 1"))
    commit_all(repo)
    project = Project.discover(repo)
    c = tracking.client(project)
    for branch, record in (("master", pandas2_record(frame(strings_as_object=True))),
                           ("upgrade-pandas", data.fingerprint(frame(), "sales").to_json())):
        experiment = tracking.ensure_experiment(c, project, branch)
        run = record_run((c, experiment), record)
        c.set_tag(run.info.run_id, tracking.NOTEBOOK, "train.py")
        c.log_metric(run.info.run_id, "nwrmsle", 0.5)
        tracking.end_run(c, run.info.run_id, "FINISHED")
    result = compare.gate(project, [compare.GateSpec("nwrmsle", "minimize", 0.0)], branch="upgrade-pandas",
                          base="master")
    assert result.passed
    comparison = compare.compare(project, "upgrade-pandas", "master")
    assert comparison.notebooks[0].schema_changed == []
