"""Server extension: every route authenticated; `GET /cd4ml-nb/status` reports the branch."""
from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from cd4ml_nb.routes import NAMESPACE, ROUTES

from nbfactory import commit_all, init_repo, percent, wait_until_async, write_ipynb

METHODS = ("get", "post", "put", "patch", "delete")


SCORE = percent(
    "import time, mlflow\ntime.sleep(pause)\nmlflow.log_metric('score', alpha * 2)",
    parameters="alpha: float = 0.5  # weight\npause: float = 0.0",
)


@pytest.fixture
def jp_root_dir(tmp_path):
    root = init_repo(tmp_path / "served", branch="try-random-forest")
    write_ipynb(root / "score.ipynb", SCORE)
    (root / "README.md").write_text("x\n")
    commit_all(root)
    return root


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


async def call(jp_fetch, *parts, method="GET", body=None, params=None):
    """(status, json) of a request, errors included."""
    try:
        response = await jp_fetch(NAMESPACE, *parts, method=method, params=params,
                                  body=None if body is None else json.dumps(body), allow_nonstandard_methods=True)
    except HTTPClientError as e:
        return e.code, json.loads(e.response.body) if e.response is not None and e.response.body else {}
    return response.code, json.loads(response.body) if response.body else {}


async def wait_job(jp_fetch, job_id, timeout=240, until=lambda job: job["state"] in ("finished", "failed", "killed"),
                   what="the job ending"):
    async def reached():
        code, job = await call(jp_fetch, "jobs", job_id)
        assert code == 200
        return job if until(job) else None

    return await wait_until_async(reached, timeout, f"{what} ({job_id})", interval=0.3)


async def test_status_reports_branch_and_store(jp_fetch, jp_root_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    response = await jp_fetch(NAMESPACE, "status")
    assert response.code == 200
    data = json.loads(response.body)
    assert data["branch"] == "try-random-forest"
    assert data["base_branch"] == "master"
    assert data["tracking_uri"] == f"sqlite:///{jp_root_dir / '.cd4ml' / 'mlflow.db'}"
    assert data["mlflow_ui_url"] is None and data["version"]
    assert data["mlflow_ui_proxy"] == "cd4ml-nb/mlflow/"  # the embedded store: its UI proxied here


def _implemented(handler) -> list[str]:
    from jupyter_server.base.handlers import APIHandler

    return [m for m in METHODS if getattr(handler, m) is not getattr(APIHandler, m)]


@pytest.mark.parametrize("path, handler", ROUTES)
async def test_every_route_refuses_requests_without_credentials(http_server_client, jp_base_url, path, handler):
    methods = _implemented(handler)
    assert methods, f"{handler.__name__} implements no verb"
    for method in methods:
        body = b"{}" if method in ("post", "put", "patch") else None
        for headers in ({}, {"Authorization": "token wrong"}):
            with pytest.raises(HTTPClientError) as info:
                await http_server_client.fetch(
                    f"{jp_base_url}{NAMESPACE}/{path.replace('([^/]+)', '0123456789ab')}",
                    method=method.upper(), body=body, headers=headers, follow_redirects=False,
                )
            assert info.value.code in (401, 403), (path, method, headers)


@pytest.mark.parametrize("path, handler", ROUTES)
def test_every_verb_is_decorated_authenticated_then_authorized(path, handler):
    from jupyter_server.serverapp import _has_tornado_web_authenticated

    for name in _implemented(handler):
        method = getattr(handler, name)
        assert _has_tornado_web_authenticated(method), f"{handler.__name__}.{name} lacks @tornado.web.authenticated"
        inner = method.__wrapped__
        assert inner.__code__.co_qualname.startswith("authorized"), f"{handler.__name__}.{name} lacks @authorized"


async def test_pairing_and_params(jp_fetch, jp_root_dir):
    code, state = await call(jp_fetch, "pairing", params={"path": "score.ipynb"})
    assert code == 200 and state["paired"] is False
    code, state = await call(jp_fetch, "pairing", method="POST", body={"path": "score.ipynb"})
    assert code == 200 and state["paired"] and state["in_sync"] and state["text"] == "score.py"
    assert (jp_root_dir / "score.py").exists()
    code, contract = await call(jp_fetch, "params", params={"path": "score.py"})
    assert code == 200
    assert [(p["name"], p["type"], p["default"], p["help"]) for p in contract["parameters"]] == [
        ("alpha", "float", 0.5, "weight"), ("pause", "float", 0.0, "")]
    # a job on a pair whose sides differ is refused before it is queued: a stale side never runs
    py = jp_root_dir / "score.py"
    py.write_text(py.read_text().replace("alpha * 2", "alpha * 3"))
    code, reply = await call(jp_fetch, "jobs", method="POST", body={"path": "score.ipynb", "parameters": {}})
    assert code == 409 and "score.py is newer" in reply["message"] and "cd4ml-nb sync score.ipynb" in reply["message"]
    code, listing = await call(jp_fetch, "jobs")
    assert listing["jobs"] == []


async def test_job_runs_like_the_cli_and_lists(jp_fetch, jp_root_dir):
    from mlflow.tracking import MlflowClient

    code, reply = await call(jp_fetch, "jobs", method="POST", body={"path": "score.ipynb", "parameters": {"alpha": 2}})
    assert code == 202
    job = await wait_job(jp_fetch, reply["id"])
    assert job["state"] == "finished", job
    assert job["metrics"] == {"score": 4.0} and job["progress"]["done"] == job["progress"]["total"] > 0
    c = MlflowClient(f"sqlite:///{jp_root_dir / '.cd4ml' / 'mlflow.db'}")
    run = c.get_run(job["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.git.branch"] == "try-random-forest"
    assert run.data.tags["mlflow.source.name"] == "score.ipynb"
    assert {"score.ipynb", "score.html", "score.source.py"} <= {a.path for a in c.list_artifacts(run.info.run_id)}
    code, listing = await call(jp_fetch, "jobs")
    assert [j["id"] for j in listing["jobs"]] == [reply["id"]]
    code, runs = await call(jp_fetch, "runs", params={"notebook": "score.ipynb"})
    assert code == 200 and runs["experiment"] == "try-random-forest"
    assert [r["run_id"] for r in runs["runs"]] == [job["run_id"]] and runs["next_page_token"] is None
    assert runs["runs"][0]["kind"] == "run" and runs["runs"][0]["notebook"] == "score.ipynb"
    response = await jp_fetch(NAMESPACE, "jobs", reply["id"], "html")
    assert response.headers["Content-Security-Policy"].startswith("sandbox")


async def test_cancel_mid_run_ends_killed(jp_fetch, jp_root_dir):
    from mlflow.tracking import MlflowClient

    code, reply = await call(jp_fetch, "jobs", method="POST", body={"path": "score.ipynb", "parameters": {"pause": 60}})
    assert code == 202
    pausing = await wait_job(jp_fetch, reply["id"], what="the job reaching its pausing cell",
                             until=lambda job: job["state"] not in ("queued", "running")
                             or (job["run_id"] and job["progress"]["done"] >= 2))
    assert pausing["state"] == "running", pausing
    code, cancelled = await call(jp_fetch, "jobs", reply["id"], method="DELETE")
    assert code == 200
    job = await wait_job(jp_fetch, reply["id"])
    assert job["state"] == "killed"
    run = MlflowClient(f"sqlite:///{jp_root_dir / '.cd4ml' / 'mlflow.db'}").get_run(job["run_id"])
    assert run.info.status == "KILLED"


async def test_invalid_parameters_are_400_and_start_nothing(jp_fetch, jp_root_dir):
    code, reply = await call(jp_fetch, "jobs", method="POST",
                             body={"path": "score.ipynb", "parameters": {"alpha": "abc", "x=1\nimport os": 1}})
    assert code == 400
    assert "alpha='abc' does not fit float" in reply["message"] and "unknown parameter" in reply["message"]
    code, listing = await call(jp_fetch, "jobs")
    assert listing["jobs"] == []


@pytest.fixture
def corpus(jp_root_dir, tmp_path):
    """Paths that must never reach outside the root, and a sentinel outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    write_ipynb(outside / "secret.ipynb", SCORE)
    sibling = tmp_path / "served2"
    sibling.mkdir()
    write_ipynb(sibling / "x.ipynb", SCORE)
    (jp_root_dir / "escape").symlink_to(outside, target_is_directory=True)
    (jp_root_dir / ".hidden").mkdir()
    write_ipynb(jp_root_dir / ".hidden" / "h.ipynb", SCORE)
    return [
        "../outside/secret.ipynb", "%2e%2e/outside/secret.ipynb", "..%2foutside%2fsecret.ipynb",
        str(outside / "secret.ipynb"), "/etc/passwd", "C:/Windows/win.ini", "..\\outside\\secret.ipynb",
        "../served2/x.ipynb", "escape/secret.ipynb", ".hidden/h.ipynb", "score.ipynb\x00.txt", "",
    ]


async def test_traversal_corpus_is_refused(jp_fetch, jp_root_dir, corpus, tmp_path):
    from nbfactory import digest_tree

    before_outside = digest_tree(tmp_path / "outside")
    before_root = digest_tree(jp_root_dir)
    for path in corpus:
        for parts, method, kwargs in (
            (("pairing",), "GET", {"params": {"path": path}}),
            (("params",), "GET", {"params": {"path": path}}),
            (("runs",), "GET", {"params": {"notebook": path}} if path else {"params": {"notebook": "../x"}}),
            (("pairing",), "POST", {"body": {"path": path}}),
            (("jobs",), "POST", {"body": {"path": path, "parameters": {}}}),
        ):
            code, reply = await call(jp_fetch, *parts, method=method, **kwargs)
            assert 400 <= code < 500, (path, parts, method, code, reply)
    assert digest_tree(tmp_path / "outside") == before_outside
    assert digest_tree(jp_root_dir) == before_root
    assert not (tmp_path / "outside" / "secret.py").exists()
    code, listing = await call(jp_fetch, "jobs")
    assert listing["jobs"] == []


async def test_cookie_post_without_xsrf_is_refused(http_server_client, jp_base_url, jp_serverapp, jp_root_dir):
    """A browser-style (cookie) POST without the XSRF token is 403; with it, it is accepted."""
    from http.cookies import SimpleCookie
    from urllib.parse import urlencode

    token = jp_serverapp.identity_provider.token
    login = await http_server_client.fetch(f"{jp_base_url}login", raise_error=False)
    jar = SimpleCookie()
    for header in login.headers.get_list("Set-Cookie"):
        jar.load(header)
    xsrf = jar["_xsrf"].value
    response = await http_server_client.fetch(
        f"{jp_base_url}login", method="POST", body=urlencode({"password": token, "_xsrf": xsrf}),
        headers={"Cookie": f"_xsrf={xsrf}"}, follow_redirects=False, raise_error=False,
    )
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    cookies = "; ".join(f"{k}={m.value}" for k, m in jar.items())
    url = f"{jp_base_url}{NAMESPACE}/pairing"
    body = json.dumps({"path": "score.ipynb"})
    refused = await http_server_client.fetch(url, method="POST", body=body, headers={"Cookie": cookies},
                                             raise_error=False)
    assert refused.code == 403
    assert not (jp_root_dir / "score.py").exists()
    cross = await http_server_client.fetch(url, method="POST", body=body, raise_error=False,
                                           headers={"Cookie": cookies, "X-XSRFToken": xsrf,
                                                    "Origin": "http://evil.example.com"})
    assert cross.code in (403, 404)
    assert not (jp_root_dir / "score.py").exists()
    accepted = await http_server_client.fetch(url, method="POST", body=body, raise_error=False,
                                              headers={"Cookie": cookies, "X-XSRFToken": xsrf})
    assert accepted.code == 200, accepted.body
    assert (jp_root_dir / "score.py").exists()


@pytest.fixture
def orphan(jp_root_dir):
    """A RUNNING run whose runner process is gone, in the store before the server starts."""
    import socket
    import subprocess
    import sys

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    project = Project.discover(jp_root_dir)
    c = tracking.client(project)
    exp = tracking.ensure_experiment(c, project, "try-random-forest")
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tracking.create_run(c, exp, "ghost", {tracking.RUNNER: f"{socket.gethostname()}:{pid.stdout.strip()}"}, {})
    return c, run.info.run_id


async def test_server_start_marks_orphaned_runs_failed(orphan, jp_fetch):
    import asyncio

    c, run_id = orphan
    await jp_fetch(NAMESPACE, "status")  # the server (and its reconcile thread) is up

    async def ended():
        run = await asyncio.to_thread(c.get_run, run_id)
        return run if run.info.status != "RUNNING" else None

    run = await wait_until_async(ended, 120, "the orphaned run being reconciled")
    assert run.info.status == "FAILED" and run.data.tags["cd4ml.status.reason"] == "orphaned"
