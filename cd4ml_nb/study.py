"""Studies: sweeps that search, with Optuna's samplers and pruners, asked and told on the driver.

``search:`` in a sweep file names a sampler (tpe, cmaes, random), a trial budget ``n``, a seed, a
space and a pruner (none, median, hyperband). The driver asks Optuna for each trial as a worker
slot frees (local threads or Dask), tells it the trial's final ``metric``, and, while a trial runs,
reads the points the notebook logs with ``mlflow.log_metric(metric, v, step=i)`` from the run store
(they reach it live: straight into SQLite, or through the journal's forwarder to a server) and
reports them; a trial the pruner stops has its kernel interrupted. Its run ends KILLED with its
partial history, tagged ``cd4ml.trial.state=pruned`` and ``cd4ml.status.reason=pruned``; it counts
as pruned, not failed.

The study lives in Optuna's RDB storage on SQLite, ``optuna.db`` in the project's state folder
(beside the embedded ``mlflow.db``; with a tracking server too, since the driver alone asks and
tells). Each study records its notebook, branch and parent run, so ``--resume`` finds the latest
interrupted one and continues it under the same parent: trials an interrupt cut short are asked
again (same values, a new trial number) until ``n`` trials are complete or pruned.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import files, params, tracking
from .exceptions import BadInput
from .project import Project

METHODS = ("tpe", "cmaes", "random")
PRUNERS = ("none", "median", "hyperband")
KINDS = {"uniform": "float", "loguniform": "float", "randint": "int", "choice": None}
STATE = "cd4ml.trial.state"  # complete, pruned, failed, interrupted
NUMBER = "cd4ml.trial"  # the Optuna trial number
STUDY = "cd4ml.study"
WATCH_EVERY = 0.3  # seconds between reads of the running trials' step metrics


@dataclass(frozen=True)
class Search:
    """What ``search:`` asks for, checked against the notebook's contract."""

    method: str
    n: int
    seed: int | None
    space: dict[str, tuple[str, tuple]]  # name -> (kind, arguments)
    prune: str
    metric: str
    goal: str  # minimize | maximize


def parse(spec: dict[str, Any], contract: params.Contract, where: str, fixed: dict[str, Any] | None = None
          ) -> Search | None:
    """The ``search`` of a sweep file, or None; BadInput (one line) when it does not fit the contract."""
    raw = spec.get("search")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: 'search' must be a mapping (method, n, seed, space, prune)")
    if set(spec) & {"grid", "trials", "random"}:
        raise BadInput(f"{where}: 'search' cannot be combined with grid, trials or random")
    unknown = set(raw) - {"method", "n", "seed", "space", "prune"}
    if unknown:
        raise BadInput(f"{where}: unknown search keys {sorted(unknown)} (use method, n, seed, space, prune)")
    method, prune = str(raw.get("method", "tpe")), str(raw.get("prune", "none"))
    if method not in METHODS:
        raise BadInput(f"{where}: search method {method!r}: use one of {', '.join(METHODS)}")
    if prune not in PRUNERS:
        raise BadInput(f"{where}: search prune {prune!r}: use one of {', '.join(PRUNERS)}")
    if method == "cmaes":
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:
            raise BadInput(f"{where}: search method cmaes needs the 'cmaes' package (pip install cmaes)")
    n = raw.get("n", 16)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BadInput(f"{where}: search n {n!r}: give a positive number of trials")
    metric = spec.get("metric")
    if not metric:
        raise BadInput(f"{where}: a search needs 'metric' (the metric the notebook logs) and 'goal'")
    from .compare import goal_of

    space = _space(raw.get("space"), contract, where, fixed or {})
    seed = raw.get("seed")
    return Search(method, n, int(seed) if seed is not None else None, space, prune, str(metric),
                  goal_of(str(metric), str(spec.get("goal") or "")))


def _space(raw: Any, contract: params.Contract, where: str, fixed: dict[str, Any]) -> dict[str, tuple[str, tuple]]:
    if not isinstance(raw, dict) or not raw:
        raise BadInput(f"{where}: search needs a 'space' mapping names to uniform/loguniform/randint/choice")
    space = {}
    for name, dist in raw.items():
        if contract.get(str(name)) is None:
            raise BadInput(f"{where}: search space names {name!r}, which the notebook does not declare "
                           f"(declared: {', '.join(contract.names()) or 'none'})")
        if not isinstance(dist, dict) or len(dist) != 1:
            raise BadInput(f"{where}: search space {name!r}: give one of {', '.join(KINDS)}")
        (kind, args), = dist.items()
        if kind not in KINDS or not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
            raise BadInput(f"{where}: search space {name!r}: {kind}: give [low, high] (choice: a list of values)")
        if kind != "choice":
            try:
                low, high = (int(a) if kind == "randint" else float(a) for a in args)
            except (TypeError, ValueError):
                raise BadInput(f"{where}: search space {name!r}: {kind} bounds {args!r} are not numbers") from None
            if not low < high or (kind == "loguniform" and low <= 0):
                raise BadInput(f"{where}: search space {name!r}: {kind} needs low < high" +
                               (" and low > 0" if kind == "loguniform" else ""))
            args = [low, high]
        for value in args:  # each bound (or choice) must be a value the notebook accepts
            try:
                params.validate(contract, None, {**fixed, str(name): value}, where=where)
            except BadInput as e:
                raise BadInput(f"{where}: search space {name!r}: {kind} value {value!r} does not fit the notebook's "
                               f"parameter ({str(e).split('. Declared parameters:')[0].split(': ', 1)[-1]})") from None
        space[str(name)] = (kind, tuple(args))
    return space


# --- Optuna ---------------------------------------------------------------------------------


def storage_url(project: Project) -> str:
    """Optuna's storage: ``optuna.db`` beside the embedded store (or in the state folder)."""
    db = project.store_path
    folder = db.parent if db is not None else project.ensure_state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def _storage(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(url[len("sqlite:///"):])
    with files.locked(path.with_name(path.name + ".lock")):  # two first studies at once do not race
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def _sampler(search: Search):
    import optuna

    if search.method == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    startup = max(2, min(10, search.n // 4))  # Optuna's 10 random starters would be half of a 20-trial budget
    if search.method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=search.seed, n_startup_trials=startup)
    # constant_liar (Optuna 5's default) scores running trials as the worst seen: with two trials in
    # flight and a 20-trial budget it left TPE no better than random (median best 4.06 against 4.25
    # over 5 seeds, real kernels); without it 1.17 (bench/bench_study.py, tests/test_sweep_search.py)
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup, multivariate=True,
                                      constant_liar=False)


def _pruner(search: Search):
    import optuna

    if search.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, search.n // 5)))
    if search.prune == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _suggest(trial, space: dict[str, tuple[str, tuple]]) -> dict[str, Any]:
    values = {}
    for name, (kind, args) in space.items():
        if kind == "uniform":
            values[name] = trial.suggest_float(name, args[0], args[1])
        elif kind == "loguniform":
            values[name] = trial.suggest_float(name, args[0], args[1], log=True)
        elif kind == "randint":
            values[name] = trial.suggest_int(name, args[0], args[1])
        else:
            values[name] = trial.suggest_categorical(name, list(args))
    return values


@dataclass(frozen=True)
class Scope:
    """Whose study it is: the notebook, its branch, and the values fixed for every trial."""

    notebook: str
    branch: str
    fixed: dict[str, Any]
    where: str  # the sweep file, for messages


class StudySource:
    """Trials for :func:`sweep.run_sweep`, asked of an Optuna study as slots free, told as they end."""

    def __init__(self, project: Project, search: Search, scope: Scope, resume: bool = False):
        import optuna

        self.project, self.search, self.scope = project, search, scope
        self.url = storage_url(project)
        storage = _storage(self.url)
        self.parent_run: str | None = None
        if resume:
            name = _latest_interrupted(storage, scope)
            self.study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(search),
                                           pruner=_pruner(search))
            self.parent_run = self.study.user_attrs.get("parent_run")
            self._requeue()
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            name = f"{scope.notebook}@{scope.branch}@{stamp}"
            self.study = optuna.create_study(study_name=name, storage=storage, sampler=_sampler(search),
                                             pruner=_pruner(search), direction=search.goal)
            for key, value in {"notebook": scope.notebook, "branch": scope.branch, "state": "running",
                               "n": search.n}.items():
                self.study.set_user_attr(key, value)
        self.name = name
        self.live: dict[str, Any] = {}  # trial key -> its Optuna trial, asked and not yet told
        self.reported: dict[str, int] = {}  # trial key -> last step reported
        self.pruned: set[str] = set()
        self.lock = threading.Lock()
        self.budget = search.n - self._counted()
        self.total = self.budget  # trials this session runs
        self.client = None
        self.last_watch = 0.0

    def _counted(self) -> int:
        """Trials that count towards n: complete, pruned, or failed by their notebook."""
        from optuna.trial import TrialState

        return sum(1 for t in self.study.get_trials(deepcopy=False)
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and t.user_attrs.get(STATE) == "failed"))

    def _requeue(self) -> None:
        """Trials an interrupt cut short (or left RUNNING by a killed driver) are asked again."""
        from optuna.trial import TrialState

        done = set(self.study.user_attrs.get("requeued", []))
        for t in self.study.get_trials(deepcopy=False):
            if t.number in done:
                continue
            if t.state == TrialState.RUNNING:  # its driver was killed: the trial never ended
                self.study.tell(t.number, state=TrialState.FAIL)
            elif t.state != TrialState.FAIL or t.user_attrs.get(STATE) == "failed":
                continue
            self.study.enqueue_trial(t.params, skip_if_exists=False)
            done.add(t.number)
        self.study.set_user_attr("requeued", sorted(done))
        self.study.set_user_attr("state", "running")

    def store(self):
        """One MLflow client on the run store for the whole study."""
        if self.client is None:
            self.client = tracking.client(self.project)
        return self.client

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.store().set_tag(run_id, key, value)

    # -- what run_sweep asks of a source --

    def parent_tags(self) -> dict[str, str]:
        return {STUDY: self.name, "cd4ml.study.method": self.search.method, "cd4ml.study.prune": self.search.prune,
                "cd4ml.study.storage": self.url, "cd4ml.sweep.trials": str(self.search.n)}

    def started_parent(self, run_id: str) -> None:
        self.parent_run = run_id
        self.study.set_user_attr("parent_run", run_id)

    def take(self):
        """The next trial, asked of the sampler now (it sees every trial told so far), or None."""
        from .sweep import Trial, trial_key

        with self.lock:
            if self.budget <= 0:
                return None
            self.budget -= 1
            asked = self.study.ask()
            values = {**self.scope.fixed, **_suggest(asked, self.search.space)}
            key = trial_key({STUDY: self.name, "number": asked.number})
            self.live[key] = asked
            return Trial(asked.number, key, values)

    def tags(self, trial) -> dict[str, str]:
        return {NUMBER: str(trial.index), STUDY: self.name}

    def prune(self, running: list[tuple[Any, str]]) -> list:
        """Report the running trials' new step points; the trials the pruner stops."""
        if self.search.prune == "none" or time.monotonic() - self.last_watch < WATCH_EVERY:
            return []
        self.last_watch = time.monotonic()
        stop = []
        for trial, run_id in running:
            asked = self.live.get(trial.key)
            if asked is None or trial.key in self.pruned:
                continue
            points = sorted((m.step, m.value) for m in self.store().get_metric_history(run_id, self.search.metric))
            last = self.reported.get(trial.key, -1)
            fresh = [(s, v) for s, v in points if s > last and math.isfinite(v)]
            for step, value in fresh:
                asked.report(value, step)
                self.reported[trial.key] = step
            if fresh and asked.should_prune():
                self.pruned.add(trial.key)
                stop.append(trial)
        return stop

    def ended(self, result):
        """Tell the study how a trial ended; a pruned trial is marked so, not failed."""
        from optuna.trial import TrialState

        asked = self.live.pop(result.trial.key, None)
        if asked is None:
            return result
        value = result.metrics.get(self.search.metric)
        if result.trial.key in self.pruned and result.status != "FINISHED":
            state, result = TrialState.PRUNED, replace(result, pruned=True)
        elif result.status == "FINISHED" and value is not None and math.isfinite(value):
            state = TrialState.COMPLETE
        elif result.status == "KILLED":
            asked.set_user_attr(STATE, "interrupted")
            state = TrialState.FAIL
        else:
            asked.set_user_attr(STATE, "failed")
            state = TrialState.FAIL
        if result.run_id:
            asked.set_user_attr("run_id", result.run_id)
        self.study.tell(asked, value if state == TrialState.COMPLETE else None, state=state)
        label = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state)
        label = label or asked.user_attrs.get(STATE, "failed")
        end = {STATE: label}
        if label == "pruned":
            end[tracking.REASON] = "pruned"
        if result.run_id:
            self.tag(result.run_id, end)
        return result

    def close(self, interrupted: bool, runs: dict[str, str]) -> dict[str, str]:
        """Tell what was never told (interrupted: asked again on --resume); the parent's study tags."""
        from optuna.trial import TrialState

        for key, asked in list(self.live.items()):
            asked.set_user_attr(STATE, "interrupted")
            self.study.tell(asked, state=TrialState.FAIL)
            self.live.pop(key)
            if key in runs:
                self.tag(runs[key], {STATE: "interrupted"})
        self.study.set_user_attr("state", "interrupted" if interrupted else "done")
        tags = {STUDY: self.name}
        complete = [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if complete:
            best = self.study.best_trial
            tags.update({"cd4ml.study.best_trial": str(best.number), "cd4ml.study.best_value": repr(best.value)})
            if best.user_attrs.get("run_id") and self.parent_run:
                tags["cd4ml.sweep.best_run"] = best.user_attrs["run_id"]
                self.store().log_metric(self.parent_run, f"best_{self.search.metric}", best.value)
        return tags


def _latest_interrupted(storage, scope: Scope) -> str:
    import optuna

    found = [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
             if s.user_attrs.get("notebook") == scope.notebook and s.user_attrs.get("branch") == scope.branch
             and s.user_attrs.get("state") != "done"]
    if not found:
        raise BadInput(f"{scope.where}: no interrupted study of {scope.notebook} on branch {scope.branch} to resume")
    found.sort(key=lambda s: s.study_name.rsplit("@", 1)[-1])  # names end with their UTC creation time
    return found[-1].study_name
