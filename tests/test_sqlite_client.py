"""The run's light SQLite client writes what MLflow writes, and is used only where it was verified.

Differential: the same run recorded through ``MlflowClient`` and through ``SqliteClient`` into two
new stores leaves the same rows in every table of MLflow's schema and the same artifact files;
MLflow reads the light client's runs; stores of another schema revision go through MLflow; a
``cd4ml-nb run`` of a notebook that does not use MLflow never imports it in the parent."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from cd4ml_nb import store, tracking
from cd4ml_nb.exceptions import TrackingError
from cd4ml_nb.project import Project
from cd4ml_nb.sqlite_client import VERIFIED_REVISIONS, SqliteClient, installed_head, open_client

from nbfactory import commit_all, init_repo, percent, write_ipynb

TIMES = {"start_time", "end_time", "creation_time", "last_update_time", "timestamp", "deleted_time"}


def _new_store(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True)
    path = folder / "mlflow.db"
    uri = f"sqlite:///{path}"
    store.ensure_sqlite(uri, (folder / "artifacts").as_uri())
    return path, uri


def _project(repo: Path, uri: str) -> Project:
    return Project.discover(repo, tracking_uri=uri)


def _record(c, project: Project, source: Path) -> str:
    """One run's life as the runner records it, through the client ``c``."""
    experiment_id = tracking.ensure_experiment(c, project, "feature/x")
    run = tracking.create_run(c, experiment_id, "train", {"cd4ml.notebook": "train.ipynb", "mlflow.source.type":
                              "NOTEBOOK", "long": "v" * 6000, "skipped": None},
                              {"max_depth": 5, "name": "a b", "grid": [1, 2]}, defaults=("name",))
    run_id = run.info.run_id
    tracking.log_batches(c, run_id, params=tracking._params(c, {"max_depth": 5}))  # same value again: allowed
    with pytest.raises(Exception, match="Changing param values is not allowed"):
        tracking.log_batches(c, run_id, params=tracking._params(c, {"max_depth": 6}))
    c.log_artifact(run_id, str(source))
    tracking.end_run(c, run_id, "FAILED", {"cd4ml.status.reason": "cell-exception", "cd4ml.failed_cell": 3})
    renamed = tracking.create_run(c, experiment_id, "second", {"mlflow.user": "ada"}, {}).info.run_id
    c.set_tag(renamed, "mlflow.runName", "renamed")
    c.set_tag(renamed, "huge", "x" * 9000)  # MLflow truncates to 8000
    tracking.end_run(c, renamed, "FINISHED")
    return run_id, renamed


def _dump(path: Path, run_ids: list[str]) -> dict[str, list[tuple]]:
    """Every table's rows, run ids, times and the store's folder written as placeholders."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name != 'alembic_version' ORDER BY name")]
        dump = {}
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            rows = []
            for row in cursor.fetchall():
                values = []
                for column, value in zip(columns, row):
                    if column in TIMES and value is not None:
                        value = "<time>"
                    elif isinstance(value, str):
                        for n, run_id in enumerate(run_ids):
                            value = value.replace(run_id, f"<run{n}>")
                        value = value.replace(str(path.parent), "<store>")
                    values.append(value)
                rows.append(tuple(values))
            dump[table] = sorted(rows, key=repr)
        return dump
    finally:
        db.close()


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode) for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "my repo é")  # artifact URIs percent-encode these
    (repo / "train.py").write_text("print('hi')\n")
    commit_all(repo)
    return repo


def test_the_light_client_writes_the_rows_and_files_mlflow_writes(repo, tmp_path):
    from mlflow.tracking import MlflowClient

    source = repo / "train.py"
    os.chmod(source, 0o640)
    ours_path, ours_uri = _new_store(tmp_path / "light")
    theirs_path, theirs_uri = _new_store(tmp_path / "mlflow")
    ours, *ours_more = _record(SqliteClient(ours_path, ours_uri), _project(repo, ours_uri), source)
    theirs, *theirs_more = _record(MlflowClient(theirs_uri), _project(repo, theirs_uri), source)

    assert _dump(ours_path, [ours, *ours_more]) == _dump(theirs_path, [theirs, *theirs_more])
    folders = [Path(unquote(urlparse(MlflowClient(uri).get_run(run_id).info.artifact_uri).path))
               for uri, run_id in ((ours_uri, ours), (theirs_uri, theirs))]
    assert folders[0] != folders[1]
    assert _files(folders[0]) == _files(folders[1]) == {"train.py": (source.read_bytes(), source.stat().st_mode)}


def test_mlflow_reads_what_the_light_client_wrote(repo, tmp_path):
    from mlflow.tracking import MlflowClient

    path, uri = _new_store(tmp_path / "light")
    run_id, renamed = _record(SqliteClient(path, uri), _project(repo, uri), repo / "train.py")
    c = MlflowClient(uri)
    assert c.get_run(renamed).info.run_name == "renamed" and c.get_run(renamed).info.user_id == "ada"
    run = c.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.run_name == "train" and run.info.end_time
    assert run.data.params == {"max_depth": "5", "name": "a b", "grid": "[1, 2]"}
    assert run.data.tags["cd4ml.failed_cell"] == "3" and run.data.tags["cd4ml.params.defaults"] == "name"
    found = c.search_runs([run.info.experiment_id], "params.max_depth = '5' and tags.`cd4ml.notebook` = 'train.ipynb'")
    assert [r.info.run_id for r in found] == [run_id]
    assert [a.path for a in c.list_artifacts(run_id)] == ["train.py"]


def test_the_light_client_reads_runs_and_models_as_mlflow_does(repo, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    path, uri = _new_store(tmp_path / "light")
    light = SqliteClient(path, uri)
    experiment_id = tracking.ensure_experiment(light, _project(repo, uri), "master")
    run_id = light.create_run(experiment_id, run_name="r").info.run_id
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("acc", 0.5, step=0)
        mlflow.log_metric("acc", 0.75, step=1)
        mlflow.log_metric("loss", float("nan"))
        mlflow.pyfunc.log_model(name="model", python_model=_Identity())
    theirs, ours = MlflowClient(uri).get_run(run_id), light.get_run(run_id)
    assert ours.data.metrics["acc"] == theirs.data.metrics["acc"] == 0.75
    assert str(ours.data.metrics["loss"]) == str(theirs.data.metrics["loss"]) == "nan"
    assert (ours.data.params, ours.data.tags) == (theirs.data.params, theirs.data.tags)
    assert (ours.info.status, ours.info.artifact_uri, ours.info.experiment_id) == (
        theirs.info.status, theirs.info.artifact_uri, theirs.info.experiment_id)
    query = f"source_run_id = '{run_id}'"
    assert [(m.name, m.artifact_location) for m in light.search_logged_models([experiment_id], query)] == [
        (m.name, m.artifact_location) for m in MlflowClient(uri).search_logged_models([experiment_id], query)]


class _Identity:  # a pyfunc model without MLflow's import at module level
    def __new__(cls):
        import mlflow.pyfunc

        class Identity(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return model_input

        return Identity()


def test_bad_writes_are_refused_with_the_store_unchanged(repo, tmp_path):
    path, uri = _new_store(tmp_path / "light")
    light = SqliteClient(path, uri)
    experiment_id = tracking.ensure_experiment(light, _project(repo, uri), "master")
    run_id = light.create_run(experiment_id, run_name="r").info.run_id
    before = _dump(path, [run_id])
    for bad in ("../escape", "/abs", "a\nb", "x" * 251):
        with pytest.raises(TrackingError):
            light.set_tag(run_id, bad, "v")
    with pytest.raises(TrackingError, match="not found"):
        light.set_tag("0" * 32, "k", "v")
    with pytest.raises(TrackingError, match="Duplicate parameter keys"):
        light.log_batch(run_id, params=[tracking._params(light, {"a": 1})[0]] * 2)
    assert _dump(path, [run_id]) == before


def test_only_verified_current_stores_get_the_light_client(repo, tmp_path, monkeypatch):
    path, uri = _new_store(tmp_path / "s")
    head = installed_head()
    if head not in VERIFIED_REVISIONS:
        pytest.skip(f"the installed MLflow's schema {head} is not verified by this cd4ml_nb: runs use MlflowClient")
    assert isinstance(open_client(path, uri), SqliteClient)
    assert isinstance(tracking.run_client(_project(repo, uri)), SqliteClient)
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert open_client(path, uri) is None
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE alembic_version SET version_num = 'feedfacecafe'")  # a newer MLflow's store
    db.close()
    assert open_client(path, uri) is None
    with pytest.raises(TrackingError, match="out-of-date database schema"):  # MLflow's own answer to it
        tracking.run_client(_project(repo, uri))


RUN_IN_PROCESS = (
    "import sys\n"
    "from cd4ml_nb.runner import run_notebook\n"
    "result = run_notebook(sys.argv[1], progress=False)\n"
    "print(result.status, result.run_id, 'mlflow' in sys.modules)\n"
)


@pytest.mark.parametrize("notebook", ["plain", "logs"])
def test_a_run_imports_mlflow_only_in_a_kernel_that_uses_it(repo, notebook):
    if installed_head() not in VERIFIED_REVISIONS:
        pytest.skip(f"the installed MLflow's schema {installed_head()} is not verified: runs use MlflowClient")
    write_ipynb(repo / "plain.ipynb", percent("print(1 + 1)"))
    write_ipynb(repo / "logs.ipynb", percent("import mlflow\nmlflow.log_metric('acc', 0.9)\nmlflow.log_param('p', 1)"))
    commit_all(repo)
    for _ in ("the first run creates the store and the branch's experiment, through MLflow", "then none imports it"):
        done = subprocess.run([sys.executable, "-c", RUN_IN_PROCESS, f"{notebook}.ipynb"], cwd=repo,
                              capture_output=True, text=True, timeout=600)
        status, run_id, imported = done.stdout.split()[-3:]
    assert (status, imported) == ("FINISHED", "False"), done.stderr
    from mlflow.tracking import MlflowClient

    run = MlflowClient(Project.discover(repo).tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["cd4ml.notebook"] == f"{notebook}.ipynb" and run.data.tags["cd4ml.env.hash"]
    names = sorted(a.path for a in MlflowClient(Project.discover(repo).tracking_uri).list_artifacts(run_id))
    assert names == sorted(["environment.json", f"{notebook}.html", f"{notebook}.ipynb", f"{notebook}.source.py"])
    if notebook == "logs":
        assert run.data.metrics == {"acc": 0.9} and run.data.params == {"p": "1"}


MLFLOW_WRITER = (
    "import sys, mlflow\n"
    "from mlflow.entities import Metric\n"
    "from mlflow.tracking import MlflowClient\n"
    "c = MlflowClient(sys.argv[1])\n"
    "run_id = sys.argv[2]\n"
    "for i in range(int(sys.argv[3])):\n"
    "    c.log_batch(run_id, metrics=[Metric('loss', 1.0 / (i + 1), i, i)])\n"
    "    c.set_tag(run_id, 'progress', str(i))\n"
)


def test_light_and_mlflow_writers_share_a_store_without_errors(repo, tmp_path):
    """A kernel's MLflow logging into one run while the light client records other runs (sweep
    trials in one process, Lab jobs beside a notebook): every write lands, the file stays sound."""
    path, uri = _new_store(tmp_path / "shared")
    light = SqliteClient(path, uri)
    project = _project(repo, uri)
    experiment_id = tracking.ensure_experiment(light, project, "master")
    busy = light.create_run(experiment_id, run_name="logging").info.run_id
    points = 300
    writer = subprocess.Popen([sys.executable, "-c", MLFLOW_WRITER, uri, busy, str(points)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    recorded = []
    try:
        while writer.poll() is None or len(recorded) < 5:  # at least a few runs, and all while it writes
            run_id = tracking.create_run(light, experiment_id, "trial", {"cd4ml.notebook": "t.ipynb"},
                                         {"n": len(recorded)}).info.run_id
            light.log_artifact(run_id, str(repo / "train.py"))
            tracking.end_run(light, run_id, "FINISHED", {"cd4ml.env.hash": "x"})
            recorded.append(run_id)
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    assert len(c.get_metric_history(busy, "loss")) == points and c.get_run(busy).data.tags["progress"] == str(points - 1)
    for n, run_id in enumerate(recorded):
        run = c.get_run(run_id)
        assert (run.info.status, run.data.params, run.data.tags["cd4ml.env.hash"]) == ("FINISHED", {"n": str(n)}, "x")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
