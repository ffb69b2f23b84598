"""Git provenance of a run: branch, commit, remote, dirty flag and the uncommitted diff."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# CI systems check out a detached HEAD; these variables name the branch being built.
CI_BRANCH_VARIABLES = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME", "GIT_BRANCH")
MAX_UNTRACKED_BYTES = 1_000_000


@dataclass(frozen=True)
class GitInfo:
    """Where the code of a run came from."""

    root: Path
    commit: str | None
    branch: str | None
    remote_url: str | None
    dirty: bool
    diff: str

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "commit": self.commit,
            "branch": self.branch,
            "remote_url": self.remote_url,
            "dirty": self.dirty,
        }


def _git(cwd: Path, *args: str, check: bool = False) -> str | None:
    """Output of a git command, or None when it fails."""
    try:  # bytes, decoded without newline translation: a diff must keep its \r characters
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=check)
    except (OSError, subprocess.CalledProcessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", errors="replace")


def toplevel(path: Path) -> Path | None:
    """The root of the git work tree holding ``path``, or None outside git."""
    start = path if path.is_dir() else path.parent
    out = _git(start, "rev-parse", "--show-toplevel")
    return Path(out.strip()).resolve() if out else None


def current_branch(root: Path) -> str | None:
    """The checked-out branch; on a detached HEAD, the branch a CI system names, else None."""
    out = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
    if out and out.strip():
        return out.strip()
    for name in CI_BRANCH_VARIABLES:
        if os.environ.get(name):
            return os.environ[name].removeprefix("origin/")
    return None


def branch_exists(root: Path, name: str) -> bool:
    return _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}") is not None


def default_base_branch(root: Path | None) -> str:
    """``main`` or ``master``, whichever exists (``master`` when neither or outside git)."""
    if root is not None:
        for name in ("main", "master"):
            if branch_exists(root, name):
                return name
    return "master"


def _untracked_diff(root: Path) -> str:
    out = _git(root, "ls-files", "--others", "--exclude-standard", "-z") or ""
    parts = []
    for name in filter(None, out.split("\0")):
        path = root / name
        try:
            if path.stat().st_size > MAX_UNTRACKED_BYTES:
                parts.append(f"# untracked file not included (over {MAX_UNTRACKED_BYTES} bytes): {name}\n")
                continue
        except OSError:
            continue
        # `git diff --no-index` exits 1 when files differ, so read its output directly.
        done = subprocess.run(
            ["git", "diff", "--no-index", "--binary", "--", "/dev/null", name], cwd=root, capture_output=True
        )
        parts.append(done.stdout.decode("utf-8", errors="replace"))
    return "".join(parts)


def inspect(path: Path) -> GitInfo | None:
    """Git provenance of the work tree holding ``path``; None outside a git repository."""
    root = toplevel(path)
    if root is None:
        return None
    commit = (_git(root, "rev-parse", "--verify", "--quiet", "HEAD") or "").strip() or None
    remote = None
    remotes = (_git(root, "remote") or "").split()
    if remotes:
        name = "origin" if "origin" in remotes else remotes[0]
        remote = (_git(root, "remote", "get-url", name) or "").strip() or None
    tracked = (_git(root, "diff", "HEAD", "--binary") or "") if commit else ""
    untracked = _untracked_diff(root)
    diff = tracked + untracked
    return GitInfo(
        root=root,
        commit=commit,
        branch=current_branch(root),
        remote_url=remote,
        dirty=bool(diff),
        diff=diff,
    )


def merge_base(root: Path, base: str) -> str | None:
    """The commit where HEAD left ``base``, or None when there is none."""
    out = _git(root, "merge-base", "HEAD", base)
    return out.strip() if out else None
