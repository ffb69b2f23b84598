"""A throwaway PostgreSQL cluster for the team-mode tests: Debian's ``postgresql`` binaries, a
data folder under the temporary directory, 127.0.0.1 on a free port, password authentication.

One cluster per test process, started on first use and stopped at exit. ``CD4ML_NB_TEST_POSTGRES``
(a ``postgresql://user:password@host:port`` URI) names an existing server instead. Each caller asks
for a database by name and gets it created empty if it does not exist yet.
"""
from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

USER = "cd4ml"
_lock = threading.Lock()
_base: str | None = None
_started: tuple = ()  # (bin folder, data folder, folder, port) of the cluster this process started


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def available() -> bool:
    """A server is named, or one can be started here."""
    return bool(os.environ.get("CD4ML_NB_TEST_POSTGRES")) or bin_dir() is not None


def base_uri() -> str:
    """``postgresql://user:password@127.0.0.1:port`` of the cluster (started on first call)."""
    global _base
    with _lock:
        if _base is None:
            _base = os.environ.get("CD4ML_NB_TEST_POSTGRES") or _start()
        return _base


def database(name: str) -> str:
    """The URI of database ``name`` in the cluster, created empty if it does not exist."""
    base = base_uri()
    exists = _psql(base + "/postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
    if exists.strip() != "1":
        _psql(base + "/postgres", f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def _psql(uri: str, sql: str) -> str:
    psql = (bin_dir() / "psql") if bin_dir() else Path(shutil.which("psql") or "psql")
    parts = urlsplit(uri)
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    plain = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"
    done = subprocess.run([str(psql), "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, plain], env=env,
                          capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
    return done.stdout


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` system user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start() -> str:
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="cd4ml-pg-"))
    password = secrets.token_hex(12)
    (folder / "pw").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    data, port = folder / "data", _free_port()
    subprocess.run(_as_owner([str(binaries / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(folder / "pw"),
                              "-A", "scram-sha-256", "--no-sync"]), check=True, capture_output=True, timeout=120)
    _pg_start(binaries, data, folder, port)
    global _started
    _started = (binaries, data, folder, port)
    atexit.register(_stop, binaries, data, folder)
    return f"postgresql://{USER}:{password}@127.0.0.1:{port}"


def stop() -> None:
    """Stop the cluster this process started (an outage begins); :func:`start` ends it."""
    binaries, data, _, _ = _started
    subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                   check=True, capture_output=True, timeout=120)


def start() -> None:
    """Start again the cluster :func:`stop` stopped, on the same port."""
    binaries, data, folder, port = _started
    _pg_start(binaries, data, folder, port)


def _pg_start(binaries: Path, data: Path, folder: Path, port: int) -> None:
    subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "120",
                              "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off", "start"]),
                   check=True, capture_output=True, timeout=180)


def _stop(binaries: Path, data: Path, folder: Path) -> None:
    subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                   capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)
