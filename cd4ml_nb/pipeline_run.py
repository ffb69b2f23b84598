"""Running a pipeline: one parent MLflow run, one child run per step, only what changed executed.

As in a sweep (:mod:`.sweep`), this process creates the parent run (``cd4ml.kind=pipeline``) in
the branch's experiment and, as each step starts, its child run (``cd4ml.kind=step``,
``mlflow.parentRunId``, ``cd4ml.step``), which the runner (:func:`.runner.run_notebook`) adopts:
the step gets the provenance, artifacts, parameters and metrics of any run. Steps whose needs are
done run at once, each in a thread of this process with its own kernel (``parallel`` at most), or
as tasks on a Dask cluster (``dask``: the workers share the project's folder and the store, as for
a sweep's trials).

A step whose cache key (:mod:`.pipeline_cache`) matches a FINISHED step run, whose outputs are on
disk unchanged, is not executed: its child run is recorded FINISHED with ``cd4ml.cache.hit`` and
the metrics of the run it stands for, and no kernel starts. A step that fails fails the pipeline;
the steps that need it are recorded as skipped (KILLED, reason ``skipped``); the others still run.
"""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from . import history, pipeline_cache as cache, tracking
from .exceptions import Interrupted, NoStore
from .pipeline import Pipeline, Step
from .project import Project

SKIPPED = "SKIPPED"
RUNNING = "RUNNING"  # what ``on_step`` is told when a step starts executing
PIPELINE_FILE_TAG = "cd4ml.pipeline.file"


@dataclass(frozen=True)
class StepResult:
    """How a step ended: FINISHED (executed or a cache hit), FAILED, KILLED or SKIPPED (RUNNING: started)."""

    step: str
    status: str
    run_id: str | None
    cache_hit: str | None = None  # the run a cache hit stands for
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class PipelineResult:
    """A pipeline run: its parent run, its status and its steps in pipeline order."""

    parent_run_id: str
    experiment: str
    status: str  # FINISHED, FAILED or KILLED
    steps: tuple[StepResult, ...]

    @property
    def exit_code(self) -> int:
        return {"FINISHED": 0, "KILLED": 130}.get(self.status, 1)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data (``--json``)."""
        return {"parent_run_id": self.parent_run_id, "experiment": self.experiment, "status": self.status,
                "steps": [asdict(s) for s in self.steps]}


@dataclass(frozen=True)
class PipelineOptions:
    """What a pipeline run covers and how."""

    steps: tuple[str, ...] = ()  # these steps and what they need (default: every step)
    force: bool = False  # execute every step, cache or not
    parallel: int = 0  # steps at once (0: the number of cores; with dask: the steps submitted at once)
    dask: str | None = None  # a Dask scheduler's address: steps run there


@dataclass(frozen=True)
class StepStatus:
    """Whether a step is up to date, and why it would run when it is not."""

    step: str
    up_to_date: bool
    reason: str
    run_id: str | None = None  # the run it would reuse
    after: tuple[str, ...] = ()  # needs that would run first (their outputs may change)


def _experiment_ids(c, project: Project, experiment: str) -> list[str]:
    """The ids of this branch's experiment and the base branch's, those that exist."""
    names = dict.fromkeys([experiment, tracking.branch_experiment(project, project.base_branch)])
    found = [c.get_experiment_by_name(name) for name in names]
    return [e.experiment_id for e in found if e is not None]


class _Environments:
    """The environment fingerprint of each kernel, computed once."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def of(self, kernel: str) -> str:
        if kernel not in self._known:
            self._known[kernel] = cache.environment_of(kernel)
        return self._known[kernel]


def status(pipe: Pipeline, project: Project, names: tuple[str, ...] = ()) -> tuple[StepStatus, ...]:
    """Per step, up to date or why it would run; runs nothing and writes nothing."""
    try:
        c = tracking.read_client(project)
        ids = _experiment_ids(c, project, tracking.branch_experiment(project, None))
    except NoStore:
        c, ids = None, []
    envs = _Environments()
    found: list[StepStatus] = []
    would_run: set[str] = set()
    for step in pipe.selected(names):
        key = cache.key_of(project.root, step, pipe.inputs_of(step), envs.of(step.kernel))
        runs = cache.candidates(c, ids, step.name) if c is not None and ids else []
        hit = cache.find_hit(project.root, key, runs)
        after = tuple(n for n in step.needs if n in would_run)
        if hit is None:
            would_run.add(step.name)
            found.append(StepStatus(step.name, False, cache.why_stale(project.root, key, runs), None, after))
        else:
            found.append(StepStatus(step.name, True, f"up to date (run {cache.origin(hit)[:12]})", hit.info.run_id,
                                    after))
    return tuple(found)


class _Threads:
    """Steps executed in threads of this process, each with its own kernel."""

    def __init__(self, run: "_PipelineRun", workers: int) -> None:
        self.run, self.pool = run, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cd4ml-step")

    def start(self, step: Step, run_id: str, tags: dict[str, str]) -> Future:
        return self.pool.submit(self.run.execute, step, run_id, tags)

    def done(self, futures: list) -> list:
        return list(wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)[0])

    def cancel(self, futures: list) -> None:
        self.run.cancel.set()  # interrupts their kernels
        wait(futures, timeout=120)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _Dask:
    """Steps executed as tasks on a Dask cluster, as a sweep's trials (:func:`.sweep.execute_trial`)."""

    def __init__(self, project: Project, address: str) -> None:
        from distributed import Client

        from .sweep import check_dask_store

        check_dask_store(project, address)
        self.project, self.client = project, Client(address, timeout=30)

    def start(self, step: Step, run_id: str, tags: dict[str, str]):
        from .sweep import execute_trial

        return self.client.submit(execute_trial, str(self.project.root), step.notebook, step.parameters, run_id,
                                  self.project.tracking_uri, tags, None, pure=False, retries=2,
                                  key=f"cd4ml-step-{step.name}-{time.time_ns()}")

    def done(self, futures: list) -> list:
        from distributed import wait as dask_wait

        try:
            dask_wait(futures, timeout=0.5, return_when="FIRST_COMPLETED")
        except TimeoutError:  # none ended yet
            pass
        return [f for f in futures if f.done()]

    def cancel(self, futures: list) -> None:
        self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()


class _PipelineRun:
    """One execution of a pipeline: the parent run, the step runs, the scheduling."""

    def __init__(self, pipe: Pipeline, project: Project, options: PipelineOptions,
                 on_step: Callable[[StepResult], None] | None, warn: Callable[[str], None]) -> None:
        self.pipe, self.project, self.options, self.on_step, self.warn = pipe, project, options, on_step, warn
        self.steps = pipe.selected(options.steps)
        self.results: dict[str, StepResult] = {}
        self.cancel = threading.Event()
        self.envs = _Environments()
        self.git = project.git_info(project.root)
        self.experiment = tracking.experiment_name(project, self.git)
        tracking.check_store(project)
        self.c = tracking.run_client(project)  # creates the embedded store once, under its lock
        self.experiment_id = tracking.ensure_experiment(self.c, project, self.experiment)
        self.lookup = _experiment_ids(self.c, project, self.experiment)
        self.parent_id = ""
        self.guard = None
        self.created: list[str] = []  # every child run, so that none stays RUNNING

    # --- runs ---------------------------------------------------------------------------------

    def start_parent(self) -> None:
        from .guard import Guard

        tags = {**tracking.provenance_tags(self.project, self.git, None), history.KIND: history.PIPELINE,
                tracking.SOURCE_NAME: self.pipe.file, PIPELINE_FILE_TAG: self.pipe.file,
                "cd4ml.pipeline.steps": ",".join(s.name for s in self.steps)}
        self.parent_id = tracking.create_run(self.c, self.experiment_id, f"pipeline {self.pipe.file}", tags,
                                             {}).info.run_id
        self.guard = Guard(self.project.tracking_uri)  # if this process dies, its runs still end
        self.guard.add(self.parent_id)

    def step_tags(self, step: Step) -> dict[str, str]:
        return {history.KIND: history.STEP, history.PARENT: self.parent_id, cache.STEP: step.name}

    def child(self, step: Step, extra: dict[str, Any]) -> str:
        """Create the step's child run (RUNNING) with its provenance and parameters."""
        tags = {**tracking.provenance_tags(self.project, self.git, step.identity),
                **history.run_tags(step.identity, step.notebook, history.STEP), **self.step_tags(step), **extra}
        run_id = tracking.create_run(self.c, self.experiment_id, step.name, tags, step.parameters).info.run_id
        self.created.append(run_id)
        self.guard.add(run_id)
        return run_id

    def record(self, result: StepResult) -> None:
        self.results[result.step] = result
        if self.on_step is not None:
            self.on_step(result)

    def copy_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        stamp = int(time.time() * 1000)
        if hasattr(self.c, "copy_metrics"):  # the light client (no MLflow import: most of a cached run's cost)
            self.c.copy_metrics(run_id, metrics, stamp)
            return
        from mlflow.entities import Metric

        self.c.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in sorted(metrics.items())])

    def hit(self, step: Step, key: cache.Key, run) -> None:
        """Record a cache hit: a FINISHED child run standing for ``run``, no kernel."""
        source = cache.origin(run)
        run_id = self.child(step, {**key.tags(), cache.HIT: source, cache.OUTPUTS: run.data.tags[cache.OUTPUTS]})
        metrics = dict(run.data.metrics)
        self.copy_metrics(run_id, metrics)
        tracking.end_run(self.c, run_id, "FINISHED")
        self.record(StepResult(step.name, "FINISHED", run_id, source, metrics))

    def skip(self, step: Step, failed: list[str]) -> None:
        why = f"needs {', '.join(failed)}, which did not finish"
        run_id = self.child(step, {})
        tracking.end_run(self.c, run_id, "KILLED", {tracking.REASON: "skipped", "cd4ml.status.message": why})
        self.record(StepResult(step.name, SKIPPED, run_id, error=why))

    # --- executing a step ---------------------------------------------------------------------

    def execute(self, step: Step, run_id: str, tags: dict[str, str]) -> dict[str, Any]:
        """Run the step's notebook into its child run (in a worker thread); the outcome as a Dask
        worker reports it (:func:`.sweep.execute_trial`)."""
        from .runner import Callbacks, RunOptions, run_notebook

        options = RunOptions(progress=False, run_id=run_id, extra_tags=tags)
        result = run_notebook(self.project.root / step.notebook, step.parameters, project=self.project,
                              options=options, callbacks=Callbacks(cancel=self.cancel, warn=self.warn))
        return {"status": result.status, "metrics": dict(result.metrics), "error": result.error,
                "pending": result.spooled}

    def executed(self, step: Step, run_id: str, future, started: float) -> None:
        """Record an executed step: its outputs when it FINISHED (FAILED when one is missing)."""
        seconds = time.monotonic() - started
        try:
            outcome = future.result()
        except Exception as e:  # the step's machinery failed (e.g. its pair went out of sync): it fails alone
            message = " ".join(str(e).split()) or type(e).__name__
            self.end_if_running(run_id, "FAILED", {tracking.REASON: "error", "cd4ml.status.message": message})
            self.record(StepResult(step.name, "FAILED", run_id, error=message, seconds=seconds))
            return
        for line in outcome.get("warnings", ()):
            self.warn(line)
        status, error = outcome["status"], outcome.get("error")
        if outcome.get("pending"):  # the journal ends the run on the server once uploaded
            self.created.remove(run_id)
            status, error = "FAILED", f"its journal is pending in {outcome['pending']} (`cd4ml-nb runs sync`)"
        elif status == "FINISHED":
            outputs = cache.outputs_of(self.project.root, step.outputs)
            missing = [rel for rel, digest in outputs.items() if digest == cache.MISSING]
            if missing:
                status, error = "FAILED", f"the notebook did not write its output(s) {', '.join(missing)}"
                tracking.end_run(self.c, run_id, status, {tracking.REASON: "missing-output",
                                                          "cd4ml.status.message": error})
            else:
                self.c.set_tag(run_id, cache.OUTPUTS, json.dumps(outputs, sort_keys=True))
        self.record(StepResult(step.name, status, run_id, None, dict(outcome.get("metrics") or {}), error, seconds))

    def end_if_running(self, run_id: str, status: str, tags: dict[str, str]) -> None:
        if self.c.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
            tracking.end_run(self.c, run_id, status, tags)

    # --- scheduling ---------------------------------------------------------------------------

    def ready(self, executor, running: dict, pending: list[Step], workers: int) -> bool:
        """Settle what can be settled now (skips, cache hits) and start what can start; True if anything moved."""
        moved = False
        for step in list(pending):
            ended = [self.results.get(n) for n in step.needs]
            failed = [n for n, r in zip(step.needs, ended) if r is not None and r.status != "FINISHED"]
            if failed:
                pending.remove(step)
                self.skip(step, failed)
                moved = True
                continue
            if any(r is None for r in ended):
                continue
            key = cache.key_of(self.project.root, step, self.pipe.inputs_of(step), self.envs.of(step.kernel))
            found = None if self.options.force else cache.find_hit(
                self.project.root, key, cache.candidates(self.c, self.lookup, step.name))
            if found is not None:
                pending.remove(step)
                self.hit(step, key, found)
                moved = True
            elif len(running) < workers:
                pending.remove(step)
                run_id = self.child(step, key.tags())
                future = executor.start(step, run_id, {**self.step_tags(step), **key.tags()})
                running[future] = (step, run_id, time.monotonic())
                if self.on_step is not None:  # a step's start is told too (not recorded: it has not ended)
                    self.on_step(StepResult(step.name, RUNNING, run_id))
                moved = True
        return moved

    def schedule(self) -> None:
        """Run the steps, each once its needs are done, ``parallel`` at most at once."""
        workers = self.options.parallel or os.cpu_count() or 1
        pending = list(self.steps)
        running: dict[Any, tuple[Step, str, float]] = {}
        executor = _Dask(self.project, self.options.dask) if self.options.dask else _Threads(self, workers)
        try:
            while pending or running:
                while self.ready(executor, running, pending, workers):
                    pass
                if not running:
                    break
                for future in executor.done(list(running)):
                    step, run_id, started = running.pop(future)
                    self.executed(step, run_id, future, started)
        except KeyboardInterrupt:
            executor.cancel(list(running))
            for future, (step, run_id, started) in running.items():
                if future.done() and not future.cancelled():
                    self.executed(step, run_id, future, started)
            raise
        finally:
            executor.close()

    def close(self, interrupted: bool) -> str:
        """End the parent with the verdict; no step run stays RUNNING."""
        from .runner import signals_ignored

        with signals_ignored():
            for run_id in self.created:  # a step whose thread did not end, or whose end was not recorded
                self.end_if_running(run_id, "KILLED" if interrupted else "FAILED",
                                    {tracking.REASON: "cancelled" if interrupted else "error"})
            counts = {"executed": sum(r.status == "FINISHED" and not r.cache_hit for r in self.results.values()),
                      "cache_hits": sum(bool(r.cache_hit) for r in self.results.values()),
                      "failed": sum(r.status in ("FAILED", "KILLED") for r in self.results.values()),
                      "skipped": sum(r.status == SKIPPED for r in self.results.values())}
            tags = {f"cd4ml.pipeline.{k}": str(v) for k, v in counts.items()}
            if interrupted:
                status, tags[tracking.REASON] = "KILLED", "interrupted"
            elif counts["failed"] or counts["skipped"]:
                status, tags[tracking.REASON] = "FAILED", "steps-failed"
            else:
                status = "FINISHED"
            tracking.end_run(self.c, self.parent_id, status, tags)
            if self.guard is not None:
                self.guard.release()
        return status


def run_pipeline(pipe: Pipeline, project: Project, options: PipelineOptions = PipelineOptions(), *,
                 on_step: Callable[[StepResult], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> PipelineResult:
    """Run the pipeline's steps (``options.steps`` and what they need, else all), executing only
    those whose cache key has no intact FINISHED run; returns when every step has ended. ``on_step``
    hears of each step as it starts executing (status RUNNING) and as it ends."""
    from .runner import signals_as_interrupts

    run = _PipelineRun(pipe, project, options, on_step, warn or (lambda message: None))
    run.start_parent()
    interrupted = False
    try:
        with signals_as_interrupts():
            run.schedule()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        verdict = run.close(interrupted)
    if interrupted:
        raise Interrupted(f"pipeline cancelled: {len(run.results)} of {len(run.steps)} step(s) ended")
    ordered = tuple(run.results[s.name] for s in run.steps if s.name in run.results)
    return PipelineResult(run.parent_id, run.experiment, verdict, ordered)
