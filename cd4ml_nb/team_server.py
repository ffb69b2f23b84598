"""The team tracking server (``cd4ml-nb server``) and the credentials its clients bring.

Server side, :func:`prepare` turns the command's options into the ``mlflow server`` command line,
its environment and the banner, checking everything it can before anything starts:

- A host that is not loopback needs ``--auth`` (MLflow's basic-auth app) or an explicit
  ``--insecure``: an open server lets anyone who reaches the port edit and delete experiments.
- The backend store URI goes to MLflow in ``MLFLOW_BACKEND_STORE_URI`` (its environment, never its
  command line) and is shown with the password masked. ``postgresql://`` (and ``postgres://``) is
  handed to SQLAlchemy as ``postgresql+psycopg://`` — psycopg 3, the ``postgres`` extra — whatever
  SQLAlchemy's default driver is (psycopg2 before 2.1); a URI naming its driver
  (``postgresql+psycopg2://``) is kept as written. A PostgreSQL database is connected to once, with
  a 5 s timeout, before MLflow starts: a wrong password, a missing database or an unreachable host
  is one line and exit 2.
- With ``--auth`` the auth app's files live in ``.cd4ml/server/`` (0700), each 0600:
  ``basic_auth.ini`` (named by ``MLFLOW_AUTH_CONFIG_PATH``), its user database ``basic_auth.db``,
  ``flask-secret-key`` (``MLFLOW_FLASK_SERVER_SECRET_KEY``, generated once and reused) and, when the
  admin's password was generated, ``admin.env``. The admin is ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD`` when both are set; MLflow's old default ``password1234`` is refused.
- MLflow's job runner (Huey consumers for GenAI jobs, ~1.4 GB) is off unless
  ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set: team mode never submits jobs.

Client side, :func:`check_access` is the runner's preflight against an http(s) tracking URI (one
authenticated request with MLflow's own credential handling, before any kernel or run), and
:func:`access_denied` names a 401/403 met anywhere else in one line.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from .exceptions import AccessDenied, ConfigError
from .files import write_atomic
from .processes import stop_tree

CONNECT_TIMEOUT = 5  # seconds for the database check before MLflow starts
STOP_TIMEOUT = 20.0  # seconds for MLflow's workers to end after SIGTERM
ROOT_GRACE = 0.5  # seconds for `mlflow server` itself once its workers have ended
CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
LEGACY_ADMIN_PASSWORD = "password1234"  # basic_auth.ini's default before MLflow 3.12: never used
MIN_PASSWORD = 12  # MLflow's auth app refuses shorter passwords
AUTH_INI, AUTH_DB, SECRET_KEY, ADMIN_ENV = "basic_auth.ini", "basic_auth.db", "flask-secret-key", "admin.env"
# Variables the server sets for MLflow itself; the caller's values must not leak through.
SERVER_ONLY = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_URI")


@dataclass(frozen=True)
class ServerOptions:
    """What ``cd4ml-nb server`` was asked for."""

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    backend_store_uri: str | None = None
    artifacts: str | None = None
    auth: bool = False
    insecure: bool = False


@dataclass(frozen=True)
class Launch:
    """An ``mlflow server`` ready to start: command line (no secret on it), environment, the
    process's umask (None: inherited) and the lines to print once it is starting."""

    command: list[str]
    env: dict[str, str]
    umask: int | None
    banner: list[str] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    """``host`` only listens to this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open(options: ServerOptions) -> None:
    """ConfigError (exit 2) for a host that is not loopback with neither --auth nor --insecure."""
    if not is_loopback(options.host) and not options.auth and not options.insecure:
        raise ConfigError(
            f"--host {options.host} would let anyone who reaches port {options.port} create, edit and delete "
            "experiments: add --auth (colleagues then sign in with MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD), or --insecure on a network you trust")


def prepare(options: ServerOptions, folder: Path, environ: Mapping[str, str]) -> Launch:
    """Check and build the team server in ``folder`` (``.cd4ml/server``), starting nothing.

    Raises ConfigError (exit 2) for an open non-loopback host, an unusable database or admin
    credentials MLflow would refuse.
    """
    from . import store

    refuse_open(options)
    backend = database_uri(options.backend_store_uri or environ.get("MLFLOW_BACKEND_STORE_URI")
                           or store.uri_of(folder / "mlflow.db"))
    if store.is_sqlite(backend):  # born complete before MLflow's workers open it
        backend = store.absolute_uri(backend, Path.cwd())
        store.ensure_sqlite(backend, "mlflow-artifacts:/")
    elif backend.startswith("postgresql"):
        check_database(backend)
    artifacts = Path(options.artifacts or folder / "artifacts").resolve()
    command = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", str(artifacts),
               "--serve-artifacts", "--host", options.host, "--port", str(options.port),
               "--workers", str(options.workers)]
    env = {k: v for k, v in environ.items() if k not in SERVER_ONLY}
    env["MLFLOW_BACKEND_STORE_URI"] = backend
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if not is_loopback(options.host) and "MLFLOW_SERVER_ALLOWED_HOSTS" not in environ:
        env.update(allowed_hosts())
    uri = f"http://{shown_host(options.host)}:{options.port}"
    banner = [f"MLflow tracking server: backend {masked(backend)}, artifacts {artifacts}",
              f"use it with: export MLFLOW_TRACKING_URI={uri}   (or --tracking-uri {uri}); Ctrl-C stops it"]
    umask = None
    if options.auth:
        command += ["--app-name", "basic-auth"]
        env.update(auth_environment(folder, environ, banner))
        umask = 0o077  # whatever the server writes (logs, stores, artifacts) stays its own
    elif not is_loopback(options.host):
        banner.append(f"warning: no authentication (--insecure): anyone who reaches port {options.port} "
                      "can edit and delete experiments")
    return Launch(command, env, umask, banner)


def allowed_hosts() -> dict[str, str]:
    """MLflow's ``Host`` header check (3.x: loopback and private addresses only) extended by this
    machine's names, the URL colleagues are told to use; nothing for an MLflow without the check."""
    try:
        from mlflow.server.security_utils import get_default_allowed_hosts
    except ImportError:
        return {}
    names = sorted({name for name in (socket.gethostname(), socket.getfqdn()) if name})
    return {"MLFLOW_SERVER_ALLOWED_HOSTS": ",".join([*get_default_allowed_hosts(),
                                                     *(p for n in names for p in (n, f"{n}:*"))])}


def shown_host(host: str) -> str:
    """The host name colleagues use for a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def masked(uri: str) -> str:
    """``uri`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def database_uri(uri: str) -> str:
    """The URI SQLAlchemy opens: ``postgresql://``/``postgres://`` with psycopg 3 named as its driver."""
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return uri


def check_database(uri: str, timeout: int = CONNECT_TIMEOUT) -> None:
    """Connect to the database once (``timeout`` seconds at most); ConfigError in one line if that
    fails (the password never in it)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    shown = masked(uri)
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": timeout})
    except ImportError as e:
        raise ConfigError(f"{shown}: no database driver ({e.name or e}): "
                          'pip install "cd4ml_nb[postgres]" (psycopg 3) and write postgresql://…') from None
    except sqlalchemy.exc.ArgumentError as e:
        raise ConfigError(f"{shown}: not a database URI ({e})") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as e:
        raise ConfigError(f"the database {shown} cannot be used: {_reason(e.orig, uri)}") from None
    finally:
        engine.dispose()


def _reason(error: BaseException | None, uri: str) -> str:
    text = " ".join(str(error or "").split())
    text = re.sub(r"^connection failed: ", "", text)
    password = urlsplit(uri).password
    return text.replace(password, "***") if password and len(password) >= 8 else text  # libpq never says it


def auth_environment(folder: Path, environ: Mapping[str, str], banner: list[str]) -> dict[str, str]:
    """Write the auth app's private files in ``folder`` and return the variables that point MLflow
    at them; lines for the operator are added to ``banner``."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise ConfigError('--auth runs MLflow\'s basic-auth app, which needs Flask-WTF: pip install "mlflow[auth]"')
    folder.chmod(0o700)
    user, password, generated = admin_credentials(folder, environ)
    database = folder / AUTH_DB
    if database.exists():
        database.chmod(0o600)
    else:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # SQLite takes an empty file
    write_atomic(folder / AUTH_INI, "\n".join([
        "# cd4ml-nb server --auth: MLflow's basic-auth app (written at every start; keep private)",
        "[mlflow]",
        "default_permission = EDIT",  # every signed-in colleague logs to every branch's experiment
        f"database_uri = sqlite:///{database}",
        f"admin_username = {_ini_value(user)}",
        f"admin_password = {_ini_value(password)}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "",
    ]), private=True)
    banner.append(f"sign-in required (MLflow basic auth, users in {database}); clients export {CREDENTIALS}")
    if generated:
        banner.append(f"admin '{user}': password generated in {folder / ADMIN_ENV} (0600; `source` it)")
    else:
        banner.append(f"admin '{user}': the password in MLFLOW_TRACKING_PASSWORD (when {AUTH_DB} is new)")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(folder / AUTH_INI),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key(folder / SECRET_KEY)}


def admin_credentials(folder: Path, environ: Mapping[str, str]) -> tuple[str, str, bool]:
    """(user, password, generated): the caller's MLflow credentials when both are set, else the
    ones generated on an earlier start (``admin.env``), else new ones written there (0600)."""
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user or password:
        if not (user and password):
            raise ConfigError(f"set both {CREDENTIALS} for the admin, or neither (a password is then generated)")
        _check_password(password)
        return user, password, False
    path = folder / ADMIN_ENV
    if path.exists():
        found = dict(re.findall(r"^export (MLFLOW_TRACKING_\w+)=(\S+)$", path.read_text(encoding="utf-8"), re.M))
        if found.get("MLFLOW_TRACKING_USERNAME") and found.get("MLFLOW_TRACKING_PASSWORD"):
            path.chmod(0o600)
            return found["MLFLOW_TRACKING_USERNAME"], found["MLFLOW_TRACKING_PASSWORD"], True
    user, password = "admin", secrets.token_urlsafe(24)
    write_atomic(path, "# the admin of `cd4ml-nb server --auth` (generated; keep private)\n"
                 f"export MLFLOW_TRACKING_USERNAME={user}\nexport MLFLOW_TRACKING_PASSWORD={password}\n", private=True)
    return user, password, True


def _check_password(password: str) -> None:
    if password == LEGACY_ADMIN_PASSWORD:
        raise ConfigError("MLFLOW_TRACKING_PASSWORD is MLflow's old default admin password, known to everyone: "
                          "choose another")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"MLFLOW_TRACKING_PASSWORD is too short for MLflow's auth app "
                          f"(at least {MIN_PASSWORD} characters)")
    if password != password.strip() or "\n" in password:
        raise ConfigError("MLFLOW_TRACKING_PASSWORD starts or ends with white space: choose another")


def _ini_value(text: str) -> str:
    return text.replace("%", "%%")  # configparser's interpolation


def secret_key(path: Path) -> str:
    """The Flask secret key kept in ``path`` (0600): generated on first use, then reused."""
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if key:
            path.chmod(0o600)
            return key
    key = secrets.token_hex(32)
    write_atomic(path, key + "\n", private=True)
    return key


def stop_server(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """End the ``mlflow server`` process ``pid`` and its workers promptly: SIGTERM to all, the
    workers given ``timeout`` to finish their requests (then SIGKILL); the ``mlflow server``
    command itself only waits for them, and its interpreter's teardown (seconds of CPU after
    MLflow's imports) is cut short once they are gone."""
    stop_tree(pid, timeout, root_grace=ROOT_GRACE)


def check_access(uri: str, timeout: float) -> None:
    """Before a run against an http(s) tracking URI: one request with the credentials every MLflow
    client reads (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, …);
    AccessDenied (exit 2) when the server refuses them."""
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "GET",
                                max_retries=0, timeout=timeout, params={"max_results": 1})
    except MlflowException as e:
        from .exceptions import TrackingError

        raise TrackingError(f"MLflow tracking server {uri}: {str(e.message).splitlines()[0]}") from None
    if response.status_code in (401, 403):
        raise refusal(uri, response.status_code)


def refusal(uri: str | None, status: int) -> AccessDenied:
    """The one-line error for a tracking server that answered ``status`` (401 or 403)."""
    server = f"MLflow tracking server {uri}" if uri else "the MLflow tracking server"
    if status == 403:
        return AccessDenied(f"{server}: the user in MLFLOW_TRACKING_USERNAME may not do this (HTTP 403): "
                            "ask its admin for permission")
    if not (os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("MLFLOW_TRACKING_TOKEN")):
        return AccessDenied(f"{server} requires sign-in: export {CREDENTIALS} (HTTP 401)")
    return AccessDenied(f"{server} refused the credentials in {CREDENTIALS} (HTTP 401)")


def access_denied(error: BaseException) -> AccessDenied | None:
    """An MLflow 401/403 (``UNAUTHENTICATED``/``PERMISSION_DENIED``) in ``error`` or what caused it,
    as one line; None for anything else. Never imports MLflow."""
    exceptions = sys.modules.get("mlflow.exceptions")
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, AccessDenied):
            return error
        if exceptions is not None and isinstance(error, exceptions.MlflowException):
            status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}.get(error.error_code)
            if status:
                return refusal(os.environ.get("MLFLOW_TRACKING_URI"), status)
        error = error.__cause__ or error.__context__
    return None
