"""The project a notebook belongs to: its root, configuration, state folder and paths."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import gitinfo, store
from .config import Cd4mlConfig, load_config
from .exceptions import Forbidden, NotFound


@dataclass(frozen=True)
class Project:
    """A folder whose notebooks share one MLflow store and one git repository."""

    root: Path
    config: Cd4mlConfig
    in_git: bool

    @classmethod
    def discover(cls, start: Path | str = ".", **config_overrides) -> "Project":
        """The project holding ``start``: the git work tree, else the nearest folder with a
        ``pyproject.toml``, else ``start``'s own folder."""
        start = Path(start).resolve()
        if not start.exists():
            raise NotFound(f"{start}: no such file or folder")
        root = gitinfo.toplevel(start)
        in_git = root is not None
        if root is None:
            folder = start if start.is_dir() else start.parent
            root = next((p for p in (folder, *folder.parents) if (p / "pyproject.toml").is_file()), folder)
        return cls(root=root, config=load_config(root, **config_overrides), in_git=in_git)

    @property
    def state_dir(self) -> Path:
        """The git-ignored folder for the embedded store, sync records and run outputs."""
        return (self.root / self.config.state_dir).resolve()

    def ensure_state_dir(self) -> Path:
        """Create the state folder, git-ignored by a ``.gitignore`` of its own."""
        return ignored_folder(self.state_dir)

    @property
    def lab_runs_dir(self) -> Path:
        """Where jobs started from JupyterLab put their outputs (visible, so Lab can open them)."""
        return (self.root / self.config.lab_runs_dir).resolve()

    def ensure_lab_runs_dir(self) -> Path:
        return ignored_folder(self.lab_runs_dir)

    @property
    def tracking_uri(self) -> str:
        """The configured tracking URI, else the embedded SQLite store."""
        if self.config.tracking_uri:
            return self.config.tracking_uri
        return store.uri_of(self.root / self.config.state_dir / "mlflow.db")

    @property
    def is_embedded_store(self) -> bool:
        return not self.config.tracking_uri

    @property
    def store_path(self) -> Path | None:
        """The database file of a SQLite store (the embedded one or a configured one), else None."""
        return store.sqlite_path(self.tracking_uri)

    @property
    def artifact_root(self) -> Path:
        """Where the experiments this project creates in a SQLite store keep artifacts: as
        configured, else beside the database, else (database in the project) under state_dir."""
        if self.config.artifact_root:
            return (self.root / self.config.artifact_root).resolve()
        db = self.store_path
        if db is not None and not self.is_embedded_store:
            db = db.resolve()
            if db.parent != self.root and self.root not in db.parents:
                return db.with_name(f"{db.stem}-artifacts")
        return self.root / self.config.state_dir / "artifacts"

    def own_paths(self) -> list[Path]:
        """Files and folders this project writes (state, Lab run folders, a SQLite store and its
        artifacts): never counted as uncommitted changes of the user's work tree."""
        paths = [self.state_dir, self.lab_runs_dir, self.artifact_root]
        db = self.store_path
        if db is not None:
            paths += [db.with_name(db.name + suffix) for suffix in ("", ".lock", "-journal", "-wal", "-shm")]
        return paths

    def git_info(self, path: Path) -> "gitinfo.GitInfo | None":
        """Git provenance of ``path``'s work tree, ignoring what this project writes."""
        return gitinfo.inspect(path, exclude=self.own_paths(), max_diff_bytes=self.config.max_diff_bytes)

    @property
    def base_branch(self) -> str:
        if self.config.base_branch:
            return self.config.base_branch
        return gitinfo.default_base_branch(self.root if self.in_git else None)

    @property
    def mlflow_ui_url(self) -> str | None:
        if self.config.mlflow_ui_url:
            return self.config.mlflow_ui_url
        uri = self.tracking_uri
        return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None

    def confine(self, user_path: str | os.PathLike, *, allow_hidden: bool = False) -> Path:
        """Resolve a user-given path inside the root (realpath), refusing escapes.

        Relative paths are taken from the root. Absolute paths must resolve inside it.
        """
        text = os.fspath(user_path)
        if "\0" in text:
            raise Forbidden(f"{text!r}: path contains a NUL byte")
        candidate = Path(text) if os.path.isabs(text) else self.root / text
        real = Path(os.path.realpath(candidate))
        root = Path(os.path.realpath(self.root))
        if real != root and root not in real.parents:
            raise Forbidden(f"{text}: outside the project root {root}")
        if not allow_hidden:
            rel = real.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                raise Forbidden(f"{text}: hidden files and folders are not allowed")
        return real

    def relative(self, path: Path) -> str:
        """``path`` relative to the root when inside it, else absolute (POSIX form)."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return path.resolve().as_posix()


def ignored_folder(path: Path) -> Path:
    """Create ``path`` with a ``.gitignore`` that ignores everything in it."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by cd4ml-nb: nothing here belongs in git\n*\n")
    return path
