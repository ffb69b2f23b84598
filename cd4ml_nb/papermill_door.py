"""Papermill's door: ``papermill NB OUT --engine cd4ml`` (and ``execute_notebook(...,
engine_name="cd4ml")``) records the execution as a tracked run, and ``cd4ml-nb run NB [OUT]`` takes
papermill's options with papermill's meanings.

Through papermill's door papermill does everything as usual (its parameterisation, ``cwd``, output
path, exit codes, progress bar, printed traceback); the engine (:class:`Engine`, found by
the entry point ``papermill.engine: cd4ml``) adds what ``cd4ml-nb run`` records: the branch's
experiment, provenance, parameters, metrics, FINISHED / FAILED with the failed cell (the cell's own
exception), KILLED on interrupt, the executed notebook as an artifact. The kernel is set up for
MLflow silently (:mod:`attach`), so the executed notebook is the one papermill writes, cell for cell.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

from . import attach, files, history, notebooks, params, runner, tracking
from .papermill_options import PapermillOptions
from .exceptions import BadInput
from .failures import Failure, classify, kept_cells
from .guard import Guard
from .project import Project

log = logging.getLogger(__name__)

DOOR_TAG = "cd4ml.door"  # "papermill" on runs recorded through papermill's own command or API


def prepare_only(path: str | os.PathLike, values: dict[str, Any] | None, texts: dict[str, str] | None,
                 options: PapermillOptions) -> str:
    """``--prepare-only``: the parameterised notebook written to OUT, nothing executed or recorded."""
    import papermill
    from papermill.iorw import write_ipynb

    if not options.output_path:
        raise BadInput(f"{path}: --prepare-only writes the prepared notebook to OUT: give it (run NOTEBOOK OUT)")
    notebooks.refuse_remote(path)
    nb = notebooks.read(Path(path).resolve())
    typed = params.validate(params.read_contract(nb.node, nb.path), texts, values, where=str(path))
    node = copy.deepcopy(nb.node)
    node.metadata.pop("jupytext", None)
    out = options.output_path.replace("{", "{{").replace("}", "}}")
    prepared = papermill.execute_notebook(
        node, out, parameters={**options.builtin_parameters(str(path), options.output_path), **typed} or None,
        prepare_only=True, kernel_name=options.kernel, report_mode=options.report_mode)
    prepared.metadata.papermill["input_path"] = str(path)
    write_ipynb(prepared, out)
    return options.output_path


class Engine:
    """The ``cd4ml`` engine papermill's entry point names: each execution papermill asks for is
    recorded as a run (one of ``cd4ml-nb run`` itself, with hooks, is not recorded twice). A plain
    class handing over to :class:`engine.Engine` when called: papermill loads its entry points while
    it is first imported, which may be from inside :mod:`engine` itself."""

    @classmethod
    def execute_notebook(cls, nb, kernel_name, **kwargs):
        from .engine import Engine as Proper

        if "cd4ml_hooks" in kwargs:
            return Proper.execute_notebook(nb, kernel_name, **kwargs)
        return tracked(nb, kernel_name, kwargs,
                       lambda hooks: Proper.execute_notebook(nb, kernel_name, cd4ml_hooks=hooks, **kwargs))

    @classmethod
    def nb_kernel_name(cls, nb, name=None):
        from .engine import Engine as Proper

        return Proper.nb_kernel_name(nb, name)

    @classmethod
    def nb_language(cls, nb, language=None):
        from .engine import Engine as Proper

        return Proper.nb_language(nb, language)


def tracked(nb: Any, kernel_name: str, kwargs: dict[str, Any], execute: Callable[[Any], Any]) -> Any:
    """Run papermill's execution ``execute(hooks)`` of ``nb`` as a tracked run and return its result;
    papermill's own errors propagate unchanged once the run has ended."""
    from . import engine

    input_path = kwargs.get("input_path")
    source = Path(input_path) if isinstance(input_path, str) and "://" not in input_path else None
    if source is None or not source.is_file():
        log.warning("cd4ml: the input is not a local notebook file; executing it without tracking")
        return execute(engine.Hooks(cwd=os.getcwd()))
    project = Project.discover(source.resolve().parent)
    src = notebooks.read(source.resolve())
    contract = params.read_contract(src.node, src.path)
    given = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
    git = project.git_info(src.path)
    experiment = tracking.experiment_name(project, git)
    tracking.check_store(project)
    from . import team_server

    team_server.check_access(project.tracking_uri, project.config.health_timeout)  # 401/403: no run
    rel = project.relative(src.path)
    source_text = src.path.read_text(encoding="utf-8")
    out_dir = runner.run_dir(project, src.path.stem)
    executed, handoff = out_dir / f"{src.path.stem}.ipynb", out_dir / ".run.json"
    tags = tracking.provenance_tags(project, git, rel)
    tags.update({**history.run_tags(rel, rel, history.RUN), DOOR_TAG: "papermill",
                 tracking.SOURCE_SHA: hashlib.sha256(source_text.encode("utf-8")).hexdigest(),
                 tracking.OUTPUT_DIR: str(out_dir), tracking.KERNEL: kernel_name})
    recorded, defaults = params.as_run(contract, given)
    recorded.update({k: v for k, v in given.items() if k not in recorded})  # papermill only warns of these
    hooks = engine.Hooks(cwd=os.getcwd(), transport=project.config.kernel_transport,
                         setup=attach.setup_code(str(handoff), runner.HANDOFF_TIMEOUT))
    plan = runner.Planned(experiment, src.path.stem, tags, recorded, defaults, handoff)
    tracker = runner.Tracker(project, plan, None, on_error=hooks.cancel)
    execution = runner.Execution(src, rel, out_dir, executed, source_text, git, given, project.config.html)
    guard = tracker.guard = Guard(project.tracking_uri)
    failure: Failure | None = None
    with runner.signals_as_interrupts():
        try:
            tracker.start()
            done = execute(hooks)
            failure = _outcome(done, executed, hooks, (kept_cells(src.node), contract, bool(given)))
            return done
        except (Exception, KeyboardInterrupt) as e:
            failure = runner.own_error(classify(e, executed, kept_cells(src.node), contract, bool(given),
                                                project.config.iopub_timeout), hooks)
            _keep_output(kwargs.get("output_path"), executed)
            raise
        finally:
            with runner.signals_ignored():
                try:
                    runner.finish(project, tracker, failure, execution, lambda message: log.warning("%s", message))
                except BaseException as e:
                    runner.end_failed(tracker, e)
                    raise
                finally:
                    guard.release()


def _outcome(nb: Any, executed: Path, hooks: Any, mapping: tuple) -> Failure | None:
    """How papermill will judge the executed ``nb`` (it raises after the engine returns): the
    failure, with the executed copy written as papermill writes it (error markers included)."""
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import raise_for_execution_errors
    from papermill.iorw import write_ipynb

    kept, contract, injected = mapping
    try:
        raise_for_execution_errors(copy.deepcopy(nb), str(executed))
    except PapermillExecutionError as e:
        return runner.own_error(classify(e, executed, kept, contract, injected, 0.0), hooks)
    write_ipynb(nb, str(executed))
    return None


def _keep_output(output_path: Any, executed: Path) -> None:
    """The notebook papermill saved as the execution stopped, kept as the run's executed copy."""
    if isinstance(output_path, str) and "://" not in output_path and Path(output_path).is_file():
        files.write_atomic(executed, Path(output_path).read_text(encoding="utf-8"))
