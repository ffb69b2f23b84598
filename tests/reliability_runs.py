"""Reliability figures for stores and run endings (issue #10), at counts set by bench/reliability.py.

Each check repeats a scenario the tests in test_store.py / test_runs_end.py pin down once, and
counts what must be 0: runs lost, runs left RUNNING, data lost or duplicated, stores damaged.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import reliability_suite as suite
from nbfactory import commit_all, free_port, git, mlflow_server, percent, wait_until, write_ipynb

WAITS = percent(
    "import os, pathlib, time\npathlib.Path(os.environ['MARKER']).write_text(str(os.getpid()))\n"
    "deadline = time.monotonic() + 300\nwhile time.monotonic() < deadline and not pathlib.Path("
    "os.environ['MARKER'] + '.go').exists():\n    time.sleep(0.05)")
MANY = percent(
    "import mlflow\nmlflow.log_params({f'p{i:03d}': i for i in range(150)})\n"
    "mlflow.set_tags({f't{i:03d}': i for i in range(150)})\n"
    "for step in range(2500):\n    mlflow.log_metric('curve', step * 0.5, step=step)")


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=5000)


def check_new_store(base: Path, rounds: int) -> list[suite.Figure]:
    """8 `cd4ml-nb run` at once on a new `sqlite:` URI outside the project, ``rounds`` times."""
    from cd4ml_nb import store

    repo = suite.make_repo(base, "new-store")
    lost, damaged, dirty, took = 0, 0, 0, []
    for round_ in range(rounds):
        db = base / f"outside-{round_}" / "mlflow.db"
        start = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "score.ipynb", "-q", "--no-html",
                                   "--tracking-uri", f"sqlite:///{db}"], cwd=repo, env=suite.env_without_tracking(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(8)]
        for proc in procs:
            proc.wait(timeout=900)
        took.append(time.monotonic() - start)
        damaged += store.state(db) != "complete"
        runs = _runs(f"sqlite:///{db}") if not damaged else []
        lost += 8 - sum(r.info.status == "FINISHED" for r in runs)
        dirty += sum(r.data.tags.get("cd4ml.git.dirty") != "false" for r in runs)
    in_tree = int((repo / "mlruns").exists() or bool(git(repo, "status", "--porcelain")))
    return [
        suite.Figure("stores", "8 concurrent first runs on a new sqlite: URI outside the project", 8 * rounds,
                     lost, "not FINISHED", took, f"{rounds} rounds, 8 processes each; time per round"),
        suite.Figure("stores", "stores damaged by that", rounds, damaged, "damaged"),
        suite.Figure("stores", "runs of it recorded as dirty (artifacts in the work tree)", 8 * rounds, dirty,
                     "dirty", note="artifacts go beside the database"),
        suite.Figure("stores", "work tree changed by those runs (mlruns/, untracked files)", 1, in_tree, "changed"),
    ]


def check_lab_store(base: Path, rounds: int) -> list[suite.Figure]:
    """A Lab job submitted the moment a server starts on a new explicit store."""
    from cd4ml_nb import store

    repo = suite.make_repo(base, "lab-store")
    wrong = 0
    for round_ in range(rounds):
        db = base / f"lab-{round_}" / "lab.db"
        with suite.jupyter_server(repo, f"--Cd4mlConfig.tracking_uri=sqlite:///{db}") as server:
            job = _api(f"{server.url}cd4ml-nb/jobs", server.token, "POST", {"path": "score.ipynb", "parameters": {}})
            url = f"{server.url}cd4ml-nb/jobs/{job['id']}"
            ended = wait_until(lambda: (j := _api(url, server.token))["state"] in ("finished", "failed", "killed")
                               and j, 600, "the job ending")
        wrong += ended["state"] != "finished" or store.state(db) != "complete"
    return [suite.Figure("stores", "Lab job on a new explicit store while the server starts", rounds, wrong,
                         "not FINISHED")]


def _api(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    import urllib.request

    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=60) as response:
        return json.loads(response.read())


def check_killed_runners(base: Path, repeat: int) -> list[suite.Figure]:
    """A `cd4ml-nb run` SIGKILLed mid-run: its guard ends the run; seconds from kill to terminal."""
    repo = suite.make_repo(base, "killed-runner")
    write_ipynb(repo / "waits.ipynb", WAITS)
    commit_all(repo)
    uri = f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}"
    left, took = 0, []
    for i in range(repeat):
        marker = base / f"kernel-{i}.pid"
        proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "waits.ipynb", "-q", "--no-html"],
                                cwd=repo, env={**suite.env_without_tracking(), "MARKER": str(marker)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(marker.exists, 300, "the notebook running", proc=proc)
            wait_until(lambda: len(_runs(uri)) > i, 300, "the run created (beside the kernel)", proc=proc)
            proc.kill()
            killed = time.monotonic()
            proc.wait(timeout=60)
            run_ids = {r.info.run_id for r in _runs(uri)}
            try:
                wait_until(lambda: all(r.info.status != "RUNNING" for r in _runs(uri)), 60, "runs ending")
                took.append(time.monotonic() - killed)
            except AssertionError:
                left += sum(r.info.status == "RUNNING" for r in _runs(uri) if r.info.run_id in run_ids)
        finally:
            marker.with_name(marker.name + ".go").touch()
            _kill(marker)
    return [suite.Figure("run endings", "runner SIGKILLed mid-run: run left RUNNING after 60 s", repeat, left,
                         "RUNNING", took, "time: kill to terminal status (the guard)")]


def _kill(marker: Path) -> None:
    try:
        os.kill(int(marker.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def check_killed_sessions(base: Path, repeat: int) -> list[suite.Figure]:
    """An interactive `cd4ml_nb.track()` session whose kernel is killed (as nbval and restarts do)."""
    from jupyter_client.manager import start_new_kernel

    repo = suite.make_repo(base, "sessions")
    uri = f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}"
    left, took = 0, []
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for _ in range(repeat):
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(repo))
        try:
            kc.execute_interactive("import cd4ml_nb\ncd4ml_nb.track('score.ipynb')", timeout=300)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        killed = time.monotonic()
        try:
            wait_until(lambda: all(r.info.status != "RUNNING" for r in _runs(uri)), 60, "runs ending")
            took.append(time.monotonic() - killed)
        except AssertionError:
            left += sum(r.info.status == "RUNNING" for r in _runs(uri))
    return [suite.Figure("run endings", "track() session whose kernel is killed: run left RUNNING after 60 s",
                         repeat, left, "RUNNING", took, "time: kill to terminal status")]


def check_team_batches(base: Path) -> list[suite.Figure]:
    """150 parameters, 150 tags and 2,500 metric points logged against a real `mlflow server`."""
    from mlflow.tracking import MlflowClient

    repo = suite.make_repo(base, "team")
    write_ipynb(repo / "many.ipynb", MANY)
    commit_all(repo)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    try:
        done = suite.cli(repo, "run", "many.ipynb", "-q", "--no-html", "--tracking-uri", uri, timeout=900)
        c = MlflowClient(uri)
        (run,) = c.search_runs([c.get_experiment_by_name("master").experiment_id])
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "curve")]
        params = sum(k.startswith("p") for k in run.data.params)
        tags = sum(k.startswith("t") and k[1:].isdigit() for k in run.data.tags)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
    lost = (150 - params) + (150 - tags) + (2500 - len(set(steps)))
    return [
        suite.Figure("team mode", "parameters + tags + metric points through the spool", 2800, lost, "lost",
                     note=f"exit {done.returncode}, status {run.info.status}"),
        suite.Figure("team mode", "metric points duplicated", 2500, len(steps) - len(set(steps)), "duplicated"),
    ]


def check_fuzz(base: Path, examples: int) -> list[suite.Figure]:
    """Hypothesis-drawn requests (routes, methods, job ids, query strings, bodies) at a real server."""
    from hypothesis import HealthCheck, given, settings

    import test_server_fuzz as fuzz
    from test_server_root import assert_no_traceback

    sent, server_errors = [], []
    with fuzz.fuzz_server(base) as server:
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(req=fuzz.REQUESTS)
        def probe(req) -> None:
            reply, what = fuzz.send(server, req)
            sent.append(what)
            if reply.status >= 500:
                server_errors.append(what)

        probe()
        try:
            assert_no_traceback(server)
            tracebacks = 0
        except AssertionError:
            tracebacks = 1
    return [suite.Figure("HTTP fuzz", "random requests at every route (hypothesis)", len(sent), len(server_errors),
                         "answered 5xx", note="root in a subfolder of a repository, a store with a run"),
            suite.Figure("HTTP fuzz", "server log with an 'Uncaught exception' traceback", 1, tracebacks, "found")]


def check_all(base: Path, rounds: int, repeat: int, examples: int = 1000) -> list[suite.Figure]:
    figures = []
    for name, check in (("new-store", lambda b: check_new_store(b, rounds)),
                        ("lab-store", lambda b: check_lab_store(b, rounds)),
                        ("runners", lambda b: check_killed_runners(b, repeat)),
                        ("sessions", lambda b: check_killed_sessions(b, repeat)),
                        ("team", check_team_batches),
                        ("fuzz", lambda b: check_fuzz(b, examples))):
        (base / name).mkdir()
        figures += check(base / name)
        print(f"{name}: done", flush=True)
    return figures
