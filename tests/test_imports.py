"""Start-up stays light: `import cd4ml_nb` and `cd4ml-nb --help` load no heavy library, nor does
`cd4ml-nb runs` on the embedded store."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ["mlflow", "papermill", "nbconvert", "tornado", "nbformat", "jupytext", "jupyter_server", "pandas"]

PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_is_light():
    assert loaded_after("import cd4ml_nb") == []


def test_help_is_light():
    code = "from cd4ml_nb.cli import main\nimport contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])"
    assert loaded_after(code) == []
    code = code.replace("['--help']", "['run', '--help']")
    assert loaded_after(code) == []


def test_lazy_public_api_resolves():
    assert loaded_after("import cd4ml_nb\ncd4ml_nb.run_notebook\ncd4ml_nb.track") == []
    import cd4ml_nb

    assert callable(cd4ml_nb.run_notebook) and callable(cd4ml_nb.track)


RUNS = """
import contextlib, io, json, sys
from cd4ml_nb.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main({args!r})
print(json.dumps([code, out.getvalue(), sorted(m for m in {heavy!r} if m in sys.modules)]))
"""


def test_runs_on_the_embedded_store_is_light(tmp_path):
    """`cd4ml-nb runs` reads a local store of a verified schema without MLflow, orphans ended too."""
    import socket

    import pytest

    from cd4ml_nb import store, tracking
    from cd4ml_nb.project import Project
    from cd4ml_nb.sqlite_client import SqliteClient
    from cd4ml_nb.store import VERIFIED_REVISIONS, installed_head

    if installed_head() not in VERIFIED_REVISIONS:
        pytest.skip(f"the installed MLflow's schema {installed_head()} is not verified: reads use MlflowClient")
    sys.path.insert(0, str(Path(__file__).parent))
    from nbfactory import commit_all, init_repo

    repo = init_repo(tmp_path / "repo")
    (repo / "train.py").write_text("x = 1\n")
    commit_all(repo)
    project = Project.discover(repo)
    store.ensure_sqlite(project.tracking_uri, project.artifact_root.as_uri())
    c = tracking.read_client(project)
    assert isinstance(c, SqliteClient)
    experiment_id = tracking.ensure_experiment(c, project, "master")
    done = tracking.create_run(c, experiment_id, "train", {tracking.NOTEBOOK: "train.ipynb"}, {"depth": 3})
    tracking.end_run(c, done.info.run_id, "FINISHED")
    orphan = tracking.create_run(c, experiment_id, "gone", {tracking.NOTEBOOK: "train.ipynb",
                                                            tracking.RUNNER: f"{socket.gethostname()}:999999999"}, {})
    for args in (["runs"], ["runs", "--json"]):
        out = subprocess.run([sys.executable, "-c", RUNS.format(args=args, heavy=HEAVY)], cwd=repo,
                             capture_output=True, text=True, check=True).stdout
        code, printed, loaded = json.loads(out.strip().splitlines()[-1])
        assert (code, loaded) == (0, []), printed
        assert done.info.run_id[:12] in printed and orphan.info.run_id[:12] in printed
    assert c.get_run(orphan.info.run_id).info.status == "FAILED"
