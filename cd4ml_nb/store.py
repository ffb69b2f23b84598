"""SQLite MLflow stores that are born complete.

MLflow creates and migrates a SQLite store on first open, with no lock: processes that open the
same new file at once corrupt it (``table _alembic_tmp_tags already exists``) and the
half-migrated file then fails every later open. Every entry point of this project opens a SQLite
store through :func:`ensure_sqlite`, which builds a new store in a temporary file beside the
database, under a lock file beside it, and moves it into place complete. A store left
half-migrated by an older crash is named in one line with the way to recover it.

Which client writes a complete store is decided here too, without importing MLflow: the light
client of :mod:`.sqlite_client` only for an installed MLflow release and schema revision that
form a :data:`VERIFIED` pair, and only while the project's ``store_writes`` setting (or
``CD4ML_NB_STORE_WRITES``) is ``auto``; otherwise MLflow's own client.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import secrets
import sqlite3
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

from . import files
from .exceptions import TrackingError

SCHEME = "sqlite:"


def is_sqlite(uri: str) -> bool:
    return uri.startswith(SCHEME)


def uri_of(path: Path) -> str:
    """The ``sqlite:///`` URI of a database file. Only ``%``, ``?`` and ``#`` are percent-encoded
    (SQLAlchemy and :func:`sqlite_path` decode them), so such a folder name stays in the path;
    other characters stay as they are, because MLflow creates the store's folder from the URI's
    text without decoding it."""
    text = str(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23")
    return f"sqlite:///{text}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths taken from the current folder);
    None for an in-memory database or another scheme."""
    if not uri.startswith("sqlite:///"):
        return None
    text = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    if not text or text == ":memory:":
        return None
    return Path(text) if text.startswith("/") else Path.cwd() / text


def absolute_uri(uri: str, base: Path) -> str:
    """``uri`` with a relative SQLite path made absolute against ``base`` (other URIs unchanged),
    so that every process (kernels run in the notebook's folder) opens the same file."""
    if not uri.startswith("sqlite:///"):
        return uri
    path, sep, query = uri[len("sqlite:///"):].partition("?")
    if not path or path.startswith("/") or path == ":memory:":
        return uri
    return f"{uri_of((base / unquote(path)).resolve())}{sep}{query}"


def open_readonly(path: Path, timeout: float = 30) -> sqlite3.Connection:
    """A read-only connection that never creates the file (its name percent-encoded, so a folder
    named with ``?``, ``#`` or ``%`` is not read as URI syntax)."""
    return sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=timeout)


def state(path: Path) -> str:
    """``missing``, ``empty`` (no tables: a file SQLite made on open), ``complete``, or
    ``broken:<why>`` for a store left half-migrated. Read-only; never creates the file."""
    try:
        if path.stat().st_size == 0:
            return "empty"
    except FileNotFoundError:
        return "missing"
    try:
        db = open_readonly(path)
    except sqlite3.Error as e:
        return f"broken:cannot be opened ({e})"
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return "empty"
        leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        if leftovers:
            return f"broken:an interrupted migration left table {leftovers[0]}"
        if "alembic_version" not in tables:
            return "broken:it has tables but no MLflow schema version (not an MLflow store?)"
        if db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] != 1:
            return "broken:its schema version table is not one row"
        return "complete"
    except sqlite3.DatabaseError as e:
        return f"broken:not a readable SQLite database ({e})"
    finally:
        db.close()


def _build(path: Path, artifact_root: str) -> None:
    """Create and migrate a new store in a temporary file beside ``path``, then move it there."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{secrets.token_hex(3)}")
    uri = uri_of(tmp)
    try:
        built = SqlAlchemyStore(uri, artifact_root)
        built.engine.dispose()
        getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)  # MLflow caches engines by URI
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def ensure_sqlite(uri: str, artifact_root: str, *, create: bool = True) -> bool:
    """Make sure the SQLite store of ``uri`` exists complete; False when it is missing and
    ``create`` is False (a read must not create a store). Raises TrackingError for a broken store."""
    path = sqlite_path(uri)
    if path is None:
        return True
    found = state(path)
    if found == "complete":
        return True
    if found.startswith("broken:"):
        raise _broken(path, found)
    if not create:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.locked(path.with_name(path.name + ".lock")):
            found = state(path)  # another process may have built it meanwhile
            if found in ("missing", "empty"):
                _logging_quiet()
                _build(path, artifact_root)
            elif found.startswith("broken:"):
                raise _broken(path, found)
    except OSError as e:
        raise TrackingError(f"{path}: cannot create the MLflow store ({e.strerror or e})") from None
    return True


def refuse_damaged(uri: str) -> None:
    """Raise TrackingError for a damaged SQLite store (cheap: no MLflow import, nothing created)."""
    path = sqlite_path(uri)
    found = state(path) if path is not None else "complete"
    if found.startswith("broken:"):
        raise _broken(path, found)


def _broken(path: Path, found: str) -> TrackingError:
    why = found.split(":", 1)[1]
    return TrackingError(
        f"{path}: this MLflow store is damaged ({why}); move it aside (`mv {path} {path}.broken`) and "
        "run again to create a new one, or restore it from a backup"
    )


def _logging_quiet() -> None:
    import logging

    for name in ("mlflow.store", "alembic"):  # store creation chatter
        logging.getLogger(name).setLevel(logging.WARNING)


# --- which client writes a store ---------------------------------------------------------------


class Verified(NamedTuple):
    """MLflow releases ``first`` to ``last`` (inclusive) whose schema revision is ``revision``."""

    first: str
    last: str
    revision: str


# The (MLflow release, schema revision) pairs whose rows sqlite_client writes and reads. A pair is
# added once tests/test_sqlite_client.py passes with that MLflow installed (its differential tests
# run on whatever MLflow is installed, verified or not); a range's releases were each run.
VERIFIED = (
    Verified("3.17.0", "3.17.2", "dc11669786a5"),
)
VERIFIED_REVISIONS = frozenset(v.revision for v in VERIFIED)
STORE_WRITES_ENV = "CD4ML_NB_STORE_WRITES"  # "mlflow": every run and read through MlflowClient
STORE_WRITES = ("auto", "mlflow")


@functools.cache
def installed_head() -> str | None:
    """The newest schema revision of the installed MLflow, read once per process from its
    migration scripts (the package is located, not imported); None when they cannot be read."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "store" / "db_migrations" / "versions"
    revisions, parents = set(), set()
    try:
        for script in folder.glob("*.py"):
            text = script.read_text(encoding="utf-8", errors="replace")
            found = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
            down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.M)
            if found:
                revisions.add(found.group(1))
            if down:
                parents.update(re.findall(r"['\"](\w+)['\"]", down.group(1)))
    except OSError:
        return None
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


@functools.cache
def installed_version() -> str | None:
    """The installed MLflow's version, from its package metadata (``mlflow``, else
    ``mlflow-skinny``) without importing it; None when neither is installed."""
    for name in ("mlflow", "mlflow-skinny"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _release(version: str | None) -> tuple[int, ...] | None:
    """The numbers of a final release (``3.17.2``); None for a pre-, post-, dev or local version."""
    if not re.fullmatch(r"\d+(?:\.\d+)*", version or ""):
        return None
    numbers = [int(n) for n in version.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()  # 3.17 == 3.17.0
    return tuple(numbers)


def verified_revision(version: str | None = None) -> str | None:
    """The schema revision the light client writes and reads with MLflow ``version`` (default: the
    installed one, whose migration scripts must end at that revision too); None when that MLflow
    was not verified (:data:`VERIFIED`)."""
    release = _release(version if version is not None else installed_version())
    if release is None:
        return None
    for pair in VERIFIED:
        if _release(pair.first) <= release <= _release(pair.last):
            if version is None and installed_head() != pair.revision:
                return None  # the metadata names another MLflow than the package found on the path
            return pair.revision
    return None


def store_writes() -> str:
    """``auto`` or ``mlflow`` where no project's setting is at hand: the environment
    (:data:`STORE_WRITES_ENV`), else ``auto``; a word it does not know takes the safe path."""
    mode = os.environ.get(STORE_WRITES_ENV, "").strip() or "auto"
    return mode if mode in STORE_WRITES else "mlflow"
