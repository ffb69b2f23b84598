"""Handlers never block the event loop: while a `GET runs` waits on a tracking server that
never answers, Jupyter's own `/api/status` (and our other routes) still answer.

No timings: the test checks the order of events (the runs request is still pending when the
status request has completed), so a slow machine cannot make it fail.
"""
from __future__ import annotations

import inspect
import socket
import threading

import pytest

from cd4ml_nb.routes import ROUTES

from nbfactory import commit_all, init_repo, write_ipynb

from test_server_root import SCORE, assert_no_traceback, served


@pytest.mark.parametrize("path, handler", ROUTES)
def test_every_verb_is_a_coroutine(path, handler):
    """Under the decorators, each verb is ``async``: its blocking part can wait off the loop."""
    for name in ("get", "post", "delete"):
        if name in handler.__dict__:
            assert inspect.iscoroutinefunction(inspect.unwrap(getattr(handler, name))), (handler.__name__, name)


def test_status_answers_while_runs_waits_on_a_silent_tracking_server(tmp_path):
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    repo = init_repo(tmp_path / "repo")
    (repo / "pyproject.toml").write_text(
        f'[tool.cd4ml_nb]\ntracking_uri = "http://127.0.0.1:{port}"\nhealth_timeout = 60\n')
    write_ipynb(repo / "score.ipynb", SCORE)
    commit_all(repo)
    accepted = []
    try:
        with served(repo) as server:
            runs: dict = {}

            def list_runs():
                runs["reply"] = server.call("GET", "runs", {"max_results": 500}, timeout=240)

            waiter = threading.Thread(target=list_runs, daemon=True)
            waiter.start()
            silent.settimeout(120)
            conn, _ = silent.accept()  # the handler's health check is now waiting on us
            accepted.append(conn)
            assert waiter.is_alive() and "reply" not in runs

            status = server.call("GET", "api/status", timeout=120)
            ours = server.call("GET", "status", timeout=120)
            contents = server.call("GET", "api/contents", timeout=120)
            assert "reply" not in runs, "the runs request ended before the status requests were answered"
            assert (status.status, ours.status, contents.status) == (200, 200, 200)
            assert ours.json()["tracking_uri"] == f"http://127.0.0.1:{port}"

            conn.close()  # now the health check fails: a 503 with a message, no traceback
            silent.close()
            waiter.join(timeout=240)
            reply = runs["reply"]
            assert reply.status == 503 and "not reachable" in reply.message, reply.body
            assert_no_traceback(server)
    finally:
        for conn in accepted:
            conn.close()
        silent.close()
