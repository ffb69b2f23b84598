"""Hostile neighbours on the HTTP side (#27), against a real `jupyter server`, a real `mlflow server`
behind the proxy and real HTTP:

- Jupyter's token, given in a proxied URL's query, reaches no file under the root (MLflow logs every
  request line); the MLflow UI's log is 0600.
- A 200 MB body (declared, or chunked) to a body-taking route and to the proxy is refused (413, the
  limit named) before it is read: the server's peak memory grows by less than 64 MB.
- While 2,000 listings are in flight, `status` and cancelling an unknown job answer (200, 404) ahead
  of the listings already waiting; no listing answers 5xx. (Their latency is measured in
  bench/bench_status_flood.py, not asserted here.)
- ``mlflow_ui_url`` other than http(s) is refused; a redirect of the MLflow UI off this server is
  answered 502.
"""
from __future__ import annotations

import importlib.util
import json
import os
import select
import socket
import stat
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from tornado.httpclient import HTTPClientError

from cd4ml_nb.config import load_config
from cd4ml_nb.exceptions import ConfigError
from cd4ml_nb.mlflow_ui import LOG_NAME, MlflowUi, UiProcess
from cd4ml_nb.routes import NAMESPACE

from nbfactory import commit_all, init_repo, write_ipynb

from test_server_root import SCORE, assert_no_traceback, served

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
LIMIT = 1_000_000  # max_request_bytes by default


def _bench():
    spec = importlib.util.spec_from_file_location("bench_status_flood", ROOT / "bench" / "bench_status_flood.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path):
    repo = init_repo(tmp_path / "repo")
    write_ipynb(repo / "score.ipynb", SCORE)
    commit_all(repo)
    return repo


def server_process(server) -> psutil.Process:
    """The `jupyter server` process behind ``server`` (a child of this test)."""
    port = urllib.parse.urlsplit(server.url).port
    for proc in psutil.Process().children(recursive=True):
        try:
            if f"--port={port}" in proc.cmdline():
                return proc
        except psutil.NoSuchProcess:  # a child of an earlier test ended and not yet reaped (a zombie)
            continue
    raise AssertionError(f"no server process on port {port}")


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def post_streamed(port: int, path: str, token: str | None, total: int, chunked: bool = False) -> tuple[int, bytes, int]:
    """POST ``total`` bytes made piece by piece (never held whole), reading the answer as it comes:
    the status, the body, and how many bytes were sent before the server answered or closed."""
    auth = f"Authorization: token {token}\r\n" if token else ""
    length = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\n"
            f"{length}\r\n").encode()
    piece = b"x" * (256 * 1024)
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(head)
    sock.setblocking(False)
    sent, pending, received, sending = 0, b"", bytearray(), True
    try:
        while not _complete(received):
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 120)
            if not readable and not writable:
                raise TimeoutError(f"no answer after {sent} bytes sent")
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
            if writable and sending:
                if not pending:
                    size = min(len(piece), total - sent)
                    pending = (f"{size:x}\r\n".encode() + piece[:size] + b"\r\n") if chunked else piece[:size]
                try:
                    done = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                    continue
                pending = pending[done:]
                sent += done
                if sent >= total and not pending:
                    if chunked:
                        sock.sendall(b"0\r\n\r\n")
                    sending = False
    finally:
        sock.close()
    head_bytes, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head_bytes, f"no answer at all after {sent} bytes sent"
    return int(head_bytes.split()[1]), body, sent


def _complete(received: bytearray) -> bool:
    head, sep, body = bytes(received).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


# --- 1. the token stays in Jupyter ---------------------------------------------------------------


def test_the_token_in_a_proxied_url_reaches_no_file(project):
    with served(project) as server:
        token = server.token
        page = server.call("GET", "mlflow/", f"token={token}", timeout=300)  # as a browser link carries it
        assert page.status == 200 and b"<html" in page.body.lower(), page.body[:300]
        search = server.call("GET", "mlflow/ajax-api/2.0/mlflow/experiments/search",
                             f"max_results=5&token={token}&_xsrf=not-a-secret-either")
        assert search.status == 200 and "experiments" in search.json(), search.body[:300]
        log = project / ".cd4ml" / LOG_NAME
        assert "experiments/search?max_results=5" in log.read_text(), "MLflow logs request lines: else this proves nothing"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert_no_traceback(server)
    leaked = [str(p.relative_to(project)) for p in project.rglob("*")
              if p.is_file() and token.encode() in p.read_bytes()]
    assert leaked == []
    assert "not-a-secret-either" not in (project / ".cd4ml" / LOG_NAME).read_text()


# --- 2. big bodies refused on the headers --------------------------------------------------------


def test_big_bodies_are_refused_before_they_are_read(project):
    with served(project) as server:
        port = urllib.parse.urlsplit(server.url).port
        pid = server_process(server).pid
        ok = server.call("POST", "params/check", body={"path": "score.ipynb", "texts": {"alpha": "0.25"}})
        assert ok.status == 200 and ok.json()["values"] == {"alpha": 0.25}, ok.body  # imports done: a baseline
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
        before = memory_kb(pid, "VmHWM")

        results: dict[str, tuple[int, bytes, int]] = {}

        def post(name: str, path: str, **kw) -> None:
            results[name] = post_streamed(port, path, server.token, 200 * MB, **kw)

        posts = [threading.Thread(target=post, args=(f"check{i}", "/cd4ml-nb/params/check")) for i in range(3)]
        posts.append(threading.Thread(target=post, args=("proxy", "/cd4ml-nb/mlflow/ajax-api/2.0/mlflow/runs/search")))
        posts.append(threading.Thread(target=post, args=("chunked", "/cd4ml-nb/params/check"), kwargs={"chunked": True}))
        for t in posts:
            t.start()
        for t in posts:
            t.join(300)
        anonymous = post_streamed(port, "/cd4ml-nb/params/check", None, 200 * MB)
        grown_mb = (memory_kb(pid, "VmHWM") - before) / 1024

        for name, (status, body, sent) in results.items():
            assert status == 413, (name, status, body[:300])
            message = json.loads(body)["message"]
            assert f"limit of {LIMIT} bytes" in message and "max_request_bytes" in message, (name, message)
            assert sent < 64 * MB, f"{name}: {sent} bytes were taken before the refusal"
        assert "at least" in json.loads(results["chunked"][1])["message"]
        assert anonymous[0] == 403 and anonymous[2] < 64 * MB, anonymous[:1]
        assert grown_mb < 64, f"the server's peak memory grew by {grown_mb:.0f} MB"
        assert not (project / ".cd4ml" / LOG_NAME).exists(), "a refused body started the MLflow UI"

        # A body a little over the limit is read and dropped: a client that sends it all before it
        # reads (urllib) gets its 413, and the server goes on serving.
        over = server.call("POST", "params/check", raw=b" " * (LIMIT + 2 * MB))
        assert over.status == 413 and f"{LIMIT + 2 * MB} bytes" in over.message, over.body[:300]
        again = server.call("POST", "params/check", body={"path": "score.ipynb", "texts": {"alpha": "x"}})
        assert again.status == 200 and "alpha" in again.json()["errors"], again.body
        assert_no_traceback(server)


# --- 3. cheap routes never wait behind listings --------------------------------------------------


@pytest.mark.timeout(900)
def test_status_and_cancel_answer_while_2000_listings_wait(project):
    bench = _bench()
    bench.fill_store(project, 20)  # listings that take some work
    with served(project) as server:
        port = urllib.parse.urlsplit(server.url).port
        client = bench.Client(port, server.token)  # connected before the flood: its answers, not a connect, are seen
        try:
            assert client.call("GET", "/cd4ml-nb/runs?max_results=50")[1] == 200
            flood = bench.Flood(port, server.token, 2000).start()
            assert flood.wait(lambda f: f.sent >= f.count or f.done, timeout=600), "the listings were not all sent"
            answered, waiting = flood.answered, flood.in_flight
            assert waiting > 1000, f"only {waiting} listings were waiting: the flood is too small to prove anything"

            _, status, body = client.call("GET", "/cd4ml-nb/status")
            assert status == 200 and json.loads(body)["branch"] == "master", body[:300]
            _, cancel, body = client.call("DELETE", f"/cd4ml-nb/jobs/{bench.UNKNOWN_JOB}")
            assert cancel == 404 and "no job" in json.loads(body)["message"], body[:300]
            overtaken = waiting - (flood.answered - answered)
            assert overtaken > waiting // 2, (f"status and cancel waited for {waiting - overtaken} of the "
                                              f"{waiting} listings ahead of them")
        finally:
            client.close()
        assert flood.wait(lambda f: f.done, timeout=800), "the listings did not all end"
        flood.join()
        assert flood.failures == [] and flood.statuses == {200: 2000}, (flood.statuses, flood.failures[:5])
        assert_no_traceback(server)


# --- 5. only http(s) MLflow UIs; no redirect off this server --------------------------------------


def test_a_javascript_mlflow_ui_url_is_refused(project):
    for bad in ("javascript:alert(document.cookie)", "JavaScript:alert(1)//http://x", "data:text/html,x",
                "//evil.example/", "http:/no-host", " http://x"):
        (project / "pyproject.toml").write_text(f"[tool.cd4ml_nb]\nmlflow_ui_url = {json.dumps(bad)}\n")
        with pytest.raises(ConfigError, match="mlflow_ui_url.*http:// or https://"):
            load_config(project)
    (project / "pyproject.toml").write_text('[tool.cd4ml_nb]\nmlflow_ui_url = "javascript:alert(1)"\n')
    with served(project) as server:
        reply = server.call("GET", "status")
        assert reply.status == 400 and "mlflow_ui_url" in reply.message and "http" in reply.message, reply.body
        (project / "pyproject.toml").write_text('[tool.cd4ml_nb]\nmlflow_ui_url = "https://mlflow.example:5000"\n')
        assert server.call("GET", "status").json()["mlflow_ui_url"] == "https://mlflow.example:5000"


class _Redirecting(BaseHTTPRequestHandler):
    """An upstream that answers every path with a redirect the path names, and records what it got."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append(self.path)
        target = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("to", ["/"])[0]
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"go there\n")

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def upstream(jp_serverapp, monkeypatch):
    """The proxy's MLflow UI replaced by :class:`_Redirecting` on a real port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    manager = jp_serverapp.web_app.settings["cd4ml_nb"].mlflow_ui
    ui = UiProcess(pid=os.getpid(), port=httpd.server_address[1], prefix=manager.prefix, tracking_uri="sqlite:///x")
    monkeypatch.setattr(MlflowUi, "running", property(lambda self: ui))
    _Redirecting.seen = []
    yield ui
    httpd.shutdown()
    httpd.server_close()


async def test_an_offsite_redirect_is_answered_502(jp_fetch, jp_serverapp, upstream):
    other = f"http://127.0.0.1:{upstream.port + 1}/x"
    for target in ("http://evil.example/steal", "//evil.example/", "/\\evil.example/", "javascript:alert(1)", other,
                   f"{upstream.origin}@evil.example/"):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(NAMESPACE, "mlflow", "go", params={"to": target}, follow_redirects=False)
        assert info.value.code == 502, (target, info.value.code)
        response = info.value.response
        assert "Location" not in response.headers and b"evil" not in response.body, target
        assert "redirect" in json.loads(response.body)["message"]
    inside = f"{upstream.origin}{upstream.prefix}/#/experiments/1"
    for target, shown in ((inside, f"{upstream.prefix}/#/experiments/1"), ("static-files/x", "static-files/x")):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(NAMESPACE, "mlflow", "go", params={"to": target}, follow_redirects=False)
        assert info.value.code == 302 and info.value.response.headers["Location"] == shown, target

    # What the upstream was asked: the query without Jupyter's token and _xsrf, the rest as sent.
    _Redirecting.seen.clear()
    token = jp_serverapp.identity_provider.token
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(NAMESPACE, "mlflow", "go", params={"token": token, "_xsrf": "x5rf", "a": "1 2", "to": "/"},
                       follow_redirects=False)
    assert info.value.code == 302
    (asked,) = _Redirecting.seen
    assert token not in asked and "x5rf" not in asked and "a=1+2" in asked, asked
