"""Test helpers: real git repositories, notebooks written as Jupytext percent scripts, local services."""
from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


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


def wait_http(url: str, timeout: float = 90) -> None:
    """Block until ``url`` answers (any status), or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.3)


def mlflow_server(repo: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` started through `cd4ml-nb server` (its own process group), ready."""
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "server", "--port", str(port), "--workers", "1"],
                            cwd=repo, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc
