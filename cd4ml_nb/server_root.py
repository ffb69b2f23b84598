"""The Jupyter server's root as the Lab extension sees it: every user path resolved against the
contents manager's ``root_dir`` and confined to it (realpath, no symlink escape, hidden files per
``allow_hidden``), and the project found from there."""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from .exceptions import BadInput, Forbidden, NotFound
from .project import Project

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX)


def shown(text: str, limit: int = 80) -> str:
    """``text`` for an error message: cut to ``limit`` characters, control characters escaped."""
    """A user-given value for a message: quoted, clipped, surrogates escaped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(text if len(text) <= limit else text[:limit] + "…")


class ServerRoot:
    """Jupyter's root as the API sees it: paths are given relative to it and confined to it."""

    def __init__(self, server_app) -> None:
        self.app = server_app
        self.contents = getattr(server_app, "contents_manager", None)
        given = getattr(self.contents, "root_dir", None) or server_app.root_dir
        self.path = Path(os.path.realpath(given))
        self._prefixes = self._scrub_prefixes(Path(os.path.abspath(given)))

    @property
    def allow_hidden(self) -> bool:
        return bool(getattr(self.contents, "allow_hidden", False))

    def project(self, start: Path | None = None) -> Project:
        """The project of ``start`` (a file under the root; default: the root itself)."""
        return Project.discover(start or self.path, parent=self.app)

    def relative(self, path: Path | str) -> str | None:
        """``path`` relative to the root (POSIX form), or None when it is outside."""
        real = Path(os.path.realpath(path))
        if real == self.path:
            return "."
        if self.path not in real.parents:
            return None
        return real.relative_to(self.path).as_posix()

    def inside(self, path: Path, what: str = "file", *, hidden: bool = False) -> str:
        """``path`` relative to the root; Forbidden when it is outside, or hidden (unless allowed)."""
        rel = self.relative(path)
        if rel is None:
            raise Forbidden(f"the {what} {shown(self.scrub(str(path)))} is outside the server root")
        parts = PurePosixPath(rel).parts
        if not (hidden or self.allow_hidden) and any(part.startswith(".") for part in parts if part != "."):
            raise Forbidden(f"the {what} {rel!r} is hidden, and hidden files are not allowed")
        return rel

    def file(self, text: Any, what: str = "path") -> Path:
        """The real path of the existing file ``text`` names (relative to the root), checked.

        BadInput (400) for a value that is not a usable relative path, Forbidden (403) for one
        that leaves the root (``..``, a symlink) or is hidden, NotFound (404) for no such file.
        """
        if text is None or text == "":
            raise BadInput(f"missing {what!r}")
        if not isinstance(text, str):
            raise BadInput(f"{what!r} must be a string: a path relative to the server root")
        if len(text) > MAX_PATH_CHARS:
            raise BadInput(f"{what!r} is too long ({len(text)} characters, at most {MAX_PATH_CHARS})")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"{what!r} is not valid Unicode text (a lone surrogate)") from None
        name = shown(text)
        if "\0" in text:
            raise BadInput(f"{name}: a path cannot contain a NUL character")
        if text.startswith(("/", "\\")) or "\\" in text or re.match(r"^[A-Za-z]:[\\/]", text):
            raise BadInput(f"{name}: give a path relative to the server root")
        parts = text.split("/")
        if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
            raise BadInput(f"{name}: a name in it is too long (at most {MAX_NAME_BYTES} bytes)")
        if not self.allow_hidden and any(p.startswith(".") and p not in (".", "..") for p in parts):
            raise Forbidden(f"{name}: hidden files and folders are not allowed")
        real = Path(os.path.realpath(self.path / text))
        if self.relative(real) is None:  # `..` or a symlink leads out
            raise Forbidden(f"{name}: outside the server root")
        self.inside(real)  # hidden, once symlinks are resolved
        try:
            found = real.is_file()
        except OSError:
            found = False
        if not found:
            raise NotFound(f"{name}: no such file")
        return real

    @staticmethod
    def _scrub_prefixes(root: Path) -> list[tuple[re.Pattern, str]]:
        """Absolute forms of the root and its ancestors, and the relative text that replaces them."""
        roots = {root: "", Path(os.path.realpath(root)): ""}
        for base in list(roots):
            for depth, parent in enumerate(base.parents, start=1):
                if parent != Path(parent.anchor):
                    roots.setdefault(parent, "../" * depth)
        found = []
        for path, rel in sorted(roots.items(), key=lambda item: -len(str(item[0]))):
            # a whole path, not the tail of a longer name or of a URL's host (`http://host/tmp`)
            pattern = re.compile(r"(?<![\w.~-])" + re.escape(str(path)) + r"(/|(?![\w.-]))")
            found.append((pattern, rel))
        return found

    def scrub(self, text: str) -> str:
        """``text`` with absolute paths under the root's ancestors made relative to the root."""
        for pattern, rel in self._prefixes:
            text = pattern.sub(lambda m, rel=rel: rel if m.group(1) == "/" else (rel.rstrip("/") or "."), text)
        return text
