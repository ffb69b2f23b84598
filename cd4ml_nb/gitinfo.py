"""Git: the one place the package runs ``git`` (:func:`run`, one timeout, one error), and the
provenance of a run: branch, commit, remote, dirty flag and the uncommitted diff."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .exceptions import BadInput

# CI systems check out a detached HEAD; these variables name the branch being built.
CI_BRANCH_VARIABLES = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME", "GIT_BRANCH")
MAX_UNTRACKED_BYTES = 1_000_000
MAX_DIFF_BYTES = 5_000_000
GIT_TIMEOUT = 120.0  # seconds any git command may take


@dataclass(frozen=True)
class Done:
    """A finished git command; output decoded as UTF-8 (invalid bytes replaced, newlines kept)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def problem(self) -> str:
        """The last line git wrote on stderr (or the exit code): what went wrong, in a line."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit code {self.returncode}"


def run(cwd: Path | None, *args: str, check: bool = False, env: dict[str, str] | None = None,
        timeout: float = GIT_TIMEOUT, stdin: str | None = None) -> Done:
    """Run ``git ARGS`` in ``cwd`` (``stdin``: text fed to it). A git that cannot start (127) or
    overruns ``timeout`` (124) is a failed command like any other; with ``check``, a failure is
    BadInput naming the command."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=timeout,
                              input=None if stdin is None else stdin.encode("utf-8"))
        result = Done(done.returncode, done.stdout.decode("utf-8", errors="replace"),
                      done.stderr.decode("utf-8", errors="replace"))
    except OSError as e:
        result = Done(127, "", f"git cannot run: {e}")
    except subprocess.TimeoutExpired:
        result = Done(124, "", f"git {args[0] if args else ''} took more than {timeout:g} s")
    if check and not result.ok:
        raise BadInput(f"git {' '.join(args[:2])} failed in {cwd or Path.cwd()}: {result.problem()}")
    return result


def output(cwd: Path, *args: str) -> str | None:
    """The output of ``git ARGS`` in ``cwd``, or None when it fails."""
    done = run(cwd, *args)
    return done.stdout if done.ok else None


@dataclass(frozen=True)
class GitInfo:
    """Where the code of a run came from."""

    root: Path
    commit: str | None
    branch: str | None
    remote_url: str | None
    dirty: bool
    diff: str
    diff_truncated: bool = False

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "commit": self.commit,
            "branch": self.branch,
            "remote_url": self.remote_url,
            "dirty": self.dirty,
        }


def toplevel(path: Path) -> Path | None:
    """The root of the git work tree holding ``path``, or None outside git."""
    start = path if path.is_dir() else path.parent
    out = output(start, "rev-parse", "--show-toplevel")
    return Path(out.strip()).resolve() if out else None


def current_branch(root: Path) -> str | None:
    """The checked-out branch; on a detached HEAD, the branch a CI system names, else None."""
    files = _refs_on_disk(root)
    if files is not None:  # the Lab's status asks on every poll: read HEAD rather than start git
        head = (files / "HEAD").read_text(errors="replace").strip()
        branch = head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None
    else:
        out = output(root, "symbolic-ref", "--quiet", "--short", "HEAD")
        branch = out.strip() if out and out.strip() else None
    if branch:
        return branch
    for name in CI_BRANCH_VARIABLES:
        if os.environ.get(name):
            return os.environ[name].removeprefix("origin/")
    return None


def branch_exists(root: Path, name: str) -> bool:
    """Whether ``refs/heads/NAME`` exists in the repository at ``root``."""
    files = _refs_on_disk(root)
    if files is None:
        return output(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}") is not None
    if (files / "refs" / "heads" / name).is_file():
        return True
    packed = files / "packed-refs"
    return packed.is_file() and any(line.endswith(f" refs/heads/{name}")
                                    for line in packed.read_text(errors="replace").splitlines())


def _refs_on_disk(root: Path) -> Path | None:
    """``ROOT/.git`` when its refs are plain files git itself would read (a work tree's own ``.git``
    folder, no reftable), else None: then ask git."""
    folder = root / ".git"
    if folder.is_dir() and (folder / "HEAD").is_file() and not (folder / "reftable").exists():
        return folder
    return None


def default_base_branch(root: Path | None) -> str:
    """``main`` or ``master``, whichever exists (``master`` when neither or outside git)."""
    if root is not None:
        for name in ("main", "master"):
            if branch_exists(root, name):
                return name
    return "master"


def _pathspec(root: Path, exclude: Iterable[Path]) -> list[str]:
    """``-- . :(exclude)…`` for the paths of ``exclude`` that lie inside the work tree."""
    spec = ["--", "."]
    for path in exclude:
        try:
            rel = Path(os.path.realpath(path)).relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            spec.append(f":(exclude,literal){rel.as_posix()}")
    return spec


def _untracked(root: Path, spec: list[str]) -> tuple[list[str], list[str]]:
    """Untracked files git does not ignore: (small enough to diff, too big to include)."""
    out = output(root, "ls-files", "--others", "--exclude-standard", "-z", *spec) or ""
    small, big = [], []
    for name in filter(None, out.split("\0")):
        try:
            (big if (root / name).stat().st_size > MAX_UNTRACKED_BYTES else small).append(name)
        except OSError:
            continue
    return small, big


def _worktree_diff(root: Path, untracked: list[str], spec: list[str], has_commit: bool) -> str:
    """One ``git diff`` of the work tree against HEAD, untracked files included as new files
    (marked intent-to-add in a throw-away copy of the index; the real index is untouched)."""
    if not untracked:
        return (output(root, "diff", "HEAD", "--binary", *spec) or "") if has_commit else ""
    index = Path(os.path.realpath(root / (output(root, "rev-parse", "--git-path", "index") or "").strip()))
    with tempfile.TemporaryDirectory(prefix="cd4ml-index-") as tmp:
        scratch = Path(tmp) / "index"
        if index.is_file():
            shutil.copyfile(index, scratch)
        env = {**os.environ, "GIT_INDEX_FILE": str(scratch)}
        names = Path(tmp) / "untracked"
        names.write_bytes(b"\0".join(n.encode() for n in untracked))
        run(root, "add", "--intent-to-add", "--pathspec-from-file", str(names), "--pathspec-file-nul", env=env)
        return run(root, "diff", *(["HEAD"] if has_commit else []), "--binary", *spec, env=env).stdout


def _cap(diff: str, limit: int) -> tuple[str, bool]:
    """``diff`` cut to at most ``limit`` bytes at a line end, with a closing tag when cut."""
    data = diff.encode("utf-8")
    if len(data) <= limit:
        return diff, False
    kept = data[:limit].rsplit(b"\n", 1)[0].decode("utf-8", errors="ignore")
    return f"{kept}\n# cd4ml-nb: diff truncated: {len(data)} bytes, the first {limit} kept\n", True


def inspect(path: Path, *, exclude: Iterable[Path] = (), max_diff_bytes: int = MAX_DIFF_BYTES) -> GitInfo | None:
    """Git provenance of the work tree holding ``path``; None outside a git repository.

    Files under ``exclude`` (what this project writes: its store, run folders) do not count as
    changes; the uncommitted diff is capped at ``max_diff_bytes`` (``diff_truncated`` then says so).
    """
    root = toplevel(path)
    if root is None:
        return None
    commit = (output(root, "rev-parse", "--verify", "--quiet", "HEAD") or "").strip() or None
    remote = None
    remotes = (output(root, "remote") or "").split()
    if remotes:
        name = "origin" if "origin" in remotes else remotes[0]
        remote = (output(root, "remote", "get-url", name) or "").strip() or None
    spec = _pathspec(root, exclude)
    small, big = _untracked(root, spec)
    diff = _worktree_diff(root, small, spec, commit is not None)
    diff += "".join(f"# untracked file not included (over {MAX_UNTRACKED_BYTES} bytes): {n}\n" for n in big)
    diff, truncated = _cap(diff, max_diff_bytes)
    return GitInfo(
        root=root,
        commit=commit,
        branch=current_branch(root),
        remote_url=remote,
        dirty=bool(diff),
        diff=diff,
        diff_truncated=truncated,
    )


def merge_base(root: Path, base: str) -> str | None:
    """The commit where HEAD left ``base``, or None when there is none."""
    out = output(root, "merge-base", "HEAD", base)
    return out.strip() if out else None


def is_ancestor(root: Path, ancestor: str, descendant: str) -> bool:
    """Whether commit ``ancestor`` is reachable from ``descendant`` (False when either is unknown)."""
    return run(root, "merge-base", "--is-ancestor", ancestor, descendant).ok


def commit_of(root: Path, ref: str) -> str | None:
    """The commit ``ref`` names, or None when it names none."""
    out = output(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return out.strip() if out else None


def fork_point(root: Path, branch: str, base: str) -> str | None:
    """Where ``branch`` left ``base`` (their merge-base), or None when there is none."""
    out = output(root, "merge-base", branch, base)
    return out.strip() if out else None


def patch_ids(root: Path, patches: str) -> list[tuple[str, str]]:
    """``(patch id, commit)`` of each patch in ``patches`` (``git patch-id --stable``; the commit
    is all zeros for a plain diff)."""
    done = run(root, "patch-id", "--stable", stdin=patches)
    return [tuple(line.split()[:2]) for line in done.stdout.splitlines() if len(line.split()) >= 2] if done.ok else []


def has_file(root: Path, commit: str, path: str) -> bool:
    """Whether ``path`` (relative to the repository root) is a file in ``commit``."""
    return run(root, "cat-file", "-e", f"{commit}:{path}").ok


def add_worktree(root: Path, path: Path, commit: str) -> None:
    """Check ``commit`` out, detached, into a new work tree at ``path`` (``git worktree add``)."""
    run(root, "worktree", "prune")  # a work tree left by a process that died is forgotten first
    run(root, "worktree", "add", "--detach", "--quiet", str(path), commit, check=True)


def remove_worktree(root: Path, path: Path) -> None:
    """Remove the work tree at ``path`` (whatever it holds) and git's record of it."""
    run(root, "worktree", "remove", "--force", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    run(root, "worktree", "prune")
