"""The reliability and security suite: bad inputs, faults and hostile requests, with figures.

Each ``check_*`` function runs one area against real components (a `jupyter server`, real
kernels, real git repositories, real SQLite stores), and returns :class:`Figure` rows: cases
tried, how many were wrongly accepted / lost / duplicated, and times. ``tests/test_reliability.py``
runs them at reduced counts in CI; ``bench/reliability.py`` runs the full counts and writes
``docs/reliability.md``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Iterator

import psutil
from jupyter_server.auth.authorizer import Authorizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from nbfactory import (  # noqa: E402
    commit_all, digest_tree, end_processes, free_port, git, init_repo, jupyter_port, mlflow_server, percent,
    stop_group, wait_http, wait_until, write_ipynb,
)

ROUTES = [("status", "GET"), ("pairing", "GET"), ("pairing", "POST"), ("params", "GET"), ("jobs", "GET"),
          ("jobs", "POST"), ("jobs/0123456789ab", "GET"), ("jobs/0123456789ab", "DELETE"),
          ("jobs/0123456789ab/html", "GET"), ("runs", "GET")]
MUTATIONS = [(p, m) for p, m in ROUTES if m in ("POST", "DELETE")]
SCORE = percent("import mlflow\nmlflow.log_metric('score', alpha)", parameters="alpha: float = 0.5")


@dataclass
class Figure:
    """One line of docs/reliability.md."""

    area: str
    case: str
    tried: int
    bad: int  # accepted / lost / duplicated / wrong status: what must be 0
    bad_label: str = "accepted"
    seconds: list[float] = field(default_factory=list)
    note: str = ""
    limit: float | None = None  # seconds each case should take at most: judged by bench/, never by tests

    def over_limit(self) -> int:
        return sum(s > self.limit for s in self.seconds) if self.limit is not None else 0

    def row(self) -> str:
        times = ""
        if self.seconds:
            times = f"median {statistics.median(self.seconds):.2f} s, max {max(self.seconds):.2f} s"
        if self.limit is not None:
            times += f", {self.over_limit()} over {self.limit:g} s"
        return f"| {self.area} | {self.case} | {self.tried} | {self.bad} {self.bad_label} | {times} | {self.note} |"


def env_without_tracking() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def cli(repo: Path, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", *args], cwd=repo, env=env_without_tracking(),
                          capture_output=True, text=True, timeout=timeout, **kw)


def make_repo(base: Path, name: str = "repo") -> Path:
    repo = init_repo(base / name, branch="master")
    write_ipynb(repo / "score.ipynb", SCORE)
    commit_all(repo)
    return repo


def runs_of(repo: Path):
    from mlflow.tracking import MlflowClient

    db = repo / ".cd4ml" / "mlflow.db"
    if not db.exists():
        return []
    c = MlflowClient(f"sqlite:///{db}")
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)


# --- a real Jupyter server --------------------------------------------------------------------


class ReadOnlyAuthorizer(Authorizer):
    """Reads allowed, every mutation refused."""

    def is_authorized(self, handler, user, action, resource):
        return action == "read"


@dataclass
class Server:
    url: str
    token: str
    root: Path


@contextmanager
def jupyter_server(root: Path, *extra: str) -> Iterator[Server]:
    token = "reliability-token"
    runtime = Path(tempfile.mkdtemp(prefix="jupyter-runtime-"))  # outside the root: digest_tree must not see it
    env = {**env_without_tracking(), "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "JUPYTER_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                             f"--port={free_port()}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}", *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{jupyter_port(runtime, proc)}/"  # the port it got, if ours was taken meanwhile
        wait_http(f"{url}api/status?token={token}", proc=proc)
        yield Server(url, token, root)
    finally:
        stop_group(proc)
        shutil.rmtree(runtime, ignore_errors=True)


def request(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def login_cookies(server: Server) -> tuple[str, str]:
    """(Cookie header, xsrf token) of a browser-style login."""
    opener = urllib.request.build_opener(NoRedirect)
    jar = SimpleCookie()
    with opener.open(f"{server.url}login", timeout=10) as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            jar.load(header)
    xsrf = jar["_xsrf"].value
    data = urllib.parse.urlencode({"password": server.token, "_xsrf": xsrf}).encode()
    req = urllib.request.Request(f"{server.url}login", data=data, headers={"Cookie": f"_xsrf={xsrf}"})
    try:
        response = opener.open(req, timeout=10)
    except urllib.error.HTTPError as e:  # the 302 after a successful login
        response = e
    for header in response.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return "; ".join(f"{k}={m.value}" for k, m in jar.items()), xsrf


def _route_url(server: Server, path: str, query: str = "path=score.ipynb") -> str:
    return f"{server.url}cd4ml-nb/{path}?{query}"


def _body(path: str, method: str) -> dict | None:
    if method != "POST":
        return None
    return {"path": "score.ipynb", "parameters": {}} if path == "jobs" else {"path": "score.ipynb"}


# --- areas --------------------------------------------------------------------------------------


def check_hostile_http(base: Path) -> list[Figure]:
    """Every route x method x credential case, cookie POSTs without XSRF, cross-origin, read-only."""
    repo = make_repo(base, "http")
    before = digest_tree(repo)
    figures = []
    with jupyter_server(repo) as server:
        accepted, tried = 0, 0
        for path, method in ROUTES:
            for headers in ({}, {"Authorization": "token wrong"}, {"Cookie": "username-127-0-0-1=forged"}):
                tried += 1
                accepted += request(_route_url(server, path), method, _body(path, method), headers) < 400
        figures.append(Figure("HTTP", "every route x method without / with a wrong token / a forged cookie",
                              tried, accepted))
        cookies, xsrf = login_cookies(server)
        accepted = sum(request(_route_url(server, p), m, _body(p, m), {"Cookie": cookies}) < 400 for p, m in MUTATIONS)
        figures.append(Figure("HTTP", "cookie-authenticated mutations without the XSRF token", len(MUTATIONS),
                              accepted))
        evil = {"Cookie": cookies, "X-XSRFToken": xsrf, "Origin": "http://evil.example.com"}
        accepted = sum(request(_route_url(server, p), m, _body(p, m), evil) < 400 for p, m in MUTATIONS)
        figures.append(Figure("HTTP", "cross-origin cookie mutations (with XSRF)", len(MUTATIONS), accepted))
        ok = request(_route_url(server, "pairing"), "POST", {"path": "score.ipynb"},
                     {"Cookie": cookies, "X-XSRFToken": xsrf})
        figures.append(Figure("HTTP", "control: same-origin cookie POST with XSRF is accepted", 1, int(ok != 200),
                              "wrongly refused"))
    (repo / "score.py").unlink(missing_ok=True)
    git(repo, "checkout", "-q", "--", ".")
    with jupyter_server(repo, "--ServerApp.authorizer_class=reliability_suite.ReadOnlyAuthorizer") as server:
        auth = {"Authorization": f"token {server.token}"}
        accepted = sum(request(_route_url(server, p), m, _body(p, m), auth) < 400 for p, m in MUTATIONS)
        reads = sum(request(_route_url(server, p), "GET", None, auth) == 200 for p in ("status", "params", "runs"))
        figures.append(Figure("HTTP", "read-only authorizer: mutations", len(MUTATIONS), accepted,
                              note=f"reads still served: {reads}/3"))
    changed = digest_tree(repo) != before
    figures.append(Figure("HTTP", "source files changed by refused requests", 1, int(changed), "changed"))
    return figures


TRAVERSAL = [
    "../outside/secret.ipynb", "%2e%2e/outside/secret.ipynb", "..%2foutside%2fsecret.ipynb",
    "..\\outside\\secret.ipynb", "C:\\Windows\\win.ini", "C:/Windows/win.ini", "/etc/passwd", "{outside}",
    "../repo2/x.ipynb", "escape/secret.ipynb", ".hidden/h.ipynb", "score.ipynb\x00.txt", "./../outside/secret.ipynb",
    "sub/../../outside/secret.ipynb",
]


def check_paths(base: Path) -> list[Figure]:
    """A traversal corpus over every path-taking endpoint; names with {} and non-ASCII must work."""
    repo = make_repo(base, "repo")
    outside = base / "outside"
    outside.mkdir()
    write_ipynb(outside / "secret.ipynb", SCORE)
    sibling = base / "repo2"
    sibling.mkdir()
    write_ipynb(sibling / "x.ipynb", SCORE)
    (repo / "escape").symlink_to(outside, target_is_directory=True)
    (repo / ".hidden").mkdir()
    write_ipynb(repo / ".hidden" / "h.ipynb", SCORE)
    (repo / "sub").mkdir()
    for name in ("exp{1}.ipynb", "données é.ipynb"):
        write_ipynb(repo / name, SCORE)
    commit_all(repo)
    sentinels = {p: digest_tree(p) for p in (outside, sibling)}
    figures = []
    with jupyter_server(repo) as server:
        auth = {"Authorization": f"token {server.token}"}
        accepted = tried = 0
        for raw in TRAVERSAL:
            q = urllib.parse.quote(raw, safe="")
            for path, method, query, body in (
                ("pairing", "GET", f"path={q}", None), ("params", "GET", f"path={q}", None),
                ("runs", "GET", f"notebook={q}", None), ("pairing", "POST", "", {"path": raw}),
                ("jobs", "POST", "", {"path": raw, "parameters": {}}),
            ):
                tried += 1
                accepted += request(f"{server.url}cd4ml-nb/{path}?{query}", method, body, auth) < 400
        figures.append(Figure("paths", "traversal corpus x path-taking endpoints", tried, accepted,
                              note=f"{len(TRAVERSAL)} paths: .., encoded, backslashes, drive, absolute, NUL, "
                                   "sibling prefix, symlink escape, hidden"))
        good = 0
        for name in ("exp{1}.ipynb", "données é.ipynb"):
            q = urllib.parse.quote(name)
            good += request(f"{server.url}cd4ml-nb/params?path={q}", "GET", None, auth) == 200
            good += request(f"{server.url}cd4ml-nb/pairing", "POST", {"path": name}, auth) == 200
        figures.append(Figure("paths", "names with {} and non-ASCII over HTTP (must work)", 4, 4 - good, "failed"))
    touched = sum(digest_tree(p) != d for p, d in sentinels.items()) + int((outside / "secret.py").exists())
    figures.append(Figure("paths", "files read or written outside the root (sentinels)", len(sentinels), touched,
                          "touched"))
    worked = 0
    for name in ("exp{1}.ipynb", "données é.ipynb"):
        done = cli(repo, "run", name, "-q", "--no-html")
        worked += done.returncode == 0
        worked += cli(repo, "check", name).returncode == 0
    figures.append(Figure("paths", "CLI run + check of names with {} and non-ASCII (must work)", 4, 4 - worked,
                          "failed"))
    refused = 0
    for raw in ("score.ipynb\x00.txt", "missing/../../nope.ipynb", str(base / "nowhere.ipynb")):
        try:
            done = cli(repo, "params", raw)
            refused += done.returncode == 2 and done.stderr.count("\n") <= 1
        except ValueError:  # a NUL byte cannot even reach the program's argv
            refused += 1
    figures.append(Figure("paths", "CLI: NUL and missing paths give exit 2 and one line", 3, 3 - refused,
                          "not refused"))
    return figures


INJECTIONS = ["x=1\nimport os", "__import__('os').system('touch pwned')", "alpha;open('pwned','w')",
              "os", "_", "1alpha", "alpha ", "al-pha", "", "ALPHA", "print", "__builtins__"]


def check_parameter_names(base: Path) -> list[Figure]:
    """Names that are not identifiers or not declared: refused before any kernel, nothing executed."""
    repo = make_repo(base, "names")
    executed = 0
    for name in INJECTIONS:
        done = cli(repo, "run", "score.ipynb", "-p", name, "1", "-q")
        executed += done.returncode != 2 or (repo / "pwned").exists()
    executed += bool(runs_of(repo))
    return [Figure("parameters", "non-identifier / undeclared / code names via -p", len(INJECTIONS), executed,
                   "executed")]


MALFORMED: dict[str, bytes] = {
    "empty.ipynb": b"",
    "whitespace.ipynb": b"  \n\t\n",
    "truncated.ipynb": b'{"cells": [{"cell_type": "code", "sou',
    "binary.ipynb": bytes(range(256)),
    "latin1.ipynb": '{"cells": [], "note": "é"}'.encode("latin-1"),
    "array.ipynb": b"[1, 2, 3]",
    "nbformat3.ipynb": b'{"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}',
    "nbformat-string.ipynb": b'{"nbformat": "4", "nbformat_minor": 5, "metadata": {}, "cells": []}',
    "no-cells.ipynb": b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}',
    "cells-not-list.ipynb": b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}',
    "bad-cell.ipynb": b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "weird"}]}',
    "broken-header.py": b"# ---\n# jupyter:\n#   jupytext:\n#     formats: [ipynb\n# ---\n\n# %%\nx = 1\n",
    "params-syntax.py": b'# %% tags=["parameters"]\nalpha = = 1\n\n# %%\nprint(alpha)\n',
    "two-params.py": b'# %% tags=["parameters"]\na = 1\n\n# %% tags=["parameters"]\nb = 2\n',
    "invalid-utf8.py": b"# %%\nx = '\xff\xfe'\n",
    "notes.txt": b"just text\n",
    "folder.ipynb": b"",  # replaced by a folder
}


def check_malformed(base: Path) -> list[Figure]:
    """Each malformed notebook: exit 2, one line naming the file, within 5 s, no kernel, no writes."""
    repo = init_repo(base / "malformed")
    for name, content in MALFORMED.items():
        if name == "folder.ipynb":
            (repo / name).mkdir()
        else:
            (repo / name).write_bytes(content)
    nb = json.loads(json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": [],
                                "metadata": {"kernelspec": {"name": "no-such-kernel", "display_name": "x",
                                                            "language": "python"}}}))
    (repo / "unknown-kernel.ipynb").write_text(json.dumps(nb))
    big = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "x = 1",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "y" * 20_000_000}]}]}
    (repo / "huge-outputs.ipynb").write_text(json.dumps(big))
    commit_all(repo)
    before = digest_tree(repo)
    names = [*MALFORMED, "unknown-kernel.ipynb"]
    wrong, times = 0, []
    for name in names:
        start = time.monotonic()
        done = cli(repo, "run", name, "-q")
        times.append(time.monotonic() - start)
        line = done.stderr.strip()
        wrong += not (done.returncode == 2 and "\n" not in line and name.split(".")[0] in line)
    started = (repo / ".cd4ml" / "runs").exists()
    figures = [Figure("malformed", f"{len(names)} kinds of malformed notebooks: exit 2, one line naming the file, "
                      "< 5 s", len(names), wrong + int(started), "wrong", times,
                      "no run folder, so no kernel, was ever created", limit=5)]
    start = time.monotonic()
    done = cli(repo, "run", "huge-outputs.ipynb", "-q", "--no-html")
    figures.append(Figure("malformed", "20 MB of outputs: runs (outputs are replaced)", 1,
                          int(done.returncode != 0), "failed", [time.monotonic() - start]))
    (repo / "nokernel.py").write_text(percent("print('ran')"))
    done = cli(repo, "run", "nokernel.py", "-q", "--no-html")
    figures.append(Figure("malformed", "no kernelspec: runs on python3 and says so", 1,
                          int(done.returncode != 0 or "python3" not in done.stderr), "failed"))
    for extra in ("huge-outputs.ipynb", "nokernel.py"):
        before.pop(extra, None)
    after = {k: v for k, v in digest_tree(repo).items() if k in before}
    figures.append(Figure("malformed", "sources byte-identical afterwards", len(before),
                          sum(after.get(k) != v for k, v in before.items()), "changed"))
    return figures


FAULTS = {
    "cell exception": (percent("raise ValueError('boom')"), [], "FAILED", "cell-exception"),
    "kernel killed (SIGKILL to itself)": (percent("import os\nos.kill(os.getpid(), 9)"), [], "FAILED", "kernel-died"),
    "cell timeout": (percent("import time\ntime.sleep(60)"), ["--timeout", "1"], "FAILED", "timeout"),
}
SLEEPER = percent("import pathlib, time\npathlib.Path('started').write_text('1')\ntime.sleep(120)")


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    wait_until(path.exists, timeout, f"the notebook starting (it writes {path.name})", interval=0.05, proc=proc)


def check_faults(base: Path, repeat: int) -> list[Figure]:
    """Faults during a run end in the right MLflow status and reason, every time; time to terminal."""
    repo = init_repo(base / "faults")
    (repo / "a").write_text("a")
    commit_all(repo)
    figures = []
    for case, (source, flags, status, reason) in FAULTS.items():
        (repo / "fault.py").write_text(source)
        wrong, times = 0, []
        for _ in range(repeat):
            count = len(runs_of(repo))
            start = time.monotonic()
            done = cli(repo, "run", "fault.py", "-q", "--no-html", *flags)
            times.append(time.monotonic() - start)
            new = runs_of(repo)[: len(runs_of(repo)) - count]
            wrong += not (done.returncode == 1 and len(new) == 1 and new[0].info.status == status
                          and new[0].data.tags.get("cd4ml.status.reason") == reason)
        figures.append(Figure("faults", f"{case} -> {status} ({reason})", repeat, wrong, "wrong", times,
                              "time: whole run"))
    # a kernel that never starts: its kernelspec runs `sleep`
    kernels = base / "kernels" / "kernels" / "sleeper"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({"argv": ["sleep", "600"], "display_name": "sleeper",
                                                     "language": "python"}))
    (repo / "pyproject.toml").write_text("[tool.cd4ml_nb]\nkernel_name = 'sleeper'\nkernel_start_timeout = 3\n")
    wrong, times = 0, []
    env = {**env_without_tracking(), "JUPYTER_PATH": str(base / "kernels")}
    for _ in range(repeat):
        count = len(runs_of(repo))
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "run", "fault.py", "-q", "--no-html"], cwd=repo,
                              env=env, capture_output=True, text=True, timeout=120)
        times.append(time.monotonic() - start)
        new = runs_of(repo)[: len(runs_of(repo)) - count]
        wrong += not (done.returncode == 1 and len(new) == 1 and new[0].info.status == "FAILED"
                      and new[0].data.tags.get("cd4ml.status.reason") == "kernel-start")
    figures.append(Figure("faults", "kernel that never starts -> FAILED (kernel-start)", repeat, wrong, "wrong", times,
                          "kernel_start_timeout = 3 s"))
    (repo / "pyproject.toml").unlink()
    (repo / "sleep.py").write_text(SLEEPER)
    for case, sig, status, reason in (("SIGINT (Ctrl-C) to the runner's group", signal.SIGINT, "KILLED", "interrupted"),
                                      ("SIGTERM to the runner", signal.SIGTERM, "KILLED", "terminated"),
                                      ("SIGKILL of the runner, then `cd4ml-nb runs`", signal.SIGKILL, "FAILED",
                                       "orphaned")):
        wrong, times = 0, []
        for _ in range(repeat):
            (repo / "started").unlink(missing_ok=True)
            count = len(runs_of(repo))
            err = base / "runner.err"
            with open(err, "wb") as stderr:
                proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "sleep.py", "-q", "--no-html"],
                                        cwd=repo, env=env_without_tracking(), start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                _wait_file(repo / "started", proc)
            except AssertionError as e:
                raise AssertionError(f"{e}; its stderr: {err.read_text()[-2000:]}") from None
            # the run is created beside the kernel, not before it: mid-run means once it exists
            wait_until(lambda: len(runs_of(repo)) > count, 180, "the run created", proc=proc)
            started = psutil.Process(proc.pid).children(recursive=True)  # its kernel, to end if orphaned
            start = time.monotonic()
            if sig == signal.SIGINT:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
            proc.wait(timeout=120)
            if sig == signal.SIGKILL:
                cli(repo, "runs")
            times.append(time.monotonic() - start)
            end_processes(started)  # the orphaned kernel (after SIGKILL), else already gone
            new = runs_of(repo)[: len(runs_of(repo)) - count]
            wrong += not (len(new) == 1 and new[0].info.status == status
                          and new[0].data.tags.get("cd4ml.status.reason") == reason)
        figures.append(Figure("faults", f"{case} -> {status} ({reason})", repeat, wrong, "wrong", times,
                              "time: signal to terminal status"))
    left = sum(r.info.status == "RUNNING" for r in runs_of(repo))
    figures.append(Figure("faults", "runs left RUNNING after all of the above", len(runs_of(repo)), left, "RUNNING"))
    return figures


def check_tracking(base: Path) -> list[Figure]:
    """An unreachable tracking server: a clear error in bounded time, before any kernel starts."""
    repo = make_repo(base, "tracking")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    figures = []
    try:
        for case, uri in (("server that accepts and never answers", f"http://127.0.0.1:{port}"),
                          ("closed port", "http://127.0.0.1:9")):
            start = time.monotonic()
            done = cli(repo, "run", "score.ipynb", "-q", "--tracking-uri", uri)
            took = time.monotonic() - start
            wrong = not (done.returncode == 1 and "is not reachable" in done.stderr
                         and not (repo / ".cd4ml" / "runs").exists())
            figures.append(Figure("tracking", f"{case}: clear error, no kernel", 1, int(wrong), "wrong", [took],
                                  "health_timeout 10 s (default)", limit=20))
    finally:
        silent.close()
    return figures


def check_server_death(base: Path) -> list[Figure]:
    """A tracking server killed mid-run: the run finishes locally, is spooled, and `runs sync`
    uploads it once the server is back, with nothing lost and nothing duplicated."""
    from mlflow.tracking import MlflowClient

    repo = make_repo(base, "server-death")
    (repo / "slow.py").write_text(percent(
        "import pathlib, time, mlflow\nmlflow.log_metric('before', 1.0)\npathlib.Path('started').write_text('1')\n"
        "time.sleep(4)",
        "for step in range(3):\n    mlflow.log_metric('after', step, step=step)"))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    try:
        run = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "slow.py", "-q", "--json",
                                "--tracking-uri", uri], cwd=repo, env=env_without_tracking(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_file(repo / "started", run)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        out, err = run.communicate(timeout=300)
        result = json.loads(out) if run.returncode == 0 else {}
        finished_locally = result.get("status") == "FINISHED" and bool(result.get("spooled"))
        kept_while_down = cli(repo, "runs", "sync", "--tracking-uri", uri).returncode == 1
        server = mlflow_server(repo, port)
        start = time.monotonic()
        synced = cli(repo, "runs", "sync", "--tracking-uri", uri)
        took = time.monotonic() - start
        again = cli(repo, "runs", "sync", "--tracking-uri", uri)
        c = MlflowClient(uri)
        got = c.get_run(result["run_id"]) if result else None
        after = [m.value for m in c.get_metric_history(got.info.run_id, "after")] if got else []
        before = c.get_metric_history(got.info.run_id, "before") if got else []
        artifacts = {a.path for a in c.list_artifacts(got.info.run_id)} if got else set()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    lost = (not finished_locally) + (got is None or got.info.status != "FINISHED") + (sorted(after) != [0.0, 1.0, 2.0]) \
        + (len(before) < 1) + ("slow.ipynb" not in artifacts) + (not kept_while_down) + (synced.returncode != 0)
    duplicated = max(0, len(after) - 3) + max(0, len(before) - 1) + (not again.stdout.startswith("uploaded 0"))
    return [
        Figure("tracking", "server killed mid-run: finishes locally, spooled, `runs sync` uploads later", 7, lost,
               "lost", [took], "time: the sync"),
        Figure("tracking", "same: metric points or runs duplicated by a repeated sync", 5, duplicated, "duplicated"),
    ]


def check_pairing(base: Path) -> list[Figure]:
    """Both sides edited, an .ipynb edit within a second of the .py, garbage in the .py: 0 silent overwrites."""
    overwrites, tried = 0, 0
    for n, case in enumerate(("both sides edited", "ipynb edited within a second of the py", "garbage in the py",
                              "py edited, ipynb older")):
        repo = init_repo(base / f"pair{n}")
        write_ipynb(repo / "nb.ipynb", percent("x = 1", "print(x)"))
        assert cli(repo, "pair", "nb.ipynb").returncode == 0
        commit_all(repo)
        py, ipynb = repo / "nb.py", repo / "nb.ipynb"
        if case in ("both sides edited", "ipynb edited within a second of the py"):
            py.write_text(py.read_text().replace("print(x)", "print(x + 1)"))
            nb = json.loads(ipynb.read_text())
            nb["cells"][1]["source"] = "print(x * 2)"
            ipynb.write_text(json.dumps(nb))
            expect = 1
        elif case == "garbage in the py":
            py.write_bytes(b"\xff\xfe garbage \x00\x01")
            expect = 2
        else:
            py.write_text(py.read_text().replace("print(x)", "print(x + 1)"))
            old = time.time() - 3600
            os.utime(ipynb, (old, old))
            expect = 0
        before = digest_tree(repo)
        done = cli(repo, "sync", "nb.ipynb")
        tried += 1
        if expect:
            overwrites += done.returncode != expect or digest_tree(repo) != before
        else:
            nb = json.loads(ipynb.read_text())
            overwrites += done.returncode != 0 or "".join(nb["cells"][1]["source"]) != "print(x + 1)"
    return [Figure("pairing", "both edited / within a second / garbage .py / plain edit", tried, overwrites,
                   "silent overwrites")]


def check_parameter_values(examples: int) -> list[Figure]:
    """Property: random JSON values for an untyped parameter reach the kernel exactly (the injected
    cell, executed) or are refused with a clear message."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from papermill.translators import translate_parameters

    from cd4ml_nb import params
    from cd4ml_nb.exceptions import ParameterError

    contract = params.Contract(params.parse_cell("value = None\ncount: int = 0\nratio: float = 0.0"), 0)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
    stats = {"tried": 0, "wrong": 0}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=values, count=st.integers() | st.text(max_size=6) | st.floats(allow_nan=False))
    def prop(value, count):
        stats["tried"] += 1
        try:
            typed = params.validate(contract, values={"value": value, "count": count}, where="nb")
        except ParameterError as e:
            stats["wrong"] += "count=" not in str(e)  # only `count` may be refused
            return
        namespace: dict = {}
        exec(translate_parameters("python3", "python", typed), namespace)  # what the kernel runs
        stats["wrong"] += namespace["value"] != value or namespace["count"] != typed["count"]

    prop()
    return [Figure("parameters", "random JSON values: reach the kernel exactly or are refused clearly",
                   stats["tried"], stats["wrong"], "wrong", note="hypothesis; the injected cell is executed")]


AREAS = {
    "hostile_http": check_hostile_http,
    "paths": check_paths,
    "parameter_names": check_parameter_names,
    "malformed": check_malformed,
    "tracking": check_tracking,
    "server_death": check_server_death,
    "pairing": check_pairing,
}
