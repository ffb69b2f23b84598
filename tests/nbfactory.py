"""Test helpers: real git repositories and notebooks written as Jupytext percent scripts."""
from __future__ import annotations

import hashlib
import subprocess
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
