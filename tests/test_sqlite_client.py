"""The run's light SQLite client writes what MLflow writes, and is used only where it was verified.

Differential: the same run recorded through ``MlflowClient`` and through ``SqliteClient`` into two
new stores leaves the same rows in every table of MLflow's schema and the same artifact files;
MLflow reads the light client's runs; stores of another schema revision, an MLflow release not in
``VERIFIED`` and ``store_writes = "mlflow"`` go through MLflow; a ``cd4ml-nb run`` of a notebook
that does not use MLflow never imports it in the parent.

The differential tests run on whatever MLflow is installed. With a verified one they must pass;
with another they may not (its runs use MlflowClient): a difference is then an expected failure
that names the release, and a pass means the pair can be verified. To verify a release: install
it, run this file, and add ``Verified(first, last, revision)`` to ``store.VERIFIED``."""
from __future__ import annotations

import functools
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from cd4ml_nb import sqlite_client, store, tracking
from cd4ml_nb.exceptions import ConfigError, TrackingError
from cd4ml_nb.project import Project
from cd4ml_nb.sqlite_client import SqliteClient, open_client
from cd4ml_nb.store import STORE_WRITES_ENV, Verified, installed_head, installed_version, verified_revision

from nbfactory import commit_all, init_repo, percent, write_ipynb

TIMES = {"start_time", "end_time", "creation_time", "last_update_time", "timestamp", "deleted_time"}


def light_expected() -> bool:
    """Whether runs here take the light client: a verified MLflow, and no store_writes forced."""
    return verified_revision() is not None and os.environ.get(STORE_WRITES_ENV, "auto") == "auto"


def differential(test):
    """A test of the light client against the installed MLflow: it must pass when that MLflow is
    verified; otherwise a failure is expected (runs there use MlflowClient) and says so. It does not
    depend on ``store_writes``: the CI pass with ``CD4ML_NB_STORE_WRITES=mlflow`` skips it."""
    @functools.wraps(test)
    def checked(*args, **kwargs):
        if os.environ.get(STORE_WRITES_ENV, "auto") != "auto":
            pytest.skip(f"tests the light client itself, whatever {STORE_WRITES_ENV} says: run without it")
        if verified_revision() is not None:
            return test(*args, **kwargs)
        try:
            test(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any difference, an assertion or a refused write
            pytest.xfail(f"MLflow {installed_version()} (schema {installed_head()}) is not verified and the light "
                         f"client differs from it ({type(e).__name__}: {str(e)[:300]}); runs use MlflowClient")

    return checked


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


@differential
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


@differential
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


@differential
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


@differential
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


def _with_revision(path: Path, revision: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    db.close()


def _as_if_verified(monkeypatch) -> Verified:
    """Make the installed MLflow's schema revision one verified for releases 3.17.0 to 3.17.2, and
    the installed MLflow 3.17.1, so the gate can be tested with whatever MLflow is installed."""
    pair = Verified("3.17.0", "3.17.2", installed_head())
    monkeypatch.setattr(store, "VERIFIED", (pair,))
    monkeypatch.setattr(store, "installed_version", lambda: "3.17.1")
    return pair


def test_only_a_verified_mlflow_and_schema_pair_gets_the_light_client(repo, tmp_path, monkeypatch):
    """The gate is (MLflow release, schema revision), both verified: a newer MLflow that keeps the
    revision, a pre-release, a store of another revision and metadata naming another MLflow than
    the one on the path all go through MlflowClient. Runs on any installed MLflow."""
    monkeypatch.delenv(STORE_WRITES_ENV, raising=False)
    path, uri = _new_store(tmp_path / "s")
    pair = _as_if_verified(monkeypatch)
    for version, light in ((pair.first, True), (pair.last, True), ("0.9.0", False), ("99.0.0", False),
                           (f"{pair.last}rc1", False), (f"{pair.last}.dev0", False), (f"{pair.last}+local", False),
                           (None, False)):
        monkeypatch.setattr(store, "installed_version", lambda: version)
        assert isinstance(open_client(path, uri), SqliteClient) is light, version
        assert isinstance(open_client(path, uri, "mlflow"), SqliteClient) is False
    monkeypatch.setattr(store, "installed_version", lambda: pair.last)
    _with_revision(path, "feedfacecafe")  # a newer MLflow's store
    assert open_client(path, uri) is None
    _with_revision(path, pair.revision)
    monkeypatch.setattr(store, "installed_head", lambda: "feedfacecafe")  # metadata of another MLflow
    assert open_client(path, uri) is None
    monkeypatch.setattr(store, "installed_head", lambda: pair.revision)
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert open_client(path, uri) is None
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    assert isinstance(open_client(path, uri), SqliteClient)
    for forced in ("mlflow", "MLflow", "anything else"):
        monkeypatch.setenv(STORE_WRITES_ENV, forced)
        assert open_client(path, uri) is None, forced


def test_the_installed_mlflow_takes_the_path_it_was_verified_for(repo, tmp_path, monkeypatch):
    """With this MLflow, runs and reads take the light client exactly when it is verified and
    nothing forces MLflow's client; an out-of-date store is MLflow's to refuse."""
    from mlflow.tracking import MlflowClient

    path, uri = _new_store(tmp_path / "newer")
    _with_revision(path, "feedfacecafe")  # a newer MLflow's store (before MLflow caches a store for it)
    assert open_client(path, uri) is None
    with pytest.raises(Exception, match="out-of-date database schema"):  # MLflow's own answer to it
        tracking.run_client(_project(repo, uri)).search_experiments()
    path, uri = _new_store(tmp_path / "s")
    expected = SqliteClient if light_expected() else MlflowClient
    assert isinstance(tracking.run_client(_project(repo, uri)), expected)
    assert isinstance(tracking.read_client(_project(repo, uri)), expected)


def test_store_writes_mlflow_sends_every_run_and_read_through_mlflowclient(repo, tmp_path, monkeypatch):
    """``store_writes = "mlflow"`` in ``[tool.cd4ml_nb]``, or ``CD4ML_NB_STORE_WRITES=mlflow``
    (which wins over pyproject.toml), forces MLflow's client for the project's store; a word the
    setting does not know is a configuration error naming where it came from."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv(STORE_WRITES_ENV, raising=False)
    _as_if_verified(monkeypatch)
    path, uri = _new_store(repo / ".cd4ml")  # the embedded store's place

    def clients() -> tuple[type, type]:
        project = Project.discover(repo)
        assert project.store_path == path
        return type(tracking.run_client(project)), type(tracking.read_client(project))

    assert clients() == (SqliteClient, SqliteClient)
    (repo / "pyproject.toml").write_text('[tool.cd4ml_nb]\nstore_writes = "mlflow"\n')
    assert Project.discover(repo).config.store_writes == "mlflow"
    assert clients() == (MlflowClient, MlflowClient)
    (repo / "pyproject.toml").write_text('[tool.cd4ml_nb]\nstore_writes = "auto"\n')
    assert clients() == (SqliteClient, SqliteClient)
    monkeypatch.setenv(STORE_WRITES_ENV, "mlflow")
    assert clients() == (MlflowClient, MlflowClient)
    monkeypatch.setenv(STORE_WRITES_ENV, "sqlite")
    with pytest.raises(ConfigError, match=f"environment {STORE_WRITES_ENV} store_writes = 'sqlite'"):
        Project.discover(repo)
    monkeypatch.delenv(STORE_WRITES_ENV)
    (repo / "pyproject.toml").write_text('[tool.cd4ml_nb]\nstore_writes = "fast"\n')
    with pytest.raises(ConfigError, match="store_writes = 'fast'"):
        Project.discover(repo)


RUN_IN_PROCESS = (
    "import sys\n"
    "from cd4ml_nb.runner import RunOptions, run_notebook\n"
    "result = run_notebook(sys.argv[1], options=RunOptions(progress=False))\n"
    "print(result.status, result.run_id, 'mlflow' in sys.modules)\n"
)


@pytest.mark.parametrize("notebook", ["plain", "logs"])
def test_a_run_imports_mlflow_only_in_a_kernel_that_uses_it(repo, notebook):
    """With the light client the parent never imports MLflow; through MlflowClient (an MLflow not
    verified, or store_writes forced) it does, and the run records the same."""
    write_ipynb(repo / "plain.ipynb", percent("print(1 + 1)"))
    write_ipynb(repo / "logs.ipynb", percent("import mlflow\nmlflow.log_metric('acc', 0.9)\nmlflow.log_param('p', 1)"))
    commit_all(repo)
    for _ in ("the first run creates the store and the branch's experiment, through MLflow", "then none imports it"):
        done = subprocess.run([sys.executable, "-c", RUN_IN_PROCESS, f"{notebook}.ipynb"], cwd=repo,
                              capture_output=True, text=True, timeout=600)
        status, run_id, imported = done.stdout.split()[-3:]
    assert (status, imported) == ("FINISHED", str(not light_expected())), done.stderr
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


@differential
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


# --- reads: the light client answers the read-only commands' queries as MlflowClient does ----------

def _typed(value):
    """A value with its type, so an int where MLflow has a str (or a float for an int) differs."""
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


def _run_dict(run) -> dict:
    info = {k: _typed(getattr(run.info, k)) for k in (
        "run_id", "experiment_id", "status", "start_time", "end_time", "lifecycle_stage", "artifact_uri", "run_name",
        "user_id")}
    data = {k: {key: _typed(v) for key, v in getattr(run.data, k).items()} for k in ("tags", "params", "metrics")}
    return {**info, **data}


def _experiment_dict(e) -> dict:
    fields = ("experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time")
    return {**{k: _typed(getattr(e, k)) for k in fields}, "tags": dict(e.tags)}


def _pages(search, **kwargs) -> list:
    """Every page of a search, followed by its tokens: [(page's items as dicts, token), ...]."""
    pages, token = [], None
    while True:
        page = search(page_token=token, **kwargs)
        pages.append(([_run_dict(r) if hasattr(r, "info") else _experiment_dict(r) for r in page], page.token))
        token = page.token
        if token is None or len(pages) > 100:
            return pages


def _mlflow_store(tmp_path: Path) -> tuple[str, dict[str, str], list[str]]:
    """A store written by MLflow itself: three experiments and a deleted one; runs FINISHED, FAILED,
    RUNNING, KILLED and deleted, with tags, params, several steps of metrics (NaN and inf among them),
    start times tied and one run of no name (as MLflow <= 1.29 left them)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    path, uri = _new_store(tmp_path / "mlflow")
    c = MlflowClient(uri)
    artifacts = (tmp_path / "mlflow" / "artifacts").as_uri()
    ids = {name: c.create_experiment(name, artifact_location=f"{artifacts}/{n}", tags={"team": name[:3]})
           for n, name in enumerate(["master", "feature/x", "other", "gone"])}
    statuses = ["FINISHED", "FAILED", "RUNNING", "KILLED", "FINISHED", "FINISHED"]
    runs, t0 = [], 1_700_000_000_000
    for n in range(31):
        experiment = ["master", "master", "feature/x", "other", "gone"][n % 5]
        start = t0 + (n // 3) * 1000  # three runs share each start time: ties go by run id
        tags = {"cd4ml.notebook": ["a.ipynb", "b.ipynb", "A.ipynb", "dir/c.ipynb"][n % 4], "mlflow.user": f"u{n % 3}",
                "cd4ml.kind": "run", "mlflow.source.git.branch": experiment}
        if n % 7 == 0:
            tags.pop("cd4ml.notebook")
        run = c.create_run(ids[experiment], start_time=start, tags=tags, run_name=f"run-{n}")
        run_id = run.info.run_id
        metrics = [Metric("loss", 1.0 / (step + n + 1), t0 + step, step) for step in range(4)]
        metrics += [Metric("acc", 0.5 + n / 100, t0, 0), Metric("acc", 0.4, t0 + 5, 0)]  # same step: newest wins
        if n % 4 == 1:
            metrics += [Metric("nan", float("nan"), t0, 0), Metric("big", float("inf"), t0, 0),
                        Metric("neg", -2.5, t0, 3), Metric("neg", 7.0, t0, 1)]
        c.log_batch(run_id, metrics=metrics, params=[Param("max_depth", str(n % 5)), Param("name", f"n {n}")],
                    tags=[RunTag("cd4ml.env.hash", "x" * (n % 3))])
        status = statuses[n % len(statuses)]
        if status != "RUNNING":
            c.set_terminated(run_id, status, end_time=start + 500 + n)
        if n % 6 == 4:
            c.delete_run(run_id)
        runs.append(run_id)
    c.delete_experiment(ids["gone"])
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE runs SET name = '' WHERE run_uuid = ?", (runs[8],))  # named by its mlflow.runName tag
    db.close()
    return uri, ids, runs


@differential
def test_the_light_client_reads_what_mlflow_reads(tmp_path):
    """Differential: every query form the read-only commands use, through MlflowClient and through
    the light client, on a store MLflow wrote, gives the same experiments, runs (each field typed),
    order, pages and tokens; and the light client answered them itself, without MLflow."""
    from mlflow.entities import ViewType as MlflowViewType
    from mlflow.tracking import MlflowClient

    from cd4ml_nb.sqlite_client import ViewType

    uri, ids, runs = _mlflow_store(tmp_path)
    theirs, ours = MlflowClient(uri), SqliteClient(store.sqlite_path(uri), uri)
    assert (ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL) == (
        MlflowViewType.ACTIVE_ONLY, MlflowViewType.DELETED_ONLY, MlflowViewType.ALL)
    checked = 0

    def same(what: str, call) -> None:
        nonlocal checked
        a, b = call(theirs), call(ours)
        assert b == a, what
        checked += 1

    views = (ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL)
    for view in views:
        same(f"experiments {view}", lambda c: _pages(c.search_experiments, view_type=view))
        same(f"experiments {view} by 2", lambda c: _pages(c.search_experiments, view_type=view, max_results=2))
    same("experiments, default view", lambda c: [_experiment_dict(e) for e in c.search_experiments()])
    for name, experiment_id in ids.items():
        same(f"experiment {name}", lambda c: _experiment_dict(c.get_experiment_by_name(name)))
        same(f"experiment {experiment_id}", lambda c: _experiment_dict(c.get_experiment(experiment_id)))
    same("no such experiment", lambda c: c.get_experiment_by_name("nope"))
    for run_id in runs:
        same(f"run {run_id}", lambda c: _run_dict(c.get_run(run_id)))

    prefix = runs[3][:6]
    filters = ["", "attributes.status = 'FINISHED'", "attributes.status = 'RUNNING'", "attributes.status != 'FAILED'",
               "attributes.status LIKE 'F%'", "attr.status = 'KILLED'",
               "tags.`cd4ml.notebook` = 'a.ipynb'", "tags.`cd4ml.notebook` != 'a.ipynb'",
               "tags.`cd4ml.notebook` LIKE 'a%'",  # LIKE is case-sensitive, as MLflow makes SQLite's
               "tag.`mlflow.user` = 'u1'", "tags.team = 'mas'",
               f"attributes.run_id LIKE '{prefix}%'", f"attributes.run_id LIKE '{prefix.upper()}%'",
               f"run.run_id = '{runs[4]}'", f"attributes.`run_id` LIKE '{runs[10][:3]}%'",
               "attributes.status = 'FINISHED' and tags.`cd4ml.notebook` = 'b.ipynb'",
               "tags.`cd4ml.notebook` LIKE '%.ipynb' AND attributes.status != 'RUNNING' and tags.`cd4ml.kind` = 'run'"]
    orders = [None, ["attributes.start_time DESC"], ["attributes.start_time ASC"], ["attributes.start_time"]]
    groups = [[ids["master"]], [ids["master"], ids["feature/x"]], list(ids.values()), [int(ids["other"])], []]
    for where in filters:
        for view in views:
            for order in orders:
                for group in groups:
                    what = f"runs of {group} where {where!r} ({view}, {order})"
                    same(what, lambda c: _pages(c.search_runs, experiment_ids=group, filter_string=where,
                                                run_view_type=view, order_by=order))
                    if where in ("", "attributes.status != 'FAILED'"):
                        for size in (1, 4, 7):
                            same(f"{what} by {size}", lambda c: _pages(
                                c.search_runs, experiment_ids=group, filter_string=where, run_view_type=view,
                                order_by=order, max_results=size))
    same("all at once", lambda c: _pages(c.search_runs, experiment_ids=list(ids.values()), max_results=None))
    same("exactly one full page", lambda c: _pages(c.search_runs, experiment_ids=[ids["feature/x"]], max_results=6))
    same("the call as positional arguments", lambda c: [_run_dict(r) for r in c.search_runs(
        [ids["master"]], "attributes.status = 'FINISHED'", ViewType.ALL, 3, ["attributes.start_time DESC"])])
    assert ours._fallback is None, "the light client handed a supported query to MLflow"
    assert checked > 1000

    same("an unknown view type", lambda c: _pages(c.search_runs, experiment_ids=[ids["master"]], run_view_type=7))
    for bad in ({"page_token": "not a token"}, {"max_results": 0}, {"max_results": 50001}):
        for c in (theirs, ours):
            with pytest.raises(Exception):
                c.search_runs([ids["master"]], **bad)
    with pytest.raises(TrackingError, match="not found"):
        ours.get_run("0" * 32)
    with pytest.raises(TrackingError, match="No Experiment"):
        ours.get_experiment("12345")

    # Another filter or order is MLflow's to answer: the same result, through MLflow's client.
    for where, order in (("params.max_depth = '2'", None), ("metrics.loss < 0.1", None),
                         ("", ["metrics.acc DESC"]), ("tags.`x` = 'it''s'", None)):
        assert _pages(ours.search_runs, experiment_ids=[ids["master"]], filter_string=where, order_by=order) == \
            _pages(theirs.search_runs, experiment_ids=[ids["master"]], filter_string=where, order_by=order)
    assert ours._fallback is not None


@differential
def test_the_read_only_commands_answer_the_same_through_either_client(repo, tmp_path, monkeypatch):
    """``runs_page``, ``resolve_run_id`` and ``reconcile_orphans`` give the same answers whether
    ``read_client`` hands out the light client or MLflow's (each forced in turn, whatever MLflow is
    installed); it never creates a store."""
    from mlflow.tracking import MlflowClient

    from cd4ml_nb.exceptions import BadInput, NoStore

    missing = tmp_path / "none" / "mlflow.db"
    with pytest.raises(NoStore):
        tracking.read_client(_project(repo, f"sqlite:///{missing}"))
    assert not missing.parent.exists()

    uri, ids, runs = _mlflow_store(tmp_path)
    project = _project(repo, uri)
    monkeypatch.setattr(sqlite_client, "open_client", lambda path, uri, mode=None: SqliteClient(path, uri))
    assert isinstance(tracking.read_client(project), SqliteClient)

    def answers() -> list:
        found = [tracking.runs_page(project, name, None, 4) for name in ("master", "feature/x", "nope")]
        token = found[0].next_page_token
        found.append(tracking.runs_page(project, "master", None, 4, token))
        found.append(tracking.runs_page(project, "master", "a.ipynb", 3))
        found.append(tracking.resolve_run_id(tracking.read_client(project), runs[7][:8]))
        found.append(tracking.resolve_run_id(tracking.read_client(project), runs[4]))  # a deleted run
        for bad in ("0000000", runs[7][:3], "xyz"):
            with pytest.raises(BadInput) as refused:
                tracking.resolve_run_id(tracking.read_client(project), bad)
            found.append(str(refused.value))
        return found

    light = answers()
    with monkeypatch.context() as m:
        m.setattr(sqlite_client, "open_client", lambda path, uri, mode=None: None)
        assert isinstance(tracking.read_client(project), MlflowClient)
        assert repr(answers()) == repr(light)  # repr: NaN metrics compare equal
    assert [r.run_id for r in light[0].runs] and light[0].next_page_token

    # A RUNNING run whose runner is gone is ended FAILED through the light client, as through MLflow's.
    c = tracking.read_client(project)
    orphan = c.create_run(ids["master"], run_name="orphan", tags={tracking.RUNNER: f"{os.uname().nodename}:999999999",
                                                                   "cd4ml.notebook": "a.ipynb"}).info.run_id
    monkeypatch.setattr(tracking.socket, "gethostname", lambda: os.uname().nodename)
    assert tracking.reconcile_orphans(project, "master") == [orphan]
    ended = MlflowClient(uri).get_run(orphan)
    assert (ended.info.status, ended.data.tags[tracking.REASON]) == ("FAILED", "orphaned") and ended.info.end_time
    assert tracking.reconcile_orphans(project) == []
