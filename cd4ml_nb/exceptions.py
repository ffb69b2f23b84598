"""The one exception hierarchy of cd4ml_nb.

Every error a user can cause or meet derives from :class:`Cd4mlError`. Adapters map the class
to an exit code (``cli.py``) or an HTTP status (``routes.py``) in one place each.
"""
from __future__ import annotations


class Cd4mlError(Exception):
    """Base class: a message meant for the user, one line where possible."""

    exit_code = 1
    http_status = 500


class BadInput(Cd4mlError):
    """The user's input cannot be used (missing file, not a notebook, bad option)."""

    exit_code = 2
    http_status = 400


class NotFound(BadInput):
    """A file or run that was named does not exist."""

    http_status = 404


class Forbidden(BadInput):
    """A path leaves the project root or is hidden."""

    http_status = 403


class NotebookError(BadInput):
    """A notebook file cannot be read or parsed."""

    http_status = 422


class ParameterError(BadInput):
    """Requested parameter values do not fit the notebook's parameter contract."""


class ConfigError(BadInput):
    """Configuration (``[tool.cd4ml_nb]``, flags, environment) is invalid."""


class PairConflict(Cd4mlError):
    """Both sides of a pair changed since the last sync; nothing was written."""

    exit_code = 1
    http_status = 409

    def __init__(self, message: str, diff: str = "") -> None:
        super().__init__(message)
        self.diff = diff


class OutOfSync(BadInput):
    """A run was asked of a pair whose sides differ: nothing ran, nothing was recorded."""

    http_status = 409


class Conflict(Cd4mlError):
    """The request does not fit the current state (e.g. cancelling a job that already ended)."""

    exit_code = 1
    http_status = 409


class AccessDenied(BadInput):
    """A tracking server refused the request: no credentials, wrong ones, or no permission."""

    http_status = 403


class TooLarge(BadInput):
    """A request body or value is over its configured size limit."""

    http_status = 413


class TrackingError(Cd4mlError):
    """The MLflow tracking store cannot be reached or used."""

    exit_code = 1
    http_status = 503


class NoStore(TrackingError):
    """A SQLite store that does not exist yet, met by a caller that only reads (and creates nothing)."""

    http_status = 404


class Interrupted(Cd4mlError):
    """The user interrupted the work (Ctrl-C, SIGTERM)."""

    exit_code = 130
    http_status = 499
