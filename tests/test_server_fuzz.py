"""Hostile and random requests: every one is answered below 500, malformed ones with a 4xx JSON
message, and none leaves an "Uncaught exception" traceback in the server log (real `jupyter server`).

``CD4ML_FUZZ_EXAMPLES`` sets the number of random requests (default 200).
"""
from __future__ import annotations

import json
import os
import urllib.parse
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cd4ml_nb.routes import ROUTES

from nbfactory import commit_all, init_repo, write_ipynb

from test_server_root import SCORE, assert_no_traceback, served

EXAMPLES = int(os.environ.get("CD4ML_FUZZ_EXAMPLES", "200"))
JOB = "0123456789ab"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with fuzz_server(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@contextmanager
def fuzz_server(base):
    """A real server whose root is a subfolder of a repository, with a store holding one run."""
    repo = init_repo(base / "repo")
    # no job may really start: the kernel does not exist, so every submission is refused up front
    (repo / "pyproject.toml").write_text(
        '[tool.cd4ml_nb]\nkernel_name = "no-such-kernel"\nmax_parameter_bytes = 1000\n')
    sub = repo / "sub"
    sub.mkdir()
    write_ipynb(sub / "score.ipynb", SCORE)
    write_ipynb(repo / "top.ipynb", SCORE)
    (sub / "up").symlink_to(repo, target_is_directory=True)
    commit_all(repo)
    _store_with_a_run(repo, "sub/score.ipynb")
    with served(sub, "--Cd4mlConfig.max_request_bytes=200000") as running:
        yield running
        for job in running.call("GET", "jobs", {"limit": 500}).json().get("jobs", []):
            running.call("DELETE", f"jobs/{job['id']}")


def _store_with_a_run(repo, notebook: str) -> None:
    """A real store with one run of ``notebook`` on this branch, so that `GET runs` reaches MLflow."""
    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    project = Project.discover(repo)
    c = tracking.client(project)
    experiment = tracking.ensure_experiment(c, project, tracking.branch_experiment(project, None))
    run = tracking.create_run(c, experiment, "fuzz", {tracking.NOTEBOOK: notebook}, {"alpha": 0.5})
    tracking.end_run(c, run.info.run_id, "FINISHED")


def _check(reply, what) -> None:
    assert reply.status < 500, (what, reply.status, reply.body[:500])
    if reply.status >= 400 and reply.status not in (405,):
        assert reply.headers.get("Content-Type", "").startswith("application/json"), (what, reply.headers)
        assert json.loads(reply.body)["message"], what


LONG = "a" * 300 + ".ipynb"
DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE = [
    # (method, route, query, raw body)
    ("GET", "params", {"path": LONG}, None),
    ("GET", "params", {"path": "x/" * 3000 + "a.ipynb"}, None),
    ("GET", "pairing", {"path": LONG}, None),
    ("GET", "runs", {"notebook": LONG}, None),
    ("POST", "pairing", None, json.dumps({"path": LONG}).encode()),
    ("POST", "jobs", None, json.dumps({"path": LONG, "parameters": {}}).encode()),
    ("POST", "pairing", None, b'{"path": "\\ud800.ipynb"}'),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": {"alpha": "\\udfff"}}'),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": {"\\ud800": 1}}'),
    ("GET", "params", "path=%ED%A0%80.ipynb", None),
    ("POST", "pairing", None, b'{"path": 123}'),
    ("POST", "pairing", None, b'{"path": ["score.ipynb"]}'),
    ("POST", "pairing", None, b'{"path": {"a": 1}}'),
    ("POST", "jobs", None, b'{"path": null}'),
    ("POST", "pairing", None, b'["score.ipynb"]'),
    ("POST", "pairing", None, b'"score.ipynb"'),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": {"alpha": ' + DEEP.encode() + b"}}"),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": ' + DEEP.encode() + b"}"),
    ("POST", "jobs", None, DEEP.encode()),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": [1, 2]}'),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": {"alpha": NaN}}'),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": {"alpha": 1e999}}'),
    ("POST", "jobs", None, b'{"path": "score.ipynb", "parameters": {"alpha": ' + b"9" * 5000 + b"}}"),
    ("POST", "jobs", None, json.dumps({"path": "score.ipynb", "parameters": {"alpha": "x" * 5000}}).encode()),
    ("POST", "jobs", None, json.dumps({"path": "score.ipynb", "parameters": {"a": "x" * 300_000}}).encode()),
    ("POST", "pairing", None, b"\xff\xfe\x00garbage"),
    ("POST", "pairing", None, b"{"),
    ("POST", "pairing", None, b""),
    ("GET", "runs", {"max_results": "abc"}, None),
    ("GET", "runs", {"max_results": "9" * 5000}, None),
    ("GET", "runs", {"page_token": "not-a-token"}, None),
    ("GET", "runs", {"branch": "x" * 10_000}, None),
    ("GET", "runs", {"notebook": "score.ipynb'--"}, None),
    ("GET", "jobs", {"limit": "-5"}, None),
    ("GET", "jobs", {"offset": "many"}, None),
    ("GET", "jobs/zzz", None, None),
    ("GET", "jobs/" + "f" * 300, None, None),
    ("DELETE", f"jobs/{JOB}", None, None),
    ("GET", f"jobs/{JOB}/html", None, None),
    ("GET", "params", {"path": "up/top.ipynb"}, None),
    ("GET", "params", {"path": "../top.ipynb"}, None),
    ("GET", "params", {"path": "score.ipynb\x00"}, None),
    ("GET", "params", {"path": "sub"}, None),
    ("GET", "params", {"path": "."}, None),
    ("GET", "params", {"path": "/"}, None),
]


@pytest.mark.parametrize("method, route, query, raw", HOSTILE,
                         ids=[f"{m}-{r}-{i}" for i, (m, r, _q, _b) in enumerate(HOSTILE)])
def test_hostile_request_is_a_4xx_with_a_message(server, method, route, query, raw):
    mark = server.mark()
    reply = server.call(method, route, query, raw=raw)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:500])
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.message and str(server.root.parent) not in reply.message
    assert_no_traceback(server, mark)


def test_odd_but_valid_queries_answer(server):
    """A branch nobody has: an empty page; the run of the root's notebook is found by its root path."""
    for branch in ("x" * 200, "feature/é{0}'\"", "master'; --"):
        reply = server.call("GET", "runs", {"branch": branch})
        assert reply.status == 200 and reply.json()["runs"] == [], reply.body
    runs = server.call("GET", "runs", {"notebook": "score.ipynb"}).json()["runs"]
    assert [r["notebook"] for r in runs] == ["score.ipynb"]


def test_size_limits(server):
    mark = server.mark()
    body = {"path": "score.ipynb", "parameters": {"alpha": "x" * 300_000}}
    too_big = server.call("POST", "jobs", raw=json.dumps(body).encode())
    assert too_big.status == 413 and "200000" in too_big.message, too_big.body
    value = server.call("POST", "jobs", body={"path": "score.ipynb", "parameters": {"alpha": "y" * 5000}})
    assert value.status in (400, 413) and "alpha" in value.message and "1000" in value.message, value.body
    assert_no_traceback(server, mark)


# --- random requests -----------------------------------------------------------------------------

PATHS = st.one_of(
    st.sampled_from(["score.ipynb", "score.py", "../top.ipynb", "up/top.ipynb", "", ".", "..", "/etc/passwd",
                     "sub/../score.ipynb", "score.ipynb\x00", "a" * 300, "%2e%2e/top.ipynb", "C:\\x.ipynb"]),
    st.text(max_size=40),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
BODIES = st.one_of(
    st.fixed_dictionaries({"path": PATHS}, optional={"parameters": JSON}).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"path": JSON, "parameters": JSON}).map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.none(),
)
QUERY_KEYS = st.sampled_from(["path", "notebook", "branch", "max_results", "page_token", "limit", "offset", "x"])
QUERIES = st.one_of(
    st.dictionaries(QUERY_KEYS, st.one_of(PATHS, st.integers().map(str), st.text(max_size=30)), max_size=4),
    st.binary(max_size=60).map(lambda b: urllib.parse.quote_from_bytes(b, safe="=&")),
)
SEGMENT = st.one_of(st.just(JOB), st.text(min_size=1, max_size=30)).map(lambda s: urllib.parse.quote(
    s, safe="", errors="surrogatepass"))


def _route(pattern: str, segment: str) -> str:
    return pattern.replace("([^/]+)", segment)


REQUESTS = st.tuples(st.sampled_from([p for p, _h in ROUTES]), st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
                     SEGMENT, QUERIES, BODIES)


def send(server, req):
    """Send one drawn request; returns (reply, what was sent)."""
    pattern, method, segment, query, body = req
    if method in ("GET", "DELETE"):
        body = None
    elif body is None:
        body = b""
    route = _route(pattern, segment)
    return server.call(method, route, query or None, raw=body), (method, route, query, body)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=REQUESTS)
def test_random_requests_never_answer_5xx(server, req):
    """Random methods, routes, job ids, query strings and bodies (valid and hostile paths among them)."""
    _check(*send(server, req))


def test_no_traceback_after_fuzzing(server):
    """The whole log of the module's server (the random requests included) has no traceback."""
    assert_no_traceback(server)
