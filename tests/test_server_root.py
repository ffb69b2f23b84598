"""The server's boundary is Jupyter's: paths are relative to the contents manager's root and
confined to it, even when that root is a subfolder of a git repository (real `jupyter server`).

Also home of :func:`served`, a real server whose log is kept (the other ``test_server_*`` modules
use it to prove that refused requests leave no traceback behind).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from nbfactory import (
    commit_all, digest_tree, free_port, init_repo, jupyter_port, percent, stop_group, wait_http, wait_until,
    write_ipynb,
)

HERE = Path(__file__).resolve().parent
SCORE = percent("import mlflow\nmlflow.log_metric('score', alpha * 2)", parameters="alpha: float = 0.5")
SLEEPY = percent("import time\ntime.sleep(pause)", parameters="pause: float = 0.0")
HTML_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


# --- a real server with its log ---------------------------------------------------------------


@dataclass
class Served:
    url: str
    token: str
    root: Path
    log: Path

    def log_text(self, since: int = 0) -> str:
        """The server's log, from byte ``since`` on (a :meth:`mark`)."""
        with open(self.log, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def mark(self) -> int:
        return self.log.stat().st_size

    def call(self, method: str, route: str, query: dict | str | None = None, body: Any = None,
             raw: bytes | None = None, headers: dict | None = None, timeout: float = 120) -> "Reply":
        """One request to ``/cd4ml-nb/<route>`` (or ``/api/...`` when ``route`` starts so)."""
        if isinstance(query, dict):
            query = urllib.parse.urlencode(query, errors="surrogatepass")
        path = route if route.startswith("api/") else f"cd4ml-nb/{route}"
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, dict(e.headers), e.read())


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        return self.json()["message"]


@contextmanager
def served(root: Path, *extra: str, env: dict | None = None) -> Iterator[Served]:
    """A real `jupyter server` on ``root`` (token auth), its stdout and stderr kept in a log file."""
    token = "served-token"
    runtime = Path(tempfile.mkdtemp(prefix="jupyter-runtime-"))
    log = runtime / "server.log"
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environ.update({"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                    "JUPYTER_RUNTIME_DIR": str(runtime), **(env or {})})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                                 f"--port={free_port()}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
                                 f"--ServerApp.root_dir={root}", *extra], env=environ, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{jupyter_port(runtime, proc)}/"
        wait_http(f"{url}api/status?token={token}", proc=proc)
        yield Served(url, token, root, log)
    finally:
        stop_group(proc)
        keep = os.environ.get("CD4ML_KEEP_SERVER_LOG")
        if keep:
            shutil.copy(log, keep)
        shutil.rmtree(runtime, ignore_errors=True)


def assert_no_traceback(server: Served, since: int = 0) -> None:
    text = server.log_text(since)
    assert "Uncaught exception" not in text and "Traceback" not in text, text[-4000:]


def assert_refused(reply: Reply, statuses=(403, 404), secret: str | None = None) -> None:
    """A JSON refusal with a message that reveals no absolute server path."""
    assert reply.status in statuses, (reply.status, reply.body[:300])
    assert reply.headers.get("Content-Type", "").startswith("application/json")
    message = reply.message
    assert message
    if secret:
        assert secret not in message and secret not in reply.body.decode(errors="replace"), message


# --- a root that is a subfolder of a repository -------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    """repo/ (git) with a notebook at the top, the served root repo/sub/ and its traps."""
    repo = init_repo(tmp_path / "repo", branch="try-random-forest")
    (repo / "pyproject.toml").write_text('[tool.cd4ml_nb]\nmax_jobs = 1\n')
    write_ipynb(repo / "slow.ipynb", SCORE)
    sub = repo / "sub"
    sub.mkdir()
    write_ipynb(sub / "train.ipynb", SCORE)
    write_ipynb(sub / "sleepy.ipynb", SLEEPY)
    (sub / "notes").mkdir()
    write_ipynb(sub / "notes" / "deep.ipynb", SCORE)
    (sub / ".hidden").mkdir()
    write_ipynb(sub / ".hidden" / "h.ipynb", SCORE)
    (sub / "broken.ipynb").write_text('{"cells": [')
    (sub / "up").symlink_to(repo, target_is_directory=True)
    (sub / "link.ipynb").symlink_to(repo / "slow.ipynb")
    (sub / "inside-link.ipynb").symlink_to(sub / "train.ipynb")
    commit_all(repo)
    return repo


ABOVE = ["../slow.ipynb", "notes/../../slow.ipynb", "../sub/../slow.ipynb"]
ESCAPES = ["up/slow.ipynb", "link.ipynb"]


def _routes(path: str):
    q = {"path": path}
    return [("GET", "params", q, None), ("GET", "pairing", q, None), ("GET", "runs", {"notebook": path}, None),
            ("POST", "pairing", None, {"path": path}), ("POST", "jobs", None, {"path": path, "parameters": {}})]


def test_files_above_the_root_are_refused_like_the_contents_api(repo, tmp_path):
    before = digest_tree(repo)
    with served(repo / "sub") as server:
        for path in ABOVE:
            contents = server.call("GET", "api/contents/" + urllib.parse.quote(path))
            assert 400 <= contents.status < 500, (path, contents.status)  # Jupyter's own refusal
            for method, route, query, body in _routes(path):
                assert_refused(server.call(method, route, query, body), secret=str(tmp_path))
        for path in ESCAPES:  # symlinks out of the root: Jupyter follows them, we do not
            for method, route, query, body in _routes(path):
                assert_refused(server.call(method, route, query, body), secret=str(tmp_path))
        for path in (".hidden/h.ipynb",):
            for method, route, query, body in _routes(path):
                assert_refused(server.call(method, route, query, body), secret=str(tmp_path))
        listing = server.call("GET", "jobs").json()
        assert listing["jobs"] == [] and listing["total"] == 0
        assert_no_traceback(server)
    assert digest_tree(repo) == before
    assert not (repo / "slow.py").exists()


def test_files_inside_the_root_are_found(repo, tmp_path):
    with served(repo / "sub") as server:
        for path in ("train.ipynb", "notes/deep.ipynb", "inside-link.ipynb", "notes/../train.ipynb"):
            reply = server.call("GET", "params", {"path": path})
            assert reply.status == 200, (path, reply.body)
            assert [p["name"] for p in reply.json()["parameters"]] == ["alpha"]
        reply = server.call("POST", "pairing", body={"path": "train.ipynb"})
        assert reply.status == 200, reply.body
        state = reply.json()
        assert (state["path"], state["ipynb"], state["text"]) == ("train.ipynb", "train.ipynb", "train.py")
        assert (repo / "sub" / "train.py").is_file()
        state = server.call("GET", "pairing", {"path": "train.py"}).json()
        assert state["paired"] and state["in_sync"] and state["ipynb"] == "train.ipynb"
        status = server.call("GET", "status").json()
        assert status["branch"] == "try-random-forest"
        runs = server.call("GET", "runs", {"notebook": "train.ipynb"})
        assert runs.status == 200 and runs.json()["runs"] == []
        missing = server.call("GET", "params", {"path": "nope.ipynb"})
        assert_refused(missing, (404,), secret=str(tmp_path))
        assert "nope.ipynb" in missing.message
        broken = server.call("GET", "params", {"path": "broken.ipynb"})
        assert_refused(broken, (400, 422), secret=str(tmp_path))
        assert "broken.ipynb" in broken.message
        assert_no_traceback(server)


def test_hidden_files_follow_allow_hidden(repo, tmp_path):
    with served(repo / "sub", "--ContentsManager.allow_hidden=True") as server:
        reply = server.call("GET", "params", {"path": ".hidden/h.ipynb"})
        assert reply.status == 200, reply.body
        for path in ESCAPES:  # allow_hidden does not open the way out
            assert_refused(server.call("GET", "params", {"path": path}), secret=str(tmp_path))


@pytest.mark.slow
def test_job_in_a_subfolder_root_html_and_pages(repo, tmp_path):
    """A job of a notebook under the root: paths relative to the root, outputs inside it, its HTML
    served as text/html under the sandbox CSP; jobs listed page by page; cancelling an ended job
    is a 409."""
    sub = repo / "sub"
    with served(sub) as server:
        reply = server.call("POST", "jobs", body={"path": "train.ipynb", "parameters": {"alpha": 2}})
        assert reply.status == 202, reply.body
        first = reply.json()["id"]
        queued = []
        for _ in range(3):  # max_jobs = 1 (the repository's pyproject.toml): these wait queued
            reply = server.call("POST", "jobs", body={"path": "sleepy.ipynb", "parameters": {"pause": 60}})
            assert reply.status == 202, reply.body
            queued.append(reply.json()["id"])
            time.sleep(0.01)  # distinct creation times
        for job_id in queued:
            assert server.call("DELETE", f"jobs/{job_id}").status == 200

        def ended():
            job = server.call("GET", f"jobs/{first}").json()
            return job if job["state"] in ("finished", "failed", "killed") else None

        job = wait_until(ended, 240, "the job ending", interval=0.3)
        assert job["state"] == "finished", job
        assert job["path"] == "train.ipynb" and job["metrics"] == {"score": 4.0}
        for key in ("executed", "html"):
            assert not os.path.isabs(job[key]) and (sub / job[key]).is_file(), job
        assert not (repo / "cd4ml-runs").exists()
        html = server.call("GET", f"jobs/{first}/html")
        assert html.status == 200
        assert html.headers["Content-Type"].startswith("text/html")
        assert html.headers["Content-Security-Policy"] == HTML_CSP
        assert b"<html" in html.body.lower()
        conflict = server.call("DELETE", f"jobs/{first}")
        assert conflict.status == 409 and conflict.message

        newest_first = [*reversed(queued), first]
        page = server.call("GET", "jobs", {"limit": 2}).json()
        assert page["total"] == 4 and [j["id"] for j in page["jobs"]] == newest_first[:2]
        page = server.call("GET", "jobs", {"limit": 2, "offset": 2}).json()
        assert page["total"] == 4 and [j["id"] for j in page["jobs"]] == newest_first[2:]
        assert server.call("GET", "jobs", {"offset": 10}).json()["jobs"] == []
        for bad in ({"limit": 0}, {"limit": "x"}, {"offset": -1}, {"limit": 10**6}):
            assert_refused(server.call("GET", "jobs", bad), (400,))
        assert_no_traceback(server)


def test_reads_create_nothing(repo):
    """A read-only user's GETs (runs included) create no store, no state folder, no .gitignore."""
    sub = repo / "sub"
    before = digest_tree(repo)
    with served(sub, "--ServerApp.authorizer_class=reliability_suite.ReadOnlyAuthorizer") as server:
        for route, query in (("status", None), ("params", {"path": "train.ipynb"}),
                             ("pairing", {"path": "train.ipynb"}), ("jobs", None), ("jobs/0123456789ab", None),
                             ("jobs/0123456789ab/html", None), ("runs", None),
                             ("runs", {"notebook": "train.ipynb", "max_results": 500}),
                             ("runs", {"branch": "master"})):
            reply = server.call("GET", route, query)
            assert reply.status in (200, 404), (route, reply.status, reply.body)
        assert server.call("POST", "pairing", body={"path": "train.ipynb"}).status == 403
    assert digest_tree(repo) == before
    made = [p for p in repo.rglob("*") if ".git" not in p.relative_to(repo).parts[:1]
            and (p.name in (".cd4ml", ".gitignore", "cd4ml-runs") or p.suffix == ".db")]
    assert made == []
