"""Test helpers: real git repositories, notebooks written as Jupytext percent scripts, local services."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def init_repo(path: Path, branch: str = "master") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.email", "ci@example.com")
    git(path, "config", "user.name", "CI")
    git(path, "config", "commit.gpgsign", "false")
    return path


def commit_all(repo: Path, message: str = "commit") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def percent(*cells: str, parameters: str | None = None) -> str:
    """A percent script: an optional parameters cell, then code cells."""
    parts = []
    if parameters is not None:
        parts.append('# %% tags=["parameters"]\n' + parameters.strip() + "\n")
    parts += ["# %%\n" + cell.strip() + "\n" for cell in cells]
    return "\n".join(parts)


def write_ipynb(path: Path, text: str) -> Path:
    """Write the .ipynb form of a percent script (with the python3 kernelspec)."""
    import jupytext

    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, path, fmt="ipynb")
    return path


def digest_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file outside .git and the state folder: to prove nothing was touched."""
    found = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in (".git", ".cd4ml"):
            found[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 120, what: str = "the condition",
               interval: float = 0.2, proc: subprocess.Popen | None = None, ignore: tuple = ()) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; else fail saying ``what``
    did not happen. Exceptions in ``ignore`` count as "not yet"; with ``proc``, fail as soon as it exits.

    Deadlines are generous on purpose: a loaded CI machine is slow, never wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: did not happen, the process exited first (code {proc.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: did not happen within {timeout:.0f} s")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Awaitable[Any]], timeout: float = 120,
                           what: str = "the condition", interval: float = 0.2) -> Any:
    """:func:`wait_until` for a coroutine predicate, sleeping without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: did not happen within {timeout:.0f} s")
        await asyncio.sleep(interval)


def wait_http(url: str, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Block until ``url`` answers (any status), or fail the test."""
    def answers() -> bool:
        urllib.request.urlopen(url, timeout=5).close()
        return True

    wait_until(answers, timeout, f"{url} coming up", interval=0.3, proc=proc, ignore=(OSError,))


def jupyter_port(runtime_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """The port a `jupyter server`/`jupyter lab` started as ``proc`` really listens on, read from the
    ``jpserver-<pid>.json`` it writes in ``runtime_dir`` (it moves to another port if its first
    choice was taken meanwhile)."""
    info = runtime_dir / f"jpserver-{proc.pid}.json"
    return wait_until(lambda: json.loads(info.read_text())["port"], timeout, f"{info} written", proc=proc,
                      ignore=(OSError, ValueError, KeyError))


def end_processes(procs: list, timeout: float = 20) -> None:
    """SIGTERM then SIGKILL the given ``psutil.Process`` objects (pid-reuse safe), if still running."""
    import psutil

    alive = [p for p in procs if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(alive, timeout=timeout)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=timeout)


def mlflow_server(repo: Path, port: int, *args: str, env: dict | None = None,
                  output: Path | None = None) -> subprocess.Popen:
    """A real `mlflow server` started through `cd4ml-nb server` (its own process group), ready.

    Its store is the server's default SQLite file, or — with ``CD4ML_NB_TEST_TEAM_BACKEND=postgres``
    — a PostgreSQL database of its own, named after ``repo`` so that a restart finds the same one,
    handed over in ``MLFLOW_BACKEND_STORE_URI`` (a password is never on a command line). ``args``
    are more `cd4ml-nb server` options (``--auth``); ``env`` more variables; ``output`` a file for
    what the command and MLflow print (else discarded). The server runs this source tree's code.
    """
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                      env.get("PYTHONPATH")]))
    if team_backend() == "postgres":
        import pgcluster

        env["MLFLOW_BACKEND_STORE_URI"] = pgcluster.database("t" + hashlib.sha1(str(repo).encode()).hexdigest()[:16])
    sink = open(output, "ab") if output else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "server", "--port", str(port), "--workers", "1",
                                 *args], cwd=repo, env=env, start_new_session=True, stdout=sink, stderr=sink)
    finally:
        if output:
            sink.close()
    wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    return proc


def team_backend() -> str:
    """The store behind the team-mode tests' servers: ``sqlite`` (default) or ``postgres``."""
    return os.environ.get("CD4ML_NB_TEST_TEAM_BACKEND", "sqlite")


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """End the process group a test started (``start_new_session=True``): SIGTERM, then SIGKILL."""
    import os
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
