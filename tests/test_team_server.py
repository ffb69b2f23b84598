"""`cd4ml-nb server` as a team runs it (#27, #30), with a real `mlflow server`, real HTTP and, where
named, a real PostgreSQL: an open server on all interfaces is refused; with `--auth` MLflow's
basic-auth app demands credentials, MLflow's old default admin password is refused, runs with the
standard credential variables land on the server and runs without (or with wrong) ones exit 2 before
any kernel; no file holding a password is readable by others; a PostgreSQL that cannot be used is one
line and exit 2, and its password is in no output and on no command line; MLflow's job runner is off
and SIGTERM ends the server's whole process tree.

The servers' store follows ``CD4ML_NB_TEST_TEAM_BACKEND`` (SQLite, or PostgreSQL: ``.ci/run`` runs
this file once more that way)."""
from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pgcluster
import psutil
import pytest
import reliability_suite as suite

from nbfactory import free_port, mlflow_server, stop_group
from test_team_live import source_plugins

pytestmark = pytest.mark.slow
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
NOTEBOOK = suite.percent("import mlflow\nmlflow.log_metric('loss', 0.25)\nmlflow.log_metric('loss', 0.125, step=1)")
needs_postgres = pytest.mark.skipif(not pgcluster.available(), reason="PostgreSQL is not installed")


def status(url: str, user: str | None = None, password: str | None = None, host: str | None = None) -> int:
    """The HTTP status of a GET, with basic credentials when given."""
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def cli(repo: Path, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def private(path: Path) -> bool:
    return not path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)


@pytest.fixture()
def plain_env(tmp_path, monkeypatch) -> dict[str, str]:
    """This source tree's code in subprocesses, and no MLflow credentials of the caller's."""
    for name in (*CREDENTIALS, "MLFLOW_BACKEND_STORE_URI"):
        monkeypatch.delenv(name, raising=False)
    return source_plugins(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A `cd4ml-nb server --host 0.0.0.0 --auth` with a generated admin: (repo, uri, user, password, output)."""
    saved = {name: os.environ.pop(name) for name in CREDENTIALS if name in os.environ}
    repo = suite.make_repo(tmp_path_factory.mktemp("team"))
    (repo / "nb.py").write_text(NOTEBOOK)
    suite.commit_all(repo)
    port, output = free_port(), repo.parent / "server.out"
    server = mlflow_server(repo, port, "--host", "0.0.0.0", "--auth", output=output)
    try:
        admin = dict(line.removeprefix("export ").split("=", 1) for line in
                     (repo / ".cd4ml" / "server" / "admin.env").read_text().splitlines() if line.startswith("export "))
        yield repo, f"http://127.0.0.1:{port}", admin["MLFLOW_TRACKING_USERNAME"], admin["MLFLOW_TRACKING_PASSWORD"], output
    finally:
        stop_group(server)
        os.environ.update(saved)


def test_an_open_server_on_all_interfaces_is_refused_before_anything_starts(tmp_path, plain_env):
    repo = suite.make_repo(tmp_path / "open")
    port = free_port()
    done = cli(repo, "server", "--host", "0.0.0.0", "--port", str(port), env=plain_env, timeout=120)
    assert done.returncode == 2, done
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "--auth" in done.stderr, done.stderr
    assert not (repo / ".cd4ml" / "server").exists() and not listening(port)


def test_with_auth_a_request_needs_the_admins_credentials(auth_server):
    repo, uri, user, password, output = auth_server
    assert status(uri + "/health") == 200  # MLflow keeps it open, for load balancers
    assert status(uri + SEARCH) == 401
    assert status(uri + SEARCH, "admin", "password1234") == 401  # MLflow's old default admin password
    assert status(uri + SEARCH, user, "a-wrong-password") == 401
    assert status(uri + SEARCH, user, password) == 200
    # colleagues reach it by this machine's name (MLflow checks the Host header)
    assert status(uri + SEARCH, user, password, host=f"{socket.gethostname()}:{urlsplit(uri).port}") == 200
    printed = output.read_text()
    assert str(repo / ".cd4ml" / "server" / "admin.env") in printed and password not in printed


def test_no_file_holding_a_password_is_readable_by_others(auth_server):
    repo, _, _, password, _ = auth_server
    folder = repo / ".cd4ml" / "server"
    assert private(folder)
    for name in ("admin.env", "basic_auth.ini", "basic_auth.db", "flask-secret-key"):
        assert private(folder / name), name
    holders = [p for p in repo.parent.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert holders and all(private(p) for p in holders), [(p, oct(p.stat().st_mode)) for p in holders]


def test_a_run_with_the_credential_variables_lands_on_the_server(auth_server, plain_env, monkeypatch):
    from mlflow.tracking import MlflowClient

    repo, uri, user, password, _ = auth_server
    env = {**plain_env, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    done = cli(repo, "run", "nb.py", "-q", "--no-html", "--tracking-uri", uri, env=env)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("master").experiment_id])
    assert [(r.info.status, r.data.metrics) for r in runs] == [("FINISHED", {"loss": 0.125})]
    assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [0.25, 0.125]


@pytest.mark.parametrize("credentials, reason", [
    ({}, "requires sign-in: export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-the-admins-password"},
     "refused the credentials in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
])
def test_a_run_without_good_credentials_exits_2_before_any_kernel(auth_server, plain_env, credentials, reason):
    repo, uri, user, password, _ = auth_server
    listed = [cli(repo, "runs", "--tracking-uri", uri, env={**plain_env, "MLFLOW_TRACKING_USERNAME": user,
                                                             "MLFLOW_TRACKING_PASSWORD": password}).stdout]
    done = cli(repo, "run", "nb.py", "-q", "--no-html", "--tracking-uri", uri, env={**plain_env, **credentials})
    assert done.returncode == 2, done
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and reason in errors[0] and "Traceback" not in done.stderr, done.stderr
    again = cli(repo, "runs", "--tracking-uri", uri, env={**plain_env, "MLFLOW_TRACKING_USERNAME": user,
                                                          "MLFLOW_TRACKING_PASSWORD": password}).stdout
    assert [again] == listed  # no run created, none pending
    listing = cli(repo, "runs", "--tracking-uri", uri, env={**plain_env, **credentials})
    assert listing.returncode == 2 and listing.stderr.count("\n") == 1 and reason in listing.stderr, listing.stderr


def test_the_loopback_default_stays_open_without_mlflows_job_runner_and_stops_on_sigterm(tmp_path, plain_env):
    repo = suite.make_repo(tmp_path / "plain")
    port = free_port()
    server = mlflow_server(repo, port)
    try:
        assert status(f"http://127.0.0.1:{port}{SEARCH}") == 200
        processes = tree(server)
        commands = [" ".join(p.cmdline()) for p in processes]
        assert not [c for c in commands if "huey" in c], commands  # job runner off: 7 consumers fewer
        memory = sum(p.memory_full_info().uss for p in processes)
        print(f"team server: {len(processes)} processes, {memory / 2**20:.0f} MB unique memory")
        assert memory < 1024 * 2**20  # about 0.4-0.5 GB here; the job runner alone adds about 1.4 GB
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(timeout=60) == 130
        gone, alive = psutil.wait_procs(processes, timeout=60)
        assert not alive, alive
    finally:
        if server.poll() is None:
            stop_group(server)


def refused_databases() -> list[tuple[str, str]]:
    """(what, URI) for databases a server must refuse, with the words of the reason."""
    if not pgcluster.available():
        return []
    good = pgcluster.database("team_server_check")
    parts = urlsplit(good)
    return [
        ("password authentication failed", good.replace(f":{parts.password}@", ":not-the-password@")),
        ('database "no_such_database" does not exist', good.rsplit("/", 1)[0] + "/no_such_database"),
        ("failed", f"postgresql://{parts.username}:{parts.password}@127.0.0.1:{free_port()}/team"),
    ]


@needs_postgres
def test_a_postgresql_the_server_cannot_use_is_one_line_and_exit_2(tmp_path, plain_env):
    repo = suite.make_repo(tmp_path / "pg")
    for reason, uri in refused_databases():
        port = free_port()
        done = cli(repo, "server", "--port", str(port), env={**plain_env, "MLFLOW_BACKEND_STORE_URI": uri}, timeout=60)
        assert done.returncode == 2 and done.stdout == "", done  # no banner
        assert done.stderr.count("\n") == 1 and reason in done.stderr, done.stderr
        assert urlsplit(uri).password not in done.stderr and "***" in done.stderr
        assert not listening(port)


@needs_postgres
def test_the_database_password_is_in_no_output_and_on_no_command_line(tmp_path, plain_env):
    repo = suite.make_repo(tmp_path / "pgargs")
    uri = pgcluster.database("team_server_argv")
    password = urlsplit(uri).password
    port, output = free_port(), tmp_path / "server.out"
    server = mlflow_server(repo, port, env={"MLFLOW_BACKEND_STORE_URI": uri}, output=output)
    try:
        assert status(f"http://127.0.0.1:{port}{SEARCH}") == 200
        own = {p.pid for p in tree(server)}
        assert len(own) >= 3  # cd4ml-nb, mlflow server, uvicorn
        on_command_lines = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if password.encode() in (proc / "cmdline").read_bytes():
                    on_command_lines.append(proc.name)
            except OSError:  # a process that ended meanwhile
                continue
        assert on_command_lines == []
    finally:
        stop_group(server)
    printed = output.read_text()
    assert password not in printed and f"{urlsplit(uri).username}:***@" in printed
