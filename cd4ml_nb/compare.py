"""Model performance assessment: compare branches, gate on regressions, promote models.

A branch's result for a notebook is its latest FINISHED run of one kind (``run`` unless asked; see
:mod:`.history`), or the best one, or the mean of its ``min_runs`` latest runs. Each notebook (one
per pair, whichever side ran) is compared on its own; parameters that differ between the compared
runs are flagged.
Regressions are measured in the direction of each metric's goal: for ``minimize`` a higher value
is worse, for ``maximize`` a lower one.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import history, pairing
from .exceptions import BadInput, Cd4mlError, NoStore
from .history import Selection
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
    logged: tuple[str, ...] = ()  # every metric its runs logged, compared or not

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
    schemas_changed: tuple[str, ...] = ()

    @property
    def parameters_differ(self) -> list[str]:
        """Parameters whose values differ between the compared base and branch runs."""
        return sorted(self.params_changed)

    @property
    def schema_changed(self) -> list[str]:
        """Datasets whose logical schema differs between the compared runs."""
        return list(self.schemas_changed)

    def to_json(self) -> dict:
        def side(s: Side | None) -> dict | None:
            return None if s is None else {"label": s.label, "experiment": s.experiment, "run_ids": list(s.run_ids),
                                           "metrics": s.metrics, "params": s.params}

        return {"notebook": self.notebook, "base": side(self.base), "branch": side(self.branch),
                "best_base": side(self.best_base), "best_branch": side(self.best_branch),
                "deltas": [d.to_json() for d in self.deltas],
                "params_changed": {k: list(v) for k, v in self.params_changed.items()},
                "parameters_differ": self.parameters_differ, "schema_changed": self.schema_changed}


@dataclass(frozen=True)
class Comparison:
    branch: str
    base: str
    runs: str  # latest | best
    notebooks: tuple[NotebookComparison, ...]
    kind: str = history.RUN  # the kind of runs compared
    step: str | None = None  # the pipeline step compared (kind step)

    def to_json(self) -> dict:
        return {"branch": self.branch, "base": self.base, "runs": self.runs, "kind": self.kind, "step": self.step,
                "notebooks": [n.to_json() for n in self.notebooks]}


@dataclass(frozen=True)
class GateCheck:
    spec: GateSpec
    notebook: str
    delta: MetricDelta
    base_runs: int
    branch_runs: int
    parameters_differ: tuple[str, ...] = ()

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
        differ = f"; parameters differ: {', '.join(self.parameters_differ)}" if self.parameters_differ else ""
        return (f"{verdict} {self.notebook} {d.metric} ({d.goal}): base {d.base:.6g} -> branch {d.branch:.6g}, "
                f"delta {d.delta:+.6g}{rel}; allowed regression {self.allowed:.6g}"
                f" [{self.base_runs} vs {self.branch_runs} run(s){differ}]")


@dataclass(frozen=True)
class Skipped:
    """A notebook (or one metric of it) the gate did not check, and why."""

    notebook: str
    reason: str
    metric: str = ""  # empty: the whole notebook

    def describe(self) -> str:
        return f"SKIP {self.notebook}: {self.reason}"


def no_base(base: str, notebook: str, kind: str = history.RUN) -> str:
    """What to do about a notebook the base branch never ran (as runs of ``kind``)."""
    how = {history.RUN: f"`cd4ml-nb run {notebook}`", history.CI: "`cd4ml-nb ci`",
           history.TEST: f"`cd4ml-nb test {notebook}`", history.STEP: "`cd4ml-nb pipeline run`"}.get(kind, f"a {kind} of {notebook}")
    of = "" if kind == history.RUN else f" of kind {kind!r}"
    return f"no base: run it on {base} first: {how} (base branch {base!r} has no FINISHED run{of} of {notebook})"


@dataclass(frozen=True)
class GateResult:
    checks: tuple[GateCheck, ...]
    skipped: tuple[Skipped, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


# --- fetching runs ----------------------------------------------------------------------------


def finished_runs(c, experiment_id: str, limit: int = 1000) -> list:
    """An experiment's FINISHED runs, newest first."""
    return list(c.search_runs([experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=limit, order_by=["attributes.start_time DESC"]))


def _side(label: str, experiment: str, runs: list, metrics: list[str] | None, experiment_id: str | None) -> Side:
    names = metrics or sorted({m for r in runs for m in r.data.metrics})
    values = {}
    for name in names:
        found = [r.data.metrics[name] for r in runs if name in r.data.metrics]
        if found:
            values[name] = statistics.fmean(found)
    return Side(label, experiment, tuple(r.info.run_id for r in runs), values, dict(runs[0].data.params),
                experiment_id, dict(runs[0].data.tags), tuple(sorted({m for r in runs for m in r.data.metrics})))


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


def notebook_id(project: Project, path: str) -> str:
    """The notebook ``path`` names (either side of a pair, relative to the project root or absolute)."""
    from .notebooks import NOTEBOOK_SUFFIXES

    real = project.confine(path, allow_hidden=True)
    if real.suffix not in NOTEBOOK_SUFFIXES:
        raise BadInput(f"--notebook {project.relative(real)}: not a notebook (give the .ipynb or its paired .py)")
    return pairing.notebook_id(project, real)


def _named_run(c, select: Selection, names: pairing.Names) -> tuple[str, str, Any]:
    """(experiment, notebook, run) of the run a selection names; BadInput when it has no notebook."""
    run = c.get_run(select.run_id)
    notebook = names.of(run)
    if not notebook:
        raise BadInput(f"run {select.run_id} has no {history.NOTEBOOK} tag: it cannot be compared with a branch")
    return c.get_experiment(run.info.experiment_id).name, notebook, run


def compare(project: Project, branch: str | None = None, base: str | None = None, metrics: list[str] | None = None,
            goals: dict[str, str] | None = None, notebooks: Sequence[str] = (),
            select: Selection = Selection()) -> Comparison:
    """Each notebook's result on ``branch`` against ``base`` (experiments named after them), from
    the runs ``select`` picks on each side; ``notebooks`` (paths, either side of a pair) selects
    some. With ``select.run_id`` the branch side is that run, on the notebook it ran."""
    from . import tracking

    goals = goals or {}
    base = base or project.base_branch
    try:
        c = tracking.read_client(project)
    except NoStore:  # nothing ran yet: both sides are empty
        return Comparison(branch or tracking.branch_experiment(project, branch), base, select.runs, (), select.kind,
                          select.step)
    names = pairing.Names(project)
    wanted = [notebook_id(project, text) for text in notebooks]
    if select.run_id is not None:
        branch_exp, notebook, named = _named_run(c, select, names)
        branch, wanted = named.data.tags.get(tracking.GIT_BRANCH) or branch_exp, [notebook]
    else:
        branch_exp = tracking.branch_experiment(project, branch)
        branch = branch or branch_exp
    base_exp = tracking.branch_experiment(project, base)
    ids = {name: _experiment(c, name) for name in (branch_exp, base_exp)}
    b_grouped = history.by_notebook(select.keep(finished_runs(c, ids[branch_exp])) if ids[branch_exp] else [], names.of)
    if select.run_id is not None:
        b_grouped = {notebook: [named]}
    a_grouped = history.by_notebook(select.keep(finished_runs(c, ids[base_exp]), base=True) if ids[base_exp] else [],
                                    names.of)
    result = []
    for name in list(dict.fromkeys(wanted)) or sorted(set(b_grouped) | set(a_grouped)):
        b_runs, a_runs = b_grouped.get(name, []), a_grouped.get(name, [])
        if metrics:
            common = list(metrics)
        elif b_runs and a_runs:  # default: the metrics both branches logged
            common = sorted(set(b_runs[0].data.metrics) & set(a_runs[0].data.metrics))
        else:
            common = sorted((b_runs or a_runs)[0].data.metrics) if b_runs or a_runs else []
        primary = common[0] if common else None
        goal = goal_of(primary, goals.get(primary, "")) if primary else "minimize"

        def pick(rs: list) -> list:
            return _best(rs, primary, goal) if select.runs == "best" else rs[:select.min_runs]

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
            for key in history.parameters_differ(a_side.params, b_side.params):
                changed[key] = (a_side.params.get(key), b_side.params.get(key))
        schemas = tuple(schema_changes(c, a_side, b_side)) if a_side and b_side else ()
        result.append(NotebookComparison(name, a_side, b_side, best_a, best_b, deltas, changed, schemas))
    return Comparison(branch, base, select.runs, tuple(result), select.kind, select.step)


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


def _model_side(label: str, run) -> Side:
    return Side(label, "", (run.info.run_id,), dict(run.data.metrics), dict(run.data.params),
                tags=dict(run.data.tags), logged=tuple(sorted(run.data.metrics)))


def _model_notebooks(project: Project, uri: str, run, selected: Sequence[str]) -> list[str]:
    """The notebook a registered model's run came from (its ``cd4ml.notebook`` tag): the one to gate."""
    source = pairing.Names(project).of(run)
    if not source:
        return list(selected)
    for text in selected:
        if notebook_id(project, text) != source:
            raise BadInput(f"--notebook {notebook_id(project, text)}: {uri} comes from a run of {source}; "
                           "gate that notebook against it, or drop --against")
    return [source]


def _ran(comparison: Comparison, selected: Sequence[str], against: str | None) -> list[NotebookComparison]:
    """The notebooks the branch ran; CannotEvaluate when it ran none, or not one that was asked for."""
    ran = [n for n in comparison.notebooks if n.branch is not None]
    missing = [n.notebook for n in comparison.notebooks if n.branch is None] if selected else []
    where = f"branch {comparison.branch!r} has no FINISHED run"
    if missing:
        source = f" (the notebook {against} comes from)" if against else ""
        raise CannotEvaluate(f"{where} of {', '.join(missing)}{source}; run `cd4ml-nb run {missing[0]}` on it first")
    if not ran:
        raise CannotEvaluate(f"{where}; run `cd4ml-nb run NOTEBOOK` on it first")
    if against and len(ran) > 1:
        raise CannotEvaluate(f"the run behind {against} has no cd4ml.notebook tag and {comparison.branch!r} ran "
                             f"{len(ran)} notebooks: choose one with --notebook")
    return ran


def _check_runs(c, nb: NotebookComparison, base_side: Side, comparison: Comparison, min_runs: int, model: bool,
                allow_schema_change: bool) -> None:
    """CannotEvaluate when a side has fewer than ``min_runs`` runs or a dataset's schema differs."""
    needs = ((nb.branch, comparison.branch, min_runs), (base_side, comparison.base, 1 if model else min_runs))
    for side, where, needed in needs:
        if len(side.run_ids) < needed:
            raise CannotEvaluate(f"{nb.notebook}: --min-runs {min_runs} needs {min_runs} FINISHED runs on "
                                 f"{where!r}, it has {len(side.run_ids)}; run it again with other seeds")
    changed = schema_changes(c, base_side, nb.branch)
    if changed and not allow_schema_change:
        raise CannotEvaluate(
            f"{nb.notebook}: the schema of dataset(s) {', '.join(changed)} differs between run "
            f"{base_side.run_id} and run {nb.branch.run_id}; see `cd4ml-nb diff {base_side.run_id} "
            f"{nb.branch.run_id}`, or pass --allow-schema-change")


def _check(spec: GateSpec, nb: NotebookComparison, base_side: Side, branch: str) -> GateCheck | Skipped:
    """One rule on one notebook; Skipped when neither side logged the metric."""
    sides = ((nb.branch, branch), (base_side, base_side.label))
    missing = [(side, where) for side, where in sides if spec.metric not in side.metrics]
    if len(missing) == 2:
        logged = ", ".join(sorted(set(nb.branch.logged) | set(base_side.logged))) or "none"
        return Skipped(nb.notebook, f"metric {spec.metric!r} was not logged on either side (logged: {logged})",
                       spec.metric)
    if missing:
        side, where = missing[0]
        raise CannotEvaluate(f"{nb.notebook}: metric {spec.metric!r} was not logged on {where} "
                             f"(logged: {', '.join(side.logged) or 'none'})")
    delta = MetricDelta(spec.metric, spec.goal, base_side.metrics[spec.metric], nb.branch.metrics[spec.metric])
    return GateCheck(spec, nb.notebook, delta, len(base_side.run_ids), len(nb.branch.run_ids),
                     history.parameters_differ(base_side.params, nb.branch.params))


def _require_every_metric(specs: list[GateSpec], checks: list[GateCheck], skipped: list[Skipped]) -> None:
    """CannotEvaluate when a rule was checked on no notebook, with each notebook's reason."""
    done = {c.spec.metric for c in checks}
    unchecked = [s.metric for s in specs if s.metric not in done]
    if unchecked:
        reasons = "; ".join(f"{s.notebook}: {s.reason}" for s in skipped if s.metric in ("", *unchecked))
        raise CannotEvaluate(f"no notebook to check {', '.join(unchecked)} on: {reasons}")


def gate(project: Project, specs: list[GateSpec], branch: str | None = None, base: str | None = None,
         against: str | None = None, notebooks: Sequence[str] = (), select: Selection = Selection(),
         allow_schema_change: bool = False) -> GateResult:
    """Check every spec on each notebook the branch ran (or on those selected), each on its own.

    A notebook the base never ran, or whose runs logged none of a rule's metric, is skipped with the
    reason. CannotEvaluate (exit 2) when a rule can be checked on no notebook, when a selected
    notebook has no base or no branch run, when fewer than ``min_runs`` runs exist, or when a logged
    dataset's schema differs (unless ``allow_schema_change``). ``against`` (``models:/NAME@ALIAS``)
    replaces the base with the model's run, and the notebooks with the one that run came from.
    ``select`` picks the runs compared (their kind; or, with ``run_id``, that run on the branch side).
    """
    from . import tracking

    if not specs:
        raise BadInput("give at least one --metric")
    specs = [GateSpec(s.metric, goal_of(s.metric, s.goal), s.tolerance, s.relative) for s in specs]
    model = _model_baseline(project, tracking.client(project), against) if against else None
    selected = _model_notebooks(project, against, model[1], notebooks) if model else list(notebooks)
    comparison = compare(project, branch, base, [s.metric for s in specs], {s.metric: s.goal for s in specs},
                         selected, select)
    checks: list[GateCheck] = []
    skipped: list[Skipped] = []
    ran = _ran(comparison, selected, against)
    c = tracking.read_client(project)  # the store exists: the branch ran
    for nb in ran:
        base_side = _model_side(*model) if model else nb.base
        if base_side is None:
            reason = no_base(comparison.base, nb.notebook, select.kind)
            if selected:
                raise CannotEvaluate(f"{nb.notebook}: {reason}")
            skipped.append(Skipped(nb.notebook, reason))
            continue
        _check_runs(c, nb, base_side, comparison, select.min_runs if select.run_id is None else 1, model is not None,
                    allow_schema_change)
        for spec in specs:
            outcome = _check(spec, nb, base_side, comparison.branch)
            (checks if isinstance(outcome, GateCheck) else skipped).append(outcome)
    _require_every_metric(specs, checks, skipped)
    return GateResult(tuple(checks), tuple(skipped))


def schema_changes(c, base: Side, branch: Side) -> list[str]:
    """Datasets whose logical schema differs between the two sides' runs: equal schema tags settle
    it at once; otherwise the recorded fingerprints decide (runs recorded under another pandas)."""
    from .data import TAG_PREFIX, schema_changes as fingerprint_changes

    def schemas(tags: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in tags.items() if k.startswith(TAG_PREFIX) and k.endswith(".schema")}

    if schemas(base.tags) == schemas(branch.tags):
        return []
    from .sqlite_client import SqliteClient

    full = c.mlflow() if isinstance(c, SqliteClient) else c  # fingerprints are artifacts: MLflow's client reads them
    return fingerprint_changes(full, full.get_run(base.run_id), full.get_run(branch.run_id))


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
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        c.create_registered_model(model)
    version = c.create_model_version(model, source=source, run_id=run_id, model_id=logged[0].model_id,
                                     tags={"cd4ml.git.branch": run.data.tags.get(tracking.GIT_BRANCH, "")})
    c.set_registered_model_alias(model, alias, version.version)
    return version.version, source
