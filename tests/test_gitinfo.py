"""gitinfo reads the branch from the files git keeps rather than starting git (the Lab's status asks
on every poll): the answers are git's own, for plain, nested, packed, detached and worktree repos."""
from __future__ import annotations

import subprocess
from pathlib import Path

from cd4ml_nb import gitinfo

from nbfactory import init_repo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def gits_answers(repo: Path, names: tuple[str, ...]) -> tuple:
    """What git itself says: the current branch (None when detached) and which names are branches."""
    head = subprocess.run(["git", "symbolic-ref", "--quiet", "--short", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip() or None
    exists = tuple(subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{n}"], cwd=repo,
                                  capture_output=True).returncode == 0 for n in names)
    return head, exists


def test_branch_read_from_files_is_what_git_says(tmp_path, monkeypatch):
    for name in gitinfo.CI_BRANCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    repo = init_repo(tmp_path / "repo", branch="main")
    (repo / "f.txt").write_text("x")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-qm", "one")
    names = ("main", "master", "feature/deep-name", "feature")
    worktree = tmp_path / "wt"
    states = [
        lambda: None,
        lambda: git(repo, "checkout", "-qb", "feature/deep-name"),
        lambda: git(repo, "pack-refs", "--all"),  # branches now only in packed-refs
        lambda: git(repo, "checkout", "-q", "--detach"),
        lambda: git(repo, "worktree", "add", "-q", str(worktree), "main"),
    ]
    for change in states:
        change()
        for where in (repo, worktree) if worktree.exists() else (repo,):
            ours = gitinfo.current_branch(where), tuple(gitinfo.branch_exists(where, n) for n in names)
            assert ours == gits_answers(where, names), where
    assert gitinfo._refs_on_disk(repo) is not None  # the fast path was the one compared
