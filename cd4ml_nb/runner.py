"""Run a notebook as a tracked training job: validate, execute a copy with Papermill, track.

The parent process owns the MLflow run. It creates the run in a background thread while
Papermill starts the kernel; a set-up the kernel runs silently before the first cell
(:mod:`attach`: no cell of its own, so the executed notebook is papermill's, cell for cell) makes
it attach to the run when the notebook first imports ``mlflow``, so plain ``mlflow.log_metric(...)``
or ``mlflow.sklearn.autolog()`` in the notebook land in that run, and a notebook that never uses
MLflow never loads it. The parent then logs artifacts and sets the true terminal status. The same
pieces (:class:`Planned`, :class:`Tracker`, :func:`finish`) record papermill's own runs
(``papermill --engine cd4ml``, :mod:`papermill_door`).
"""
from __future__ import annotations

import copy
import logging
import hashlib
import json
import os
import secrets
import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from . import attach, files, history, kernels, notebooks, pairing, params, spool, tracking
from .failures import Failure, Terminated, classify, kept_cells, with_kernel_words
from .guard import Guard
from .exceptions import Cd4mlError, TrackingError
from .project import Project

log = logging.getLogger(__name__)

INJECTED_TAG = "cd4ml-injected"  # the set-up cell of older versions (still hidden in HTML)
HANDOFF_TIMEOUT = 300.0
KERNEL_LOG = "kernel.log"  # the kernel's stderr, in the run's folder (kept off the user's terminal)

@dataclass(frozen=True)
class RunResult:
    """What a run produced; ``status`` is the MLflow terminal status."""

    run_id: str | None
    status: str  # FINISHED, FAILED or KILLED
    experiment: str
    experiment_id: str | None
    notebook: str
    output_dir: Path
    executed: Path | None
    html: Path | None
    tracking_uri: str
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    failed_cell: int | None = None
    git_branch: str | None = None
    git_commit: str | None = None
    spooled: str | None = None  # a spool folder waiting for `cd4ml-nb runs sync`
    traceback: str | None = None  # the failing cell's traceback, as papermill prints it

    @property
    def exit_code(self) -> int:
        return {"FINISHED": 0, "KILLED": 130}.get(self.status, 1)

    def to_json(self) -> dict:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("output_dir", "executed", "html"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    """How a notebook runs, besides the notebook and its values: where it is tracked, what it leaves."""

    tracking_uri: str | None = None  # another store than the project's
    experiment: str | None = None  # another experiment than the branch's
    timeout: float | None = None  # seconds each cell may run (default: cell_timeout)
    html: bool | None = None  # render and log an HTML copy (default: html in the config)
    progress: bool = True  # a progress bar over the cells
    extra_tags: Mapping[str, str] = field(default_factory=dict)  # e.g. cd4ml.kind (run by default)
    run_id: str | None = None  # a run created beforehand (a sweep trial) to use instead of a new one
    output_root: Path | None = None  # folder of the per-run folders (default: <state_dir>/runs)
    papermill: Any = None  # papermill's own options (:class:`papermill_options.PapermillOptions`)


@dataclass(frozen=True)
class Callbacks:
    """What a run tells its caller as it goes, and how the caller stops it."""

    warn: Callable[[str], None] | None = None  # default: warnings.warn
    on_progress: ProgressCallback | None = None  # (cells done, total) as the notebook executes
    on_started: Callable[[str, str], None] | None = None  # (run id, experiment id) once the run exists
    cancel: threading.Event | None = None  # set from another thread: the kernel stops, the run ends KILLED


@dataclass(frozen=True)
class Planned:
    """The MLflow run to create (or adopt) for an execution."""

    experiment: str
    name: str
    tags: dict[str, Any]
    values: dict[str, Any]  # every value the notebook runs with, as recorded
    defaults: tuple[str, ...]  # those left at the notebook's defaults
    handoff: Path  # where the kernel finds the run id
    existing_run: str | None = None


@dataclass(frozen=True)
class Execution:
    """What finishing a run needs to know of its execution."""

    nb: notebooks.Notebook
    notebook: str  # its canonical name
    out_dir: Path
    executed: Path
    source_text: str
    git: Any  # gitinfo.GitInfo or None
    values: dict[str, Any]
    html: bool


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated` while a run executes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise Terminated()

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while the run is being finalised, so it is never left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


class Tracker(threading.Thread):
    """Creates the MLflow run while the kernel starts, then hands it to the kernel."""

    def __init__(self, project: Project, plan: Planned, on_started: Callable[[str, str], None] | None = None,
                 on_error: Callable[[], None] | None = None):
        super().__init__(name="cd4ml-tracker", daemon=True)
        self.on_error = on_error  # stops the kernel: a run that cannot be tracked does not run on
        self.guard = None  # a guard.Guard told the run id once the run exists
        self.project, self.plan, self.on_started = project, plan, on_started
        self.client = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.spool = None  # a spool.Spool when the kernel logs locally (tracking server)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.client = tracking.run_client(self.project)
            plan = self.plan
            if plan.existing_run:
                run = tracking.adopt_run(self.client, plan.existing_run, plan.tags, plan.values, plan.defaults)
                self.experiment_id = run.info.experiment_id
            else:
                self.experiment_id = tracking.ensure_experiment(self.client, self.project, plan.experiment)
                run = tracking.create_run(self.client, self.experiment_id, plan.name, plan.tags, plan.values,
                                          plan.defaults)
            self.run_id = run.info.run_id
            if self.guard is not None:
                self.guard.add(self.run_id)
            payload = {"run_id": self.run_id, "experiment_id": self.experiment_id,
                       "tracking_uri": self.project.tracking_uri}
            if spool.uses_spool(self.project):  # the kernel logs into a journal forwarded live to the server
                self.spool = spool.create(self.project, self.client.get_run(self.run_id), self.plan.experiment)
                payload = {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.spool.uri}
        except BaseException as e:  # reported to the kernel and re-raised in the main thread
            self.error = e
            payload = {"error": str(e).splitlines()[0] if str(e) else type(e).__name__}
        files.write_atomic(self.plan.handoff, json.dumps(payload))
        if self.error is not None and self.on_error is not None:
            self.on_error()
        if self.error is None and self.on_started is not None:
            self.on_started(self.run_id, self.experiment_id)
        if self.error is None:  # warm up what finalising needs while the notebook runs
            from .axes import environment

            environment(self.plan.tags.get(tracking.KERNEL))
            try:
                import nbconvert  # noqa: F401
            except ImportError:
                pass


def _render_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter()
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={INJECTED_TAG}), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def run_dir(project: Project, stem: str, output_root: Path | None = None) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = output_root or project.ensure_state_dir() / "runs"
    path = root / f"{stamp}-{stem}-{secrets.token_hex(2)}"
    path.mkdir(parents=True)
    return path


def run_notebook(
    path: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    *,
    parameter_texts: dict[str, str] | None = None,
    project: Project | None = None,
    options: RunOptions = RunOptions(),
    callbacks: Callbacks = Callbacks(),
) -> RunResult:
    """Execute a notebook (``.ipynb`` or its paired ``.py``) as a tracked MLflow run.

    Parameters
    ----------
    path : the notebook; either side of a pair (refused, OutOfSync, when the two sides differ).
    parameters : typed values (as from YAML/JSON), checked against the notebook's contract.
    parameter_texts : command-line strings, coerced to the declared types.
    project : the project (default: discovered from the notebook's folder).
    options : where the run is tracked and what it leaves (:class:`RunOptions`).
    callbacks : progress, warnings and cancellation (:class:`Callbacks`).

    Returns the :class:`RunResult`; a run that failed is a result with status FAILED, not an
    exception. Bad input raises :class:`BadInput` before any kernel starts or run is created.
    """
    warn = callbacks.warn or (lambda message: warnings.warn(message, stacklevel=2))
    cancel = callbacks.cancel
    notebooks.refuse_remote(path)
    path = Path(path)
    if project is None:
        project = Project.discover(path if path.exists() else Path.cwd(), tracking_uri=options.tracking_uri)
    nb = notebooks.read(path.resolve())
    pair = pairing.find_pair(nb.path, project, node=nb.node)
    pairing.ensure_in_sync(pair, project, nb.path)
    contract = params.read_contract(nb.node, nb.path)
    values = params.validate(contract, parameter_texts, parameters, where=str(path))
    from .papermill_options import PapermillOptions

    pm = options.papermill or PapermillOptions()
    kernel = kernels.kernel_name(project, nb, warn, pm.kernel)
    git = project.git_info(nb.path)
    if git is None:
        warn(f"{nb.path} is not in a git repository: the run gets no branch or commit tags")
    elif git.commit is None:
        warn(f"{git.root}: no commit yet: the run gets no commit tag")
    experiment = options.experiment or tracking.experiment_name(project, git)
    tracking.check_store(project)
    from . import team_server

    team_server.check_access(project.tracking_uri, project.config.health_timeout)  # 401/403: exit 2, no run

    import papermill

    from . import engine

    rel = project.relative(pair.ipynb if pair is not None else nb.path)  # one name for both sides
    source_text = nb.path.read_text(encoding="utf-8") if not nb.is_ipynb else notebooks.text_of(nb.node)
    out_dir = run_dir(project, nb.path.stem, options.output_root)
    executed = out_dir / f"{nb.path.stem}.ipynb"
    handoff = out_dir / ".run.json"
    tags = tracking.provenance_tags(project, git, rel)
    tags.update({
        **history.run_tags(rel, project.relative(nb.path), history.RUN),
        tracking.SOURCE_SHA: hashlib.sha256(source_text.encode("utf-8")).hexdigest(),
        tracking.OUTPUT_DIR: str(out_dir),
        tracking.KERNEL: kernel,
        **options.extra_tags,
    })
    recorded, defaults = params.as_run(contract, values)
    hooks = engine.Hooks(cwd=str(Path(pm.cwd).resolve()) if pm.cwd else str(nb.path.parent),
                         on_progress=callbacks.on_progress, kernel_log=str(out_dir / KERNEL_LOG),
                         transport=project.config.kernel_transport,
                         setup=attach.setup_code(str(handoff), HANDOFF_TIMEOUT),
                         papermill_paths=(str(path), pm.output_path or str(executed)))
    plan = Planned(experiment, nb.path.stem, tags, recorded, defaults, handoff, options.run_id)
    tracker = Tracker(project, plan, callbacks.on_started, on_error=hooks.cancel)
    execution = Execution(nb, rel, out_dir, executed, source_text, git, values,
                           options.html if options.html is not None else project.config.html)

    run_copy = copy.deepcopy(nb.node)
    run_copy.metadata.pop("jupytext", None)  # the executed copy is not one side of a pair
    if not run_copy.metadata.get("kernelspec"):
        run_copy.metadata["kernelspec"] = kernels.default_kernelspec()
    injected = {**pm.builtin_parameters(str(path), pm.output_path or str(executed)), **values}

    failure: Failure | None = None
    trace: str | None = None
    cell_timeout = options.timeout if options.timeout is not None else (project.config.cell_timeout or None)
    finished = threading.Event()
    if cancel is not None:
        threading.Thread(target=_cancel_when, args=(cancel, finished, hooks), daemon=True).start()
    guard = tracker.guard = Guard(project.tracking_uri) if options.run_id is None else None  # a sweep guards its own
    with signals_as_interrupts():
        try:
            tracker.start()
            papermill.execute_notebook(
                run_copy,
                str(executed).replace("{", "{{").replace("}", "}}"),  # papermill formats paths
                parameters=injected or None,
                kernel_name=kernel,
                engine_name=engine.ensure_registered(),
                progress_bar=options.progress,
                execution_timeout=cell_timeout,
                start_timeout=pm.start_timeout or project.config.kernel_start_timeout,
                iopub_timeout=project.config.iopub_timeout,
                cd4ml_hooks=hooks,
                **pm.engine_arguments(),
            )
        except (Exception, KeyboardInterrupt) as e:
            failure = own_error(classify(e, executed, kept_cells(nb.node), contract, bool(injected),
                                         project.config.iopub_timeout), hooks)
            trace = failure_traceback(e)
            if failure.reason in ("kernel-start", "kernel-died"):
                failure = with_kernel_words(failure, out_dir / KERNEL_LOG)
            if cancel is not None and cancel.is_set():
                failure = Failure("KILLED", "cancelled", "cancelled", failure.cell)
        finally:
            finished.set()
            with signals_ignored():
                try:
                    if pm.output_path:
                        pm.write_output(executed)
                    result = replace(finish(project, tracker, failure, execution, warn), traceback=trace)
                except BaseException as e:  # finalising failed: the run still ends
                    end_failed(tracker, e)
                    raise
                finally:
                    if guard is not None:
                        guard.release()
    return result


def own_error(failure: Failure, hooks) -> Failure:
    """``failure`` with the failing cell's own exception (IPython's ``UsageError`` of a line magic,
    where papermill says ``CellExecutionError`` with no value), as the kernel reported it."""
    error = hooks.cell_error
    if failure.reason != "cell-exception" or not error or not error.get("ename"):
        return failure
    ename, evalue = error["ename"], error.get("evalue") or ""
    return replace(failure, ename=ename, evalue=evalue, message=f"cell index {failure.cell} raised {ename}: {evalue}")


def failure_traceback(error: BaseException) -> str | None:
    """The failing cell's traceback as papermill prints it (None for other failures)."""
    from papermill.exceptions import PapermillExecutionError

    return str(error) if isinstance(error, PapermillExecutionError) else None


def _cancel_when(cancel: threading.Event, finished: threading.Event, hooks) -> None:
    """Stop the kernel when ``cancel`` is set before the run finishes."""
    while not finished.is_set():
        if cancel.wait(0.2):
            hooks.cancel()
            return


def end_failed(tracker: Tracker, error: BaseException) -> None:
    """End the run FAILED after an error while finalising it (if it exists and is still RUNNING)."""
    if tracker.client is None or tracker.run_id is None:
        return
    try:
        if tracker.client.get_run(tracker.run_id).info.status in ("RUNNING", "SCHEDULED"):
            tracking.end_run(tracker.client, tracker.run_id, "FAILED", {
                tracking.REASON: "error", "cd4ml.status.message": f"{type(error).__name__}: {error}"})
    except Exception as e:  # the store itself is unreachable: the guard or reconcile_orphans ends it
        log.warning("run %s could not be ended FAILED (%s); the guard or `cd4ml-nb runs` will end it",
                    tracker.run_id, e)


def _upload_spool(sp, project: Project, status: str, end_tags: dict, warn) -> str | None:
    """End a journaled run: the rest of its journal, its artifacts, its status; the journal folder
    when the server does not answer (it stays for `cd4ml-nb runs sync`)."""
    try:
        if spool.finish(sp, status, end_tags, project.config.health_timeout, warn):
            return None
    except Exception as e:  # an unexpected answer: the journal keeps everything
        warn(f"upload to {project.tracking_uri} failed: {e}")
    warn(f"the tracking server {project.tracking_uri} is unreachable: this run's results are journaled in "
         f"{sp.folder}; upload them with `cd4ml-nb runs sync`")
    return str(sp.folder)


def finish(project: Project, tracker: Tracker, failure: Failure | None, run: Execution,
            warn: Callable[[str], None]) -> RunResult:
    """Log artifacts and set the terminal status; runs with signals ignored."""
    nb, out_dir, executed, git = run.nb, run.out_dir, run.executed, run.git
    tracker.join()
    handoff = out_dir / ".run.json"
    if handoff.exists():
        handoff.unlink()
    if tracker.error is not None:
        error = tracker.error
        if isinstance(error, Cd4mlError):
            raise error
        raise TrackingError(f"MLflow: {error}") from error
    server, server_run = tracker.client, tracker.run_id
    c, run_id = (spool.spool_client(tracker.spool), tracker.spool.run_id) if tracker.spool else (server, server_run)
    status = failure.status if failure else "FINISHED"
    html_path = None
    end_tags: dict[str, Any] = {}
    try:
        artifacts = []
        if executed.exists():
            artifacts.append(executed)
            if run.html:
                try:
                    html_path = _render_html(executed)
                    artifacts.append(html_path)
                except Exception as e:  # a render problem must not lose the run
                    warn(f"HTML render failed: {e}")
        source_copy = out_dir / f"{nb.path.stem}.source.py"
        source_copy.write_text(run.source_text, encoding="utf-8")
        artifacts.append(source_copy)
        if git is not None and git.dirty:
            patch = out_dir / "uncommitted.diff"
            patch.write_text(git.diff, encoding="utf-8")
            artifacts.append(patch)
        for artifact in artifacts:
            c.log_artifact(run_id, str(artifact))
    except Exception as e:
        warn(f"could not log artifacts: {e}")
        end_tags["cd4ml.artifacts.error"] = str(e)
    try:  # the environment and model axes (cd4ml-nb diff / reproduce)
        from .axes import record_axes

        end_tags.update(record_axes(c, run_id, out_dir, tracker.plan.tags.get(tracking.KERNEL)))
    except Exception as e:
        warn(f"could not record the environment and model hash: {e}")
    if failure:
        end_tags.update({
            tracking.REASON: failure.reason,
            "cd4ml.status.message": failure.message,
            tracking.FAILED_CELL: failure.cell,
            tracking.FAILED_ENAME: failure.ename,
            tracking.FAILED_EVALUE: failure.evalue,
        })
    metrics = dict(c.get_run(run_id).data.metrics)
    spooled = None
    if tracker.spool is None:
        tracking.end_run(c, run_id, status, end_tags)
    else:
        spooled = _upload_spool(tracker.spool, project, status, end_tags, warn)
    return RunResult(
        run_id=server_run,
        spooled=spooled,
        status=status,
        experiment=tracker.plan.experiment,
        experiment_id=tracker.experiment_id,
        notebook=run.notebook,
        output_dir=out_dir,
        executed=executed if executed.exists() else None,
        html=html_path,
        tracking_uri=project.tracking_uri,
        parameters=run.values,
        metrics=metrics,
        reason=failure.reason if failure else None,
        error=failure.message if failure else None,
        failed_cell=failure.cell if failure else None,
        git_branch=git.branch if git else None,
        git_commit=git.commit if git else None,
    )
