"""Model performance assessment: compare branches, gate on regressions, promote models.

A branch's result for a notebook is its latest FINISHED run (or the best one, or the mean of its
``min_runs`` latest runs). Regressions are measured in the direction of each metric's goal:
for ``minimize`` a higher value is worse, for ``maximize`` a lower one.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from .exceptions import BadInput, Cd4mlError
from .project import Project

MINIMIZE_HINTS = ("loss", "error", "rmse", "mse", "mae", "mape", "rmsle", "nwrmsle", "logloss", "brier", "time")


class CannotEvaluate(Cd4mlError):
    """The gate has nothing to compare (no baseline run, metric missing): exit 2."""

    exit_code = 2
    http_status = 409


@dataclass(frozen=True)
class GateSpec:
    """One metric's rule: its goal and the regression allowed (absolute, or relative to the base)."""

    metric: str
    goal: str = ""  # minimize | maximize; empty: inferred from the name
    tolerance: float = 0.0
    relative: bool = False

    def describe(self) -> str:
        allowed = f"{self.tolerance * 100:.4g}%" if self.relative else f"{self.tolerance:.4g}"
        return f"{self.metric} ({self.goal}, max regression {allowed})"


def goal_of(metric: str, declared: str = "") -> str:
    if declared:
        if declared not in ("minimize", "maximize"):
            raise BadInput(f"goal {declared!r}: use minimize or maximize")
        return declared
    name = metric.lower()
    return "minimize" if any(h in re.split(r"[^a-z0-9]+", name) or name.endswith(h) for h in MINIMIZE_HINTS) \
        else "maximize"


def parse_tolerance(text: str) -> tuple[float, bool]:
    """``2%`` → (0.02, relative); ``0.05`` → (0.05, absolute)."""
    text = text.strip()
    try:
        if text.endswith("%"):
            value, relative = float(text[:-1]) / 100, True
        else:
            value, relative = float(text), False
    except ValueError:
        raise BadInput(f"--max-regression {text!r}: give a number (absolute) or a percentage like 2%") from None
    if value < 0:
        raise BadInput(f"--max-regression {text!r} must not be negative")
    return value, relative


@dataclass(frozen=True)
class Side:
    """What one branch (or a registered model) shows for one notebook."""

    label: str
    experiment: str
    run_ids: tuple[str, ...]
    metrics: dict[str, float]
    params: dict[str, str]
    experiment_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        return self.run_ids[0] if self.run_ids else None


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    goal: str
    base: float | None
    branch: float | None

    @property
    def delta(self) -> float | None:
        return None if self.base is None or self.branch is None else self.branch - self.base

    @property
    def relative(self) -> float | None:
        d = self.delta
        return None if d is None or not self.base else d / abs(self.base)

    @property
    def regression(self) -> float | None:
        """How much worse the branch is (positive: worse), in the metric's own units."""
        d = self.delta
        return None if d is None else (d if self.goal == "minimize" else -d)

    def to_json(self) -> dict:
        return {"metric": self.metric, "goal": self.goal, "base": self.base, "branch": self.branch,
                "delta": self.delta, "relative": self.relative}


@dataclass(frozen=True)
class NotebookComparison:
    notebook: str
    base: Side | None
    branch: Side | None
    best_base: Side | None
    best_branch: Side | None
    deltas: tuple[MetricDelta, ...]
    params_changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def schema_changed(self) -> list[str]:
        """Datasets whose schema differs between the compared runs."""
        if self.base is None or self.branch is None:
            return []
        return schema_changes(self.base.tags, self.branch.tags)

    def to_json(self) -> dict:
        def side(s: Side | None) -> dict | None:
            return None if s is None else {"label": s.label, "experiment": s.experiment, "run_ids": list(s.run_ids),
                                           "metrics": s.metrics, "params": s.params}

        return {"notebook": self.notebook, "base": side(self.base), "branch": side(self.branch),
                "best_base": side(self.best_base), "best_branch": side(self.best_branch),
                "deltas": [d.to_json() for d in self.deltas],
                "params_changed": {k: list(v) for k, v in self.params_changed.items()},
                "schema_changed": self.schema_changed}


@dataclass(frozen=True)
class Comparison:
    branch: str
    base: str
    runs: str  # latest | best
    notebooks: tuple[NotebookComparison, ...]

    def to_json(self) -> dict:
        return {"branch": self.branch, "base": self.base, "runs": self.runs,
                "notebooks": [n.to_json() for n in self.notebooks]}


@dataclass(frozen=True)
class GateCheck:
    spec: GateSpec
    notebook: str
    delta: MetricDelta
    base_runs: int
    branch_runs: int

    @property
    def allowed(self) -> float:
        base = abs(self.delta.base or 0.0)
        return self.spec.tolerance * base if self.spec.relative else self.spec.tolerance

    @property
    def passed(self) -> bool:
        return (self.delta.regression or 0.0) <= self.allowed + 1e-12

    def describe(self) -> str:
        d = self.delta
        rel = f" ({d.relative:+.2%})" if d.relative is not None else ""
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.notebook} {d.metric} ({d.goal}): base {d.base:.6g} -> branch {d.branch:.6g}, "
                f"delta {d.delta:+.6g}{rel}; allowed regression {self.allowed:.6g}"
                f" [{self.base_runs} vs {self.branch_runs} run(s)]")


@dataclass(frozen=True)
class GateResult:
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


# --- fetching runs ----------------------------------------------------------------------------


def _finished(c, experiment_id: str, limit: int = 1000) -> list:
    return list(c.search_runs([experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=limit, order_by=["attributes.start_time DESC"]))


def _by_notebook(runs: list) -> dict[str, list]:
    from . import tracking

    grouped: dict[str, list] = {}
    for run in runs:
        name = run.data.tags.get(tracking.NOTEBOOK) or "(interactive)"
        grouped.setdefault(name, []).append(run)
    return grouped


def _side(label: str, experiment: str, runs: list, metrics: list[str] | None, experiment_id: str | None) -> Side:
    names = metrics or sorted({m for r in runs for m in r.data.metrics})
    values = {}
    for name in names:
        found = [r.data.metrics[name] for r in runs if name in r.data.metrics]
        if found:
            values[name] = statistics.fmean(found)
    return Side(label, experiment, tuple(r.info.run_id for r in runs), values, dict(runs[0].data.params),
                experiment_id, dict(runs[0].data.tags))


def _best(runs: list, metric: str | None, goal: str) -> list:
    if not metric:
        return runs[:1]
    scored = [r for r in runs if metric in r.data.metrics]
    if not scored:
        return runs[:1]
    pick = min if goal == "minimize" else max
    return [pick(scored, key=lambda r: r.data.metrics[metric])]


def _experiment(c, name: str):
    found = c.get_experiment_by_name(name)
    return found.experiment_id if found is not None else None


def compare(project: Project, branch: str | None = None, base: str | None = None, metrics: list[str] | None = None,
            runs: str = "latest", min_runs: int = 1, goals: dict[str, str] | None = None,
            notebook: str | None = None) -> Comparison:
    """Each notebook's result on ``branch`` against ``base`` (experiments named after them)."""
    from . import tracking

    if runs not in ("latest", "best"):
        raise BadInput(f"--runs {runs!r}: use latest or best")
    goals = goals or {}
    base = base or project.base_branch
    branch_exp = tracking.branch_experiment(project, branch)
    branch = branch or branch_exp
    base_exp = tracking.branch_experiment(project, base)
    c = tracking.client(project)
    ids = {name: _experiment(c, name) for name in (branch_exp, base_exp)}
    grouped = {name: _by_notebook(_finished(c, eid)) if eid else {} for name, eid in ids.items()}
    names = sorted(set(grouped[branch_exp]) | set(grouped[base_exp]))
    if notebook:
        names = [n for n in names if n == notebook]
    result = []
    for name in names:
        b_runs, a_runs = grouped[branch_exp].get(name, []), grouped[base_exp].get(name, [])
        if metrics:
            common = list(metrics)
        elif b_runs and a_runs:  # default: the metrics both branches logged
            common = sorted(set(b_runs[0].data.metrics) & set(a_runs[0].data.metrics))
        else:
            common = sorted((b_runs or a_runs)[0].data.metrics)
        primary = common[0] if common else None
        goal = goal_of(primary, goals.get(primary, "")) if primary else "minimize"

        def pick(rs: list) -> list:
            return _best(rs, primary, goal) if runs == "best" else rs[:max(1, min_runs)]

        b_side = _side(branch, branch_exp, pick(b_runs), common, ids[branch_exp]) if b_runs else None
        a_side = _side(base, base_exp, pick(a_runs), common, ids[base_exp]) if a_runs else None
        best_b = _side(branch, branch_exp, _best(b_runs, primary, goal), common, ids[branch_exp]) if b_runs else None
        best_a = _side(base, base_exp, _best(a_runs, primary, goal), common, ids[base_exp]) if a_runs else None
        deltas = tuple(
            MetricDelta(m, goal_of(m, goals.get(m, "")), a_side.metrics.get(m) if a_side else None,
                        b_side.metrics.get(m) if b_side else None)
            for m in common
        )
        changed = {}
        if a_side and b_side:
            for key in sorted(set(a_side.params) | set(b_side.params)):
                if a_side.params.get(key) != b_side.params.get(key):
                    changed[key] = (a_side.params.get(key), b_side.params.get(key))
        result.append(NotebookComparison(name, a_side, b_side, best_a, best_b, deltas, changed))
    return Comparison(branch, base, runs, tuple(result))


# --- the gate ---------------------------------------------------------------------------------


def _model_baseline(project: Project, c, uri: str) -> tuple[str, Any]:
    """(label, run) of the model version a ``models:/NAME@ALIAS`` URI points to."""
    match = re.fullmatch(r"models:/([^@/]+)@([A-Za-z0-9_\-]+)", uri)
    if not match:
        raise BadInput(f"--against {uri!r}: use models:/NAME@ALIAS")
    name, alias = match.groups()
    try:
        version = c.get_model_version_by_alias(name, alias)
    except Exception:
        raise CannotEvaluate(f"no model version has alias {uri}; promote one first with "
                             f"`cd4ml-nb promote RUN_ID --model {name} --alias {alias}`") from None
    if not version.run_id:
        raise CannotEvaluate(f"{uri} (version {version.version}) has no source run to compare with")
    return f"{uri} (v{version.version})", c.get_run(version.run_id)


def gate(project: Project, specs: list[GateSpec], branch: str | None = None, base: str | None = None,
         against: str | None = None, runs: str = "latest", min_runs: int = 1, notebook: str | None = None,
         allow_schema_change: bool = False) -> GateResult:
    """Check every spec on every notebook the branch ran; CannotEvaluate says what is missing (or that
    a logged dataset's schema differs, unless ``allow_schema_change``)."""
    from . import tracking

    if not specs:
        raise BadInput("give at least one --metric")
    if min_runs < 1:
        raise BadInput("--min-runs must be at least 1")
    specs = [GateSpec(s.metric, goal_of(s.metric, s.goal), s.tolerance, s.relative) for s in specs]
    goals = {s.metric: s.goal for s in specs}
    metrics = [s.metric for s in specs]
    comparison = compare(project, branch, base, metrics, runs, min_runs, goals, notebook)
    branch_name = comparison.branch
    if against:
        c = tracking.client(project)
        label, model_run = _model_baseline(project, c, against)
    checks = []
    ran = [n for n in comparison.notebooks if n.branch is not None]
    if not ran:
        raise CannotEvaluate(f"branch {branch_name!r} has no FINISHED run"
                             f"{' of ' + notebook if notebook else ''}; run `cd4ml-nb run NOTEBOOK` on it first")
    for nb in ran:
        if len(nb.branch.run_ids) < min_runs:
            raise CannotEvaluate(f"{nb.notebook}: --min-runs {min_runs} needs {min_runs} FINISHED runs on "
                                 f"{branch_name!r}, it has {len(nb.branch.run_ids)}; run it again with other seeds")
        if against:
            base_side = Side(label, "", (model_run.info.run_id,), dict(model_run.data.metrics),
                             dict(model_run.data.params), tags=dict(model_run.data.tags))
        else:
            base_side = nb.base
            if base_side is None:
                raise CannotEvaluate(f"base branch {comparison.base!r} has no FINISHED run of {nb.notebook}; "
                                     f"run it there first (git checkout {comparison.base} && "
                                     f"cd4ml-nb run {nb.notebook})")
            if len(base_side.run_ids) < min_runs:
                raise CannotEvaluate(f"{nb.notebook}: --min-runs {min_runs} needs {min_runs} FINISHED runs on "
                                     f"{comparison.base!r}, it has {len(base_side.run_ids)}")
        changed = schema_changes(base_side.tags, nb.branch.tags)
        if changed and not allow_schema_change:
            raise CannotEvaluate(
                f"{nb.notebook}: the schema of dataset(s) {', '.join(changed)} differs between run "
                f"{base_side.run_id} and run {nb.branch.run_id}; see `cd4ml-nb diff {base_side.run_id} "
                f"{nb.branch.run_id}`, or pass --allow-schema-change")
        for spec in specs:
            for side, where in ((nb.branch, branch_name), (base_side, base_side.label)):
                if spec.metric not in side.metrics:
                    logged = ", ".join(sorted(side.metrics)) or "none"
                    raise CannotEvaluate(f"{nb.notebook}: metric {spec.metric!r} was not logged on {where} "
                                         f"(logged: {logged})")
            delta = MetricDelta(spec.metric, spec.goal, base_side.metrics[spec.metric], nb.branch.metrics[spec.metric])
            checks.append(GateCheck(spec, nb.notebook, delta, len(base_side.run_ids), len(nb.branch.run_ids)))
    return GateResult(tuple(checks))


def schema_changes(base_tags: dict[str, str], branch_tags: dict[str, str]) -> list[str]:
    """Datasets whose schema fingerprint (tag ``cd4ml.data.<name>.schema``) differs between two runs."""
    from .data import TAG_PREFIX

    def schemas(tags: dict[str, str]) -> dict[str, str]:
        return {k[len(TAG_PREFIX):-len(".schema")]: v for k, v in tags.items()
                if k.startswith(TAG_PREFIX) and k.endswith(".schema")}

    a, b = schemas(base_tags), schemas(branch_tags)
    return [name for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]


# --- the registry -----------------------------------------------------------------------------


def promote(project: Project, run_id: str, model: str, alias: str = "champion") -> tuple[str, str]:
    """Register the run's logged model as a new version of ``model`` and point ``alias`` at it.

    Returns (version, source). Refuses runs that are not FINISHED or logged no model.
    """
    from . import tracking

    c = tracking.client(project)
    try:
        run = c.get_run(run_id)
    except Exception:
        raise BadInput(f"no run {run_id!r} in {project.tracking_uri}") from None
    if run.info.status != "FINISHED":
        raise BadInput(f"run {run_id} is {run.info.status}, not FINISHED: only a finished run can be promoted")
    logged = c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    if not logged:
        raise BadInput(f"run {run_id} logged no model (call mlflow.<flavor>.log_model(...) in the notebook)")
    if len(logged) > 1:
        names = ", ".join(m.name for m in logged)
        raise BadInput(f"run {run_id} logged {len(logged)} models ({names}); promote supports one")
    # The artifact location, not `models:/<id>`: MLflow resolves that URI with the *global*
    # tracking URI (a TODO in its SQL registry store), which is not this project's store.
    source = logged[0].artifact_location
    try:
        c.get_registered_model(model)
    except Exception:
        c.create_registered_model(model)
    version = c.create_model_version(model, source=source, run_id=run_id, model_id=logged[0].model_id,
                                     tags={"cd4ml.git.branch": run.data.tags.get(tracking.GIT_BRANCH, "")})
    c.set_registered_model_alias(model, alias, version.version)
    return version.version, source
