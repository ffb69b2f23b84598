"""Configuration: one traitlets class for the server and the CLI.

Sources, lowest precedence first: trait defaults, ``[tool.cd4ml_nb]`` in the project's
``pyproject.toml`` (or Jupyter config ``c.Cd4mlConfig.*`` on the server), the environment
variables ``MLFLOW_TRACKING_URI`` and ``CD4ML_NB_STORE_WRITES``, then command-line flags.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from . import store
from .exceptions import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_FORMATS = "ipynb,py:percent"


class Cd4mlConfig(Configurable):
    """Settings of a cd4ml_nb project."""

    formats = Unicode(
        "",
        help="Jupytext pairing formats, e.g. 'ipynb,py:percent'. Empty: the formats of a "
        "jupytext.toml that applies to the notebook, else 'ipynb,py:percent'.",
    ).tag(config=True)
    tracking_uri = Unicode(
        "",
        help="MLflow tracking URI. Empty: the embedded SQLite store under state_dir.",
    ).tag(config=True)
    artifact_root = Unicode(
        "",
        help="Where a SQLite store keeps the artifacts of the experiments cd4ml-nb creates. Empty: "
        "beside the database (<name>-artifacts), or under state_dir when the database is in the project.",
    ).tag(config=True)
    experiment_template = Unicode(
        "{branch}",
        help="MLflow experiment name; fields {branch}, {project} (root folder name).",
    ).tag(config=True)
    base_branch = Unicode(
        "", help="Branch that experiment branches are compared against. Empty: main or master."
    ).tag(config=True)
    state_dir = Unicode(
        ".cd4ml", help="Folder (relative to the project root, git-ignored) for store and runs."
    ).tag(config=True)
    lab_runs_dir = Unicode(
        "cd4ml-runs",
        help="Folder (relative to the root, git-ignored by its own .gitignore) where jobs started from "
        "JupyterLab put executed notebooks, so that Lab can open them.",
    ).tag(config=True)
    max_diff_bytes = Int(
        5_000_000, help="Cap of the uncommitted.diff a run records (a closing line and a tag say when it is cut)."
    ).tag(config=True)
    html = Bool(True, help="Render the executed notebook to HTML and log it.").tag(config=True)
    cell_timeout = Float(0.0, help="Seconds a cell may run (0: no limit).").tag(config=True)
    kernel_start_timeout = Float(60.0, help="Seconds a kernel may take to start.").tag(config=True)
    iopub_timeout = Float(
        60.0, help="Seconds to wait, once a cell has replied, for the rest of its output (nbclient's "
        "4 s default fails finished cells on a loaded machine)."
    ).tag(config=True)
    kernel_name = Unicode(
        "", help="Kernel to run notebooks with. Empty: the notebook's own, else python3."
    ).tag(config=True)
    kernel_transport = Enum(
        ["auto", "tcp", "ipc"], "auto",
        help="How the runner talks to a kernel: 'tcp' (ports on 127.0.0.1), 'ipc' (Unix sockets in a private "
        "temporary folder) or 'auto': ipc for a Python interpreter running ipykernel itself, tcp for any other "
        "kernel command (a docker, srun or conda run wrapper may start the kernel where the socket folder is not).",
    ).tag(config=True)
    max_jobs = Int(2, help="Notebook jobs the JupyterLab extension runs at once; more wait queued.").tag(
        config=True
    )
    max_request_bytes = Int(
        1_000_000, help="Largest request body the JupyterLab extension accepts (413 above)."
    ).tag(config=True)
    max_parameter_bytes = Int(
        100_000, help="Largest parameter value (its JSON text) a run or job accepts."
    ).tag(config=True)
    job_retention_count = Int(
        50, help="Ended JupyterLab jobs kept (with their executed notebooks); older ones are pruned "
        "(`cd4ml-nb gc` too). The MLflow runs and their artifacts stay."
    ).tag(config=True)
    job_retention_days = Float(
        30.0, help="Ended JupyterLab jobs older than this many days are pruned (0: no age limit)."
    ).tag(config=True)
    metric_goals = Dict(
        value_trait=Unicode(), help="minimize or maximize per metric name (default: inferred from the name)."
    ).tag(config=True)
    ci_notebooks = List(Unicode(), help="Notebooks `cd4ml-nb ci` smoke-runs, relative to the root.").tag(config=True)
    ci_params = Unicode("", help="YAML/JSON parameters file for the smoke runs of `cd4ml-nb ci`.").tag(config=True)
    ci_nbval = Bool(False, help="`cd4ml-nb ci` also runs nbval (--nbval-lax) on the notebooks.").tag(config=True)
    ci_gate = List(
        Dict(), help="Gate rules of `cd4ml-nb ci`: tables {metric, goal, max_regression}."
    ).tag(config=True)
    ci_report = Unicode(
        "", help="Where `cd4ml-nb ci` writes the review report, relative to the root (default: ci-report.md in "
        "the git-ignored state folder, so CI leaves the work tree clean)."
    ).tag(config=True)
    test_rtol = Float(
        1e-5, help="`cd4ml-nb test`: relative tolerance of metrics and of the numbers in cells tagged "
        "'regression' (numpy's isclose default)."
    ).tag(config=True)
    test_atol = Float(1e-8, help="`cd4ml-nb test`: absolute tolerance (numpy's isclose default).").tag(config=True)
    test_tolerances = Dict(
        value_trait=Dict(), help="`cd4ml-nb test`: per-metric tolerances, e.g. { nwrmsle = { rtol = 0.01 } }."
    ).tag(config=True)
    test_seed_parameter = Unicode(
        "seed", help="`cd4ml-nb test --seeds K`: the notebook parameter that takes the seed."
    ).tag(config=True)
    test_baselines_dir = Unicode(
        ".cd4ml-baselines", help="`cd4ml-nb test --update`: folder (relative to the root, committed) of baseline files."
    ).tag(config=True)
    health_timeout = Float(10.0, help="Seconds to wait for an http(s) tracking server's health check.").tag(
        config=True
    )
    heartbeat_interval = Float(
        15.0, min=0.1, help="Seconds between two updates of the `cd4ml.heartbeat` tag of a run on a tracking server."
    ).tag(config=True)
    heartbeat_timeout = Float(
        300.0, min=0.5, help="A RUNNING run whose `cd4ml.heartbeat` is older than this many seconds is marked FAILED "
        "(orphaned) by `cd4ml-nb runs` and the Lab panel, whatever host ran it. Keep it well above "
        "heartbeat_interval and the clock skew between hosts."
    ).tag(config=True)
    mlflow_ui_url = Unicode(
        "", help="URL of an MLflow UI showing the store (for links): http:// or https:// only. Empty: derived "
        "when http(s)."
    ).tag(config=True)
    store_writes = Enum(
        ["auto", "mlflow"], "auto",
        help="How runs and the read-only commands reach a local SQLite store: 'auto' writes and reads MLflow's "
        "rows directly, without importing MLflow, when the installed MLflow and the store's schema are a pair "
        "cd4ml_nb was verified against (else through MlflowClient); 'mlflow' always through MlflowClient. "
        "The environment variable CD4ML_NB_STORE_WRITES overrides pyproject.toml.",
    ).tag(config=True)
    schedules = Dict(
        value_trait=Dict(), help="Scheduled retraining: tables [tool.cd4ml_nb.schedules.NAME] with notebook (or "
        "pipeline), branch, cron, and optional timezone, parameters, notify_url, catch_up (checked by schedules.py)."
    ).tag(config=True)
    schedule_check_seconds = Float(
        30.0, min=0.0, help="Seconds between two looks for due schedules by the Jupyter server extension (0: the "
        "server fires no schedules; `cd4ml-nb schedule run-due` still does)."
    ).tag(config=True)

    @validate("mlflow_ui_url")
    def _web_url_only(self, proposal: Any) -> str:
        """An http(s) URL with a host, or empty: the Lab opens it, so no ``javascript:`` and such."""
        value = proposal["value"]
        if value and not is_web_url(value):
            raise TraitError("must be an http:// or https:// URL with a host (or empty)")
        return value


def is_web_url(text: str) -> bool:
    """``text`` is an absolute http(s) URL with a host, and nothing a browser would read otherwise
    (no whitespace or control characters)."""
    from urllib.parse import urlsplit

    if not text.isprintable() or any(c.isspace() for c in text) or "\\" in text:
        return False
    try:
        parts = urlsplit(text)
        host, _ = parts.hostname, parts.port
    except ValueError:  # a malformed port or IPv6 literal
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def config_keys() -> list[str]:
    """Names accepted in ``[tool.cd4ml_nb]``."""
    return sorted(Cd4mlConfig.class_trait_names(config=True))


def read_pyproject(root: Path) -> dict[str, Any]:
    """The ``[tool.cd4ml_nb]`` table of ``root/pyproject.toml`` (empty when absent)."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    table = data.get("tool", {}).get("cd4ml_nb", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.cd4ml_nb] must be a table")
    return table


def load_config(
    root: Path,
    *,
    tracking_uri: str | None = None,
    parent: Configurable | None = None,
    **overrides: Any,
) -> Cd4mlConfig:
    """Build the configuration of the project at ``root``.

    ``parent`` (a Jupyter ServerApp) contributes ``c.Cd4mlConfig`` settings; ``tracking_uri`` and
    ``overrides`` are command-line values that win over everything else.
    """
    table = read_pyproject(root)
    allowed = set(config_keys())
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{root / 'pyproject.toml'}: unknown key(s) in [tool.cd4ml_nb]: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    config = Cd4mlConfig(parent=parent)
    pyproject = f"{root / 'pyproject.toml'}: [tool.cd4ml_nb]"
    values = {key: (value, pyproject) for key, value in table.items()}
    if os.environ.get("MLFLOW_TRACKING_URI"):
        values["tracking_uri"] = (os.environ["MLFLOW_TRACKING_URI"], "environment MLFLOW_TRACKING_URI")
    if os.environ.get(store.STORE_WRITES_ENV):
        values["store_writes"] = (os.environ[store.STORE_WRITES_ENV], f"environment {store.STORE_WRITES_ENV}")
    if tracking_uri:
        values["tracking_uri"] = (tracking_uri, "option --tracking-uri")
    values.update({k: (v, f"option {k}") for k, v in overrides.items() if v is not None})
    for key, (value, source) in values.items():
        try:
            setattr(config, key, value)
        except TraitError as e:
            raise ConfigError(f"{source} {key} = {value!r}: {str(e).splitlines()[0]}") from None
    if config.tracking_uri:  # a relative sqlite path: from the project root in pyproject, else the cwd
        base = root if values.get("tracking_uri", ("", pyproject))[1] == pyproject else Path.cwd()
        config.tracking_uri = store.absolute_uri(config.tracking_uri, base)
    return config
