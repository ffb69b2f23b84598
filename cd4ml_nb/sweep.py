"""Sweeps: many trials of one notebook, in parallel locally or on a Dask cluster.

Every trial is validated against the notebook's contract before anything starts. The parent
process creates one MLflow parent run (``cd4ml.kind=sweep``) and, as it hands each trial out, one
child run for it (``cd4ml.kind=trial``, ``mlflow.parentRunId``, ``cd4ml.trial.key``), so a trial's
run starts when the trial does. The trial adopts that run, so a trial that Dask executes twice (a
worker killed mid-trial) still ends with exactly one run per key, and a trial whose run is already
FINISHED is not run again. Trials that never started (a cancelled sweep) have no run.

Local trials run in threads of this one process (imports paid once), each with its own kernel:
a kernel that dies fails its trial alone. Trials log the executed notebook but no HTML render.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
import resource
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from . import history, notebooks, pairing, params, tracking
from .compare import goal_of
from .exceptions import BadInput, Interrupted
from .guard import Guard
from .project import Project
from .runner import signals_as_interrupts, signals_ignored

TRIAL_KEY = "cd4ml.trial.key"
PARENT = "mlflow.parentRunId"
LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}


@dataclass(frozen=True)
class Trial:
    index: int
    key: str  # stable digest of the values
    values: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The trials to run, and how many candidates were dropped as duplicates of another's values."""

    trials: tuple[Trial, ...]
    duplicates: int = 0


@dataclass(frozen=True)
class TrialResult:
    trial: Trial
    run_id: str
    status: str  # as the server holds it: FINISHED, FAILED, KILLED; RUNNING while its journal is pending
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    pending: str | None = None  # the trial's journal folder, not yet wholly on the server
    warnings: tuple[str, ...] = ()  # what its run warned about
    pruned: bool = False  # stopped by a study's pruner (its run KILLED, cd4ml.trial.state=pruned): not a failure


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    experiment: str
    metric: str | None
    goal: str
    results: tuple[TrialResult, ...]
    peak_rss_mb: float

    @property
    def failed(self) -> list[TrialResult]:
        return [r for r in self.results if r.status != "FINISHED" and not r.pruned]

    @property
    def pruned(self) -> list[TrialResult]:
        return [r for r in self.results if r.pruned]

    def ranked(self) -> list[TrialResult]:
        """Finished trials best first by the chosen metric, then the others."""
        done = [r for r in self.results if r.status == "FINISHED"]
        if self.metric:
            scored = [r for r in done if self.metric in r.metrics]
            scored.sort(key=lambda r: r.metrics[self.metric], reverse=self.goal == "maximize")
            done = scored + [r for r in done if self.metric not in r.metrics]
        return done + self.pruned + self.failed

    @property
    def best(self) -> TrialResult | None:
        ranked = [r for r in self.ranked() if r.status == "FINISHED" and (not self.metric or self.metric in r.metrics)]
        return ranked[0] if ranked else None

    @property
    def exit_code(self) -> int:
        return 0 if not self.failed else 1


def trial_key(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --- planning ---------------------------------------------------------------------------------


def _sample(spec: Any, rng: random.Random, name: str) -> Any:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise BadInput(f"random space {name!r}: give one of choice: [..], randint: [lo, hi], uniform: [lo, hi]")
    (kind, arg), = spec.items()
    if kind == "choice" and isinstance(arg, list) and arg:
        return rng.choice(arg)
    if kind == "randint" and isinstance(arg, list) and len(arg) == 2:
        return rng.randint(int(arg[0]), int(arg[1]))
    if kind == "uniform" and isinstance(arg, list) and len(arg) == 2:
        return rng.uniform(float(arg[0]), float(arg[1]))
    if kind == "loguniform" and isinstance(arg, list) and len(arg) == 2:
        import math

        return math.exp(rng.uniform(math.log(float(arg[0])), math.log(float(arg[1]))))
    raise BadInput(f"random space {name!r}: unknown or malformed {kind!r}")


def plan(contract: params.Contract, where: str, grid: dict[str, list[str]] | None = None,
         fixed: dict[str, str] | None = None, spec: dict[str, Any] | None = None) -> Plan:
    """The trials: grid (from the command line and the file), explicit trials, random samples,
    each merged over the fixed values and validated; candidates with the same values run once.
    Raises ParameterError listing problems."""
    spec = dict(spec or {})
    unknown = set(spec) - {"parameters", "grid", "trials", "random", "search", "metric", "goal", "parallel",
                           "max_failures"}
    if unknown:
        raise BadInput(f"{where}: unknown sweep keys {sorted(unknown)}")
    base_values = dict(spec.get("parameters") or {})
    candidates: list[tuple[dict[str, Any], dict[str, str]]] = []  # (typed values, command-line texts)
    file_grid = spec.get("grid") or {}
    if not isinstance(file_grid, dict) or not all(isinstance(v, list) and v for v in file_grid.values()):
        raise BadInput(f"{where}: 'grid' must map names to non-empty lists")
    text_grid = grid or {}
    names = list(file_grid) + [n for n in text_grid if n not in file_grid]
    if names:
        axes = [[("value", v) for v in file_grid[n]] if n in file_grid else [("text", v) for v in text_grid[n]]
                for n in names]
        for combo in itertools.product(*axes):
            values = {n: v for n, (kind, v) in zip(names, combo) if kind == "value"}
            texts = {n: v for n, (kind, v) in zip(names, combo) if kind == "text"}
            candidates.append((values, texts))
    for explicit in spec.get("trials") or []:
        if not isinstance(explicit, dict):
            raise BadInput(f"{where}: each entry of 'trials' must be a mapping")
        candidates.append((dict(explicit), {}))
    if spec.get("random"):
        rnd = spec["random"]
        if not isinstance(rnd, dict) or not isinstance(rnd.get("space"), dict):
            raise BadInput(f"{where}: 'random' needs n, seed and a 'space' mapping")
        rng = random.Random(rnd.get("seed", 0))
        for _ in range(int(rnd.get("n", 1))):
            candidates.append(({n: _sample(s, rng, n) for n, s in sorted(rnd["space"].items())}, {}))
    if not candidates:
        candidates.append(({}, {}))
    trials, seen, problems, duplicates = [], set(), [], 0
    for values, texts in candidates:
        try:
            typed = params.validate(contract, {**(fixed or {}), **texts}, {**base_values, **values}, where=where)
        except BadInput as e:
            problems.append(str(e).split(". Declared parameters:")[0])
            continue
        key = trial_key(typed)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        trials.append(Trial(len(trials), key, typed))
    if problems:
        raise BadInput(f"{len(problems)} trial(s) do not fit the contract: " + " | ".join(dict.fromkeys(problems))
                       + f". Declared parameters: {contract.describe()}")
    return Plan(tuple(trials), duplicates)


# --- executing one trial (locally or on a Dask worker) ----------------------------------------


def execute_trial(root: str, notebook: str, values: dict[str, Any], run_id: str, tracking_uri: str,
                  extra_tags: dict[str, str], cancel: threading.Event | None = None) -> dict[str, Any]:
    """Run one trial into its pre-created run; a run already FINISHED is not run again."""
    from .runner import Callbacks, RunOptions, run_notebook

    project = Project.discover(root, tracking_uri=tracking_uri)
    c = tracking.client(project)
    run = c.get_run(run_id)
    if run.info.status == "FINISHED":  # a duplicate execution of a trial that completed
        return {"run_id": run_id, "status": "FINISHED", "metrics": dict(run.data.metrics), "error": None}
    warnings: list[str] = []
    result = run_notebook(Path(root) / notebook, values, project=project,
                          options=RunOptions(progress=False, run_id=run_id, extra_tags=extra_tags, html=False),
                          callbacks=Callbacks(cancel=cancel, warn=warnings.append))
    outcome = {"run_id": run_id, "status": result.status, "metrics": result.metrics, "error": result.error,
               "warnings": warnings}
    if result.spooled:  # the notebook ended, the server does not have it yet: say what the server holds
        outcome.update(status="RUNNING", pending=result.spooled, error=_pending_error(result.status, result.spooled))
    return outcome


def _pending_error(status: str, folder: str) -> str:
    return (f"the notebook ended {status} but its journal is pending in {folder}: the server has the run RUNNING "
            "until `cd4ml-nb runs sync` uploads it")


# --- the sweep --------------------------------------------------------------------------------


def check_dask_store(project: Project, address: str) -> None:
    """A SQLite store cannot be shared with Dask workers on another host (BadInput: start a server)."""
    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or ""
    if project.tracking_uri.startswith("sqlite:") and host not in LOOPBACK:
        raise BadInput(
            f"a SQLite store ({project.tracking_uri}) cannot be shared with Dask workers on {host}: "
            "start a tracking server (`cd4ml-nb server`) and pass --tracking-uri http://HOST:PORT"
        )


@dataclass(frozen=True)
class SweepOptions:
    """Where trials run and how the sweep judges them."""

    parallel: int = 0  # local trials at once (0: the number of cores)
    dask: str | None = None  # a Dask scheduler's address: trials run there
    metric: str | None = None  # trials ranked by this metric
    goal: str = ""  # minimize | maximize (default: from the metric's name)
    max_failures: int | None = None  # no new trial starts after this many failed


class Fixed:
    """A source of trials known beforehand (a plan), handed out in order. A study (study.StudySource)
    is the other kind: it asks its sampler as slots free, prunes, and may continue a parent run."""

    parent_run: str | None = None

    def __init__(self, trials: list[Trial]):
        self.pending, self.total = list(trials), len(trials)

    def parent_tags(self) -> dict[str, str]:
        return {"cd4ml.sweep.trials": str(self.total)}

    def started_parent(self, run_id: str) -> None:
        pass

    def take(self) -> Trial | None:
        return self.pending.pop(0) if self.pending else None

    def tags(self, trial: Trial) -> dict[str, str]:
        return {}

    def prune(self, running: dict[Trial, str]) -> list[Trial]:
        return []

    def ended(self, result: TrialResult) -> TrialResult:
        return result

    def close(self, interrupted: bool, runs: dict[str, str]) -> dict[str, str]:
        return {}


def run_sweep(path: Path, trials: list[Trial] | Any, *, project: Project, options: SweepOptions = SweepOptions(),
              on_trial: Callable[[TrialResult, int, int], None] | None = None) -> SweepResult:
    """Run ``trials`` (a list, or a source such as a study) of the notebook at ``path``; returns when
    all are terminal (or cancelled)."""
    source = Fixed(trials) if isinstance(trials, (list, tuple)) else trials
    parallel, dask, metric, goal, max_failures = (options.parallel, options.dask, options.metric, options.goal,
                                                  options.max_failures)
    nb = notebooks.read(path)
    pair = pairing.find_pair(nb.path, project, node=nb.node)
    pairing.ensure_in_sync(pair, project, nb.path)
    rel = project.relative(pair.ipynb if pair is not None else nb.path)
    if dask:
        check_dask_store(project, dask)
    tracking.check_store(project)
    git = project.git_info(nb.path)
    experiment = tracking.experiment_name(project, git)
    c = tracking.client(project)  # creates the embedded store once, under its lock
    experiment_id = tracking.ensure_experiment(c, project, experiment)
    tags = {**tracking.provenance_tags(project, git, rel), **history.run_tags(rel, project.relative(nb.path), history.SWEEP)}
    if source.parent_run:  # a study resumed: its parent run goes on
        parent_id = source.parent_run
        c.update_run(parent_id, status="RUNNING")
    else:
        parent_id = tracking.create_run(c, experiment_id, f"{nb.path.stem} sweep", {
            **tags, "cd4ml.sweep": "true", **source.parent_tags()}, {}).info.run_id
        source.started_parent(parent_id)
    guard = Guard(project.tracking_uri)  # if this process dies, its runs still end
    guard.add(parent_id)
    runs: dict[str, str] = {}  # trial key -> its run, created as the trial is handed out

    def trial_tags(trial: Trial) -> dict[str, str]:
        return {history.KIND: history.TRIAL, PARENT: parent_id, TRIAL_KEY: trial.key,
                "cd4ml.trial.index": str(trial.index), **source.tags(trial)}

    def run_of(trial: Trial) -> str:
        if trial.key not in runs:
            child = tracking.create_run(c, experiment_id, f"{nb.path.stem}-{trial.key[:6]}",
                                        {**tags, **trial_tags(trial)}, {})
            runs[trial.key] = child.info.run_id
            guard.add(child.info.run_id)
        return runs[trial.key]

    results: dict[str, TrialResult] = {}
    handed: list[Trial] = []  # every trial handed out, in order
    failures = 0

    def record(trial: Trial, outcome: dict[str, Any]) -> None:
        nonlocal failures
        result = TrialResult(trial, outcome["run_id"], outcome["status"], outcome.get("metrics") or {},
                             outcome.get("error"), outcome.get("pending"), tuple(outcome.get("warnings") or ()))
        result = results[trial.key] = source.ended(result)
        if result.status != "FINISHED" and not result.pruned:
            failures += 1
        if on_trial:
            on_trial(result, len(results), source.total)

    def args(trial: Trial) -> tuple:
        """What a trial is executed with; called as it is handed out (so its run starts then)."""
        if trial not in handed:
            handed.append(trial)
        return (str(project.root), project.relative(nb.path), trial.values, run_of(trial), project.tracking_uri,
                trial_tags(trial))

    interrupted = None
    try:
        with signals_as_interrupts():
            _fan_out(dask, source, args, record, runs, parallel,
                     lambda: max_failures is not None and failures >= max_failures)
    except KeyboardInterrupt as e:
        interrupted = e
    finally:
        with signals_ignored():
            _settle_pending(c, project, results)
        with signals_ignored():
            closing = source.close(interrupted is not None, runs)
        _close_runs(c, handed, runs, results, parent_id, interrupted, options, closing)
        guard.release()
    if interrupted is not None:
        raise Interrupted(f"sweep cancelled: {len(results)} of {source.total} trial(s) ended; the rest are KILLED")
    goal = goal_of(metric, goal) if metric else "minimize"
    ordered = tuple(results[t.key] for t in handed if t.key in results)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return SweepResult(parent_id, experiment, metric, goal, ordered, peak)


def _fan_out(dask, source, args, record, runs, parallel, stop) -> None:
    """Run the source's trials on Dask or in local threads, a new one as a slot frees; stop the kernels
    of trials the source prunes, and of all on interrupt."""
    import os

    if dask:
        _run_on_dask(dask, source, args, record, runs, parallel, stop)
        return
    workers = parallel or os.cpu_count() or 1
    cancels: dict[str, threading.Event] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cd4ml-trial") as pool:
        running: dict[Any, Trial] = {}
        try:
            while True:
                while len(running) < workers and not stop():
                    trial = source.take()
                    if trial is None:
                        break
                    cancels[trial.key] = threading.Event()
                    running[pool.submit(execute_trial, *args(trial), cancels[trial.key])] = trial
                if not running:
                    break
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                for trial in source.prune([(t, runs[t.key]) for f, t in running.items() if f not in done]):
                    cancels[trial.key].set()
                for future in done:
                    trial = running.pop(future)
                    try:
                        record(trial, future.result())
                    except Exception as e:  # the trial's own machinery failed: it fails alone
                        record(trial, {"run_id": runs[trial.key], "status": "FAILED", "error": str(e)})
        except KeyboardInterrupt:
            for event in cancels.values():
                event.set()
            for future in running:
                future.cancel()
            wait(list(running), timeout=120)
            raise


def _settle_pending(c, project: Project, results: dict[str, TrialResult]) -> None:
    """Try once more to upload the journals of trials that ended pending (here, when the folder is on
    this host), then take each trial's status from the server: a trial is reported as the server has it."""
    from dataclasses import replace

    from . import forwarder, journal_folder

    for key, result in list(results.items()):
        if result.pending is None:
            continue
        problems: list[str] = []
        if Path(result.pending).is_dir():
            forwarder.complete(Path(result.pending), project.config.health_timeout, problems.append)
        if not (Path(result.pending) / journal_folder.JOURNAL).exists():  # uploaded (by us, or a sync meanwhile)
            status = c.get_run(result.run_id).info.status
            results[key] = replace(result, status=status, pending=None, error=None if status == "FINISHED" else
                                   result.error)
        elif problems:
            results[key] = replace(result, error=f"{result.error} ({problems[-1]})")


def _close_runs(c, trials, runs, results, parent_id, interrupted, options: SweepOptions, closing) -> None:
    """No run stays RUNNING: trials that did not end are KILLED; the parent gets the verdict. A trial
    whose journal is pending is left to it (the journal ends the run with the notebook's true status)."""
    with signals_ignored():
        for trial in trials:  # a trial whose machinery raised was recorded FAILED but never ended
            ended = results.get(trial.key)
            if ended is not None and ended.pending is not None:
                continue
            if trial.key not in runs or c.get_run(runs[trial.key]).info.status not in ("RUNNING", "SCHEDULED"):
                continue
            if ended is None:
                tracking.end_run(c, runs[trial.key], "KILLED", {tracking.REASON: "cancelled"})
            else:
                status = "FAILED" if ended.status in ("FINISHED", "RUNNING") else ended.status
                tracking.end_run(c, runs[trial.key], status, {tracking.REASON: "error", "cd4ml.status.message":
                                                              ended.error or f"the trial ended {ended.status} "
                                                              "but left its run RUNNING"})
                results[trial.key] = TrialResult(ended.trial, ended.run_id, status, ended.metrics, ended.error,
                                                 None, ended.warnings)
        metric, goal = options.metric, options.goal
        failed = [r for r in results.values() if r.status != "FINISHED" and not r.pruned]
        tags = {"cd4ml.sweep.failed": str(len(failed)), **closing}
        if any(r.pruned for r in results.values()):
            tags["cd4ml.sweep.pruned"] = str(sum(r.pruned for r in results.values()))
        if metric and "cd4ml.sweep.best_run" not in closing:  # a study names its best over all its sessions
            goal = goal_of(metric, goal)
            scored = [r for r in results.values() if r.status == "FINISHED" and metric in r.metrics]
            if scored:
                best = (min if goal == "minimize" else max)(scored, key=lambda r: r.metrics[metric])
                c.log_metric(parent_id, f"best_{metric}", best.metrics[metric])
                tags["cd4ml.sweep.best_run"] = best.run_id
        if interrupted is not None:
            status, tags[tracking.REASON] = "KILLED", "interrupted"
        elif failed and all(r.pending for r in failed):
            status, tags[tracking.REASON] = "FAILED", "trials-pending"
        elif failed:
            status, tags[tracking.REASON] = "FAILED", "trials-failed"
        else:
            status = "FINISHED"
        tracking.end_run(c, parent_id, status, tags)


def _run_on_dask(address: str, source, args, record, runs, parallel, stop) -> None:
    """Trials on Dask (a study's: at most ``parallel``, default the cluster's threads, at once); pruned
    ones are told to stop through a Dask Event their worker watches."""
    from distributed import Client, Event

    with Client(address, timeout=30) as client:
        # a plan goes to the scheduler whole; a study's trials are asked as slots free
        slots = source.total if isinstance(source, Fixed) else parallel or sum(client.nthreads().values()) or 1
        futures: dict[Any, Trial] = {}

        def submit() -> bool:
            trial = None if stop() else source.take()
            if trial is None:
                return False
            future = client.submit(execute_on_worker, *args(trial), f"cd4ml-cancel-{trial.key}",
                                   key=f"cd4ml-trial-{trial.key}-{time.time_ns()}", pure=False, retries=2)
            futures[future] = trial
            return True

        try:
            while len(futures) < slots and submit():
                pass
            while futures:
                done = [f for f in list(futures) if f.done()]
                running = [(t, runs[t.key]) for f, t in futures.items() if not f.done()]
                for trial in source.prune(running):
                    Event(f"cd4ml-cancel-{trial.key}", client=client).set()
                if not done:
                    time.sleep(0.2)  # polling the futures and the trials' step metrics
                    continue
                for future in done:
                    trial = futures.pop(future)
                    try:
                        record(trial, future.result())
                    except Exception as e:
                        record(trial, {"run_id": runs[trial.key], "status": "FAILED",
                                       "error": f"{type(e).__name__}: {e}"})
                    submit()
        except KeyboardInterrupt:
            client.cancel(list(futures))
            raise


def execute_on_worker(root: str, notebook: str, values: dict[str, Any], run_id: str, tracking_uri: str,
                      extra_tags: dict[str, str], event: str) -> dict[str, Any]:
    """:func:`execute_trial` on a Dask worker; setting the Dask Event ``event`` stops the kernel."""
    from distributed import Event, get_client

    cancel, finished = threading.Event(), threading.Event()
    remote = Event(event, client=get_client())  # the worker's client, named here: the watching thread has none

    def watch() -> None:
        while not finished.is_set():
            if remote.wait(0.5):
                cancel.set()
                return

    threading.Thread(target=watch, daemon=True, name="cd4ml-cancel-watch").start()
    try:
        return execute_trial(root, notebook, values, run_id, tracking_uri, extra_tags, cancel)
    finally:
        finished.set()
