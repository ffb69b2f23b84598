"""Files written whole: the one atomic writer (readers see the old file or the new one, never half
of it; durable on request), the sync of a folder's entries, and the one lock-file lock."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str, *, durable: bool = False, private: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically: readers see the old or the new file, never half.

    A new file gets the mode any editor would give it (``0666`` less the umask, e.g. ``0644``);
    an existing file keeps its mode. The temporary file beside it is created by ``os.open`` with
    ``0o666`` so that the kernel applies the umask (``mkstemp`` would make it ``0600``). ``durable``:
    the content is synced before the rename and the rename after it (a journal's state).
    ``private``: the file is its owner's only (``0600``) from the moment it exists (a secret).
    """
    path = Path(path)
    try:
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
            break
        except FileExistsError:  # another writer's temporary file: pick another name
            continue
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None and not private:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_file`` (created if need be), held until the block ends."""
    import fcntl

    with open(lock_file, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
