"""SQLite stores named by the user: born complete under concurrency, artifacts outside the work
tree, damaged stores named, reads that create nothing, a capped uncommitted diff."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cd4ml_nb import store
from nbfactory import commit_all, git, init_repo, percent, write_ipynb

LOGS = percent(
    "import mlflow\nmlflow.log_metric('score', 1.0)\nmlflow.log_text('hello', 'note.txt')",
)

# One first use of the store per process, the way every entry point reaches it.
FIRST_USE = """
import sys
from cd4ml_nb import tracking
from cd4ml_nb.project import Project
project = Project.discover(sys.argv[1], tracking_uri=sys.argv[2])
c = tracking.client(project)
exp = tracking.ensure_experiment(c, project, "concurrent")
run = tracking.create_run(c, exp, "first-use", {}, {"p": 1})
tracking.end_run(c, run.info.run_id, "FINISHED")
"""


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def repo(tmp_path):
    repo = init_repo(tmp_path / "repo", branch="master")
    (repo / "notebooks").mkdir()
    write_ipynb(repo / "notebooks" / "logs.ipynb", LOGS)
    (repo / ".gitignore").write_text("*.log\n")
    commit_all(repo, "notebook")
    return repo


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def runs_in(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def test_eight_processes_first_use_a_new_store_together(repo, tmp_path):
    db = tmp_path / "outside" / "team.db"
    uri = f"sqlite:///{db}"
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(repo), uri], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outcomes = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=600)]]
    failed = [f"exit {code}\n{err}" for code, err in outcomes if code]
    if failed:
        pytest.fail(f"{len(failed)} of 8 processes failed:\n" + "\n=====\n".join(failed), pytrace=False)
    assert store.state(db) == "complete"
    runs = runs_in(uri)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert not list(db.parent.glob(".team.db.creating-*"))  # no temporary store left behind


@pytest.mark.slow
def test_eight_concurrent_first_runs_on_a_new_store_outside_the_project(repo, tmp_path):
    db = tmp_path / "elsewhere" / "mlflow.db"
    procs = [subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "logs.ipynb", "-q",
                               "--tracking-uri", f"sqlite:///{db}"], cwd=repo / "notebooks",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outcomes = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=900)]]
    failed = [f"exit {code}\n{out}--- stderr\n{err}" for code, out, err in outcomes if code]
    if failed:  # whole, untruncated: the reason line is what tells a store race from a slow kernel
        pytest.fail(f"{len(failed)} of 8 runs failed:\n" + "\n=====\n".join(failed), pytrace=False)
    runs = runs_in(f"sqlite:///{db}")
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.metrics["score"] for r in runs} == {1.0}
    # artifacts beside the database, none in the work tree, and the work tree stays clean
    assert not (repo / "notebooks" / "mlruns").exists() and not (repo / "mlruns").exists()
    assert len(list((tmp_path / "elsewhere" / "mlflow-artifacts").rglob("note.txt"))) == 8
    assert git(repo, "status", "--porcelain") == ""


def test_relative_store_in_the_project_keeps_runs_clean(repo):
    """`MLFLOW_TRACKING_URI=sqlite:///mlflow.db`, as MLflow's docs say, run from the notebook's folder."""
    for _ in range(2):
        done = cli("run", "logs.ipynb", "-q", "--tracking-uri", "sqlite:///mlflow.db", "--json", cwd=repo / "notebooks")
        assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tracking_uri"] == f"sqlite:///{repo / 'notebooks' / 'mlflow.db'}"
    (first, second) = sorted(runs_in(result["tracking_uri"]), key=lambda r: r.info.start_time)
    # the store and its lock are this project's files: not a change of the user's code
    assert second.data.tags["cd4ml.git.dirty"] == "false"
    assert not (repo / "notebooks" / "mlruns").exists()
    assert (repo / ".cd4ml" / "artifacts").is_dir()


def test_half_migrated_store_is_named_with_the_way_out(repo, tmp_path):
    db = tmp_path / "broken.db"
    done = cli("runs", "--tracking-uri", f"sqlite:///{db}", cwd=repo)
    assert done.returncode == 0 and not db.exists()  # a read creates no store
    store.ensure_sqlite(f"sqlite:///{db}", (tmp_path / "art").as_uri())
    with sqlite3.connect(db) as conn:  # what an interrupted MLflow migration leaves behind
        conn.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250))")
    before = db.read_bytes()
    done = cli("run", "notebooks/logs.ipynb", "-q", "--tracking-uri", f"sqlite:///{db}", cwd=repo)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert str(db) in lines[0] and "_alembic_tmp_tags" in lines[0] and f"mv {db} {db}.broken" in lines[0]
    assert db.read_bytes() == before


def test_empty_file_becomes_a_complete_store(repo, tmp_path):
    db = tmp_path / "empty.db"
    db.touch()  # what `sqlite3 empty.db` or an interrupted first open leaves
    done = cli("runs", "--tracking-uri", f"sqlite:///{db}", cwd=repo)
    assert done.returncode == 0
    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    tracking.client(Project.discover(repo, tracking_uri=f"sqlite:///{db}"))
    assert store.state(db) == "complete"


def test_uncommitted_diff_is_capped_and_leaves_out_ignored_files(repo, tmp_path):
    from cd4ml_nb import gitinfo

    (repo / "notebooks" / "big.txt").write_text("x" * 200 + "\n" + "y\n" * 50_000)
    (repo / "debug.log").write_text("ignored by .gitignore\n")
    (repo / ".cd4ml").mkdir(exist_ok=True)
    (repo / ".cd4ml" / "own.txt").write_text("ours\n")
    info = gitinfo.inspect(repo, exclude=[repo / ".cd4ml"], max_diff_bytes=10_000)
    assert info.dirty and info.diff_truncated
    assert len(info.diff.encode()) <= 10_100
    assert info.diff.splitlines()[-1].startswith("# cd4ml-nb: diff truncated: ")
    assert info.diff.splitlines()[-1].endswith("bytes, the first 10000 kept")
    assert "debug.log" not in info.diff and "own.txt" not in info.diff
    whole = gitinfo.inspect(repo, exclude=[repo / ".cd4ml"])
    assert not whole.diff_truncated and "big.txt" in whole.diff
    assert git(repo, "status", "--porcelain", "--untracked-files=all").count("??") == 2  # index untouched
    # applying the recorded diff in a clean checkout restores the untracked file exactly
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "apply", "-"], input=whole.diff.encode(), cwd=clone, check=True)
    assert (clone / "notebooks" / "big.txt").read_bytes() == (repo / "notebooks" / "big.txt").read_bytes()


def _api(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    import urllib.request

    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_lab_job_on_a_new_explicit_store_while_the_server_starts(tmp_path):
    """The server's start-up reconcile and the first job both reach a store that does not exist yet."""
    import reliability_suite as suite

    repo = suite.make_repo(tmp_path)
    db = tmp_path / "team-store" / "lab.db"
    with suite.jupyter_server(repo, f"--Cd4mlConfig.tracking_uri=sqlite:///{db}") as server:
        job = _api(f"{server.url}cd4ml-nb/jobs", server.token, "POST", {"path": "score.ipynb", "parameters": {}})
        url = f"{server.url}cd4ml-nb/jobs/{job['id']}"
        from nbfactory import wait_until

        ended = wait_until(lambda: (j := _api(url, server.token))["state"] in ("finished", "failed", "killed") and j,
                           600, "the job ending")
        assert ended["state"] == "finished", ended
    assert store.state(db) == "complete"
    (run,) = runs_in(f"sqlite:///{db}")
    assert run.info.status == "FINISHED" and run.data.metrics == {"score": 0.5}


@pytest.mark.parametrize("name", ["q?x", "h#1", "p%20c"])
def test_a_store_in_a_folder_named_with_uri_syntax_is_read_where_it_is(tmp_path, name):
    """`?`, `#` and `%` in a folder name are file name characters, not a URI's query or fragment:
    the store's state is read from that file and no other file is created."""
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "mlflow.db"
    assert store.state(path) == "missing"
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('x')")
    db.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert store.state(path) == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made at the name's prefix


def test_a_project_in_a_folder_named_with_uri_syntax_keeps_its_store_inside(tmp_path):
    """The embedded store's URI encodes the project's path: `a?b` was read as the file `a` with the
    query `b`, which put the store and its lock outside the project."""
    parent = tmp_path / "work"
    parent.mkdir()
    repo = init_repo(parent / "a?b#c%d", branch="master")
    write_ipynb(repo / "logs.ipynb", LOGS)
    commit_all(repo)
    done = subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "run", "logs.ipynb", "-q", "--json"], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    beside = [p for p in parent.rglob("*") if not p.is_relative_to(repo)]
    # MLflow makes the store's folder from the URI's text without decoding it (mlflow.store.db.utils.
    # _make_parent_dirs_if_sqlite): an empty folder with the encoded name is all it leaves beside.
    assert all(p.is_dir() for p in beside) and {p.name for p in beside} <= {"a%3Fb%23c%25d", ".cd4ml"}
    assert store.sqlite_path(result["tracking_uri"]) == repo / ".cd4ml" / "mlflow.db"
    from mlflow.tracking import MlflowClient

    run = MlflowClient(result["tracking_uri"]).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics == {"score": 1.0}
    assert (repo / ".cd4ml" / "mlflow.db").stat().st_size > 0
