"""What the Lab's pipeline routes do, without tornado: list pipeline runs with their steps, describe
the project's pipeline file, start ``pipeline run`` as a background job.

- **Listing.** A pipeline run is an MLflow run of kind ``pipeline``; its steps are its child runs
  (kind ``step``, ``mlflow.parentRunId``). Each step shows its status (``SKIPPED`` for a step whose
  needs did not finish, ``PENDING`` for one not started yet), the run a cache hit stands for, and
  its duration. Steps come in the pipeline's order (the parent's ``cd4ml.pipeline.steps``).
- **Starting.** A pipeline job is a job of :mod:`.jobs` (queued, limited, cancelled and pruned like
  a notebook's) whose spec has ``kind: pipeline``; its process runs :func:`run_pipeline_job`. The
  pipeline file and every override (``STEP.NAME``: text) are validated before the job is queued: a
  bad one is :class:`.BadInput` naming the file, the step and the parameter, and nothing starts.
- **Boundary.** The pipeline file is confined to the server root (given, or the project's
  ``cd4ml-pipeline.yaml``); notebooks are shown relative to the root.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import history
from .exceptions import BadInput, NoStore, NotFound, TooLarge
from .server_root import ServerRoot, shown

PIPELINE_KIND = "pipeline"  # a job's ``kind`` in its spec
STEPS_TAG = "cd4ml.pipeline.steps"
COUNTS = ("executed", "cache_hits", "failed", "skipped")
MAX_STEPS_PER_PIPELINE = 500
MAX_OVERRIDES = 200
RUN_ID = re.compile(r"[0-9a-f]{32}")


# --- the pipeline file ------------------------------------------------------------------------


def pipeline_path(root: ServerRoot, text: Any = None) -> Path:
    """The pipeline file: ``text`` (relative to the root), else the project's ``cd4ml-pipeline.yaml``,
    confined to the server root (Forbidden outside it, NotFound when missing)."""
    from .pipeline import PIPELINE_FILE

    if text is not None and text != "":
        return root.file(text, "file")
    path = root.project().root / PIPELINE_FILE
    rel = root.inside(path, "pipeline file", hidden=True)
    if not path.is_file():
        raise NotFound(f"{rel}: no pipeline file (write one with a 'steps:' mapping)")
    return path


def _load(root: ServerRoot, text: Any, overrides: dict[str, dict[str, str]] | None = None):
    from . import pipeline

    path = pipeline_path(root, text)
    project = root.project(path)
    return pipeline.load(path, project, overrides), project, path


def _declared(project, step) -> tuple[dict[str, Any], dict[str, str]]:
    """Every parameter the step's notebook declares, with the value the pipeline gives it (else the
    default), and their types: what an override can name."""
    from . import notebooks, params

    contract = params.read_contract(notebooks.read(project.root / step.notebook).node, step.notebook)
    values = {p.name: step.parameters.get(p.name, p.default) for p in contract.parameters}
    return {**values, **step.parameters}, {p.name: p.type for p in contract.parameters}


def describe(root: ServerRoot, text: Any = None) -> dict[str, Any]:
    """The pipeline file's steps: notebook (relative to the root), needs, and every parameter an
    override can name, with its value in the pipeline and its type."""
    pipe, project, path = _load(root, text)
    steps = []
    for s in pipe.steps:
        values, types = _declared(project, s)
        steps.append({"name": s.name, "notebook": root.relative(project.root / s.notebook), "needs": list(s.needs),
                      "parameters": values, "types": types, "outputs": list(s.outputs)})
    return {"file": root.inside(path, "pipeline file", hidden=True), "steps": steps}


def parse_overrides(value: Any) -> dict[str, dict[str, str]]:
    """``{"STEP.NAME": "text", …}`` of a request as ``-p STEP.NAME VALUE`` overrides by step."""
    from . import pipeline

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput("'overrides' must be an object of \"STEP.NAME\": \"value\"")
    if len(value) > MAX_OVERRIDES:
        raise BadInput(f"'overrides' has {len(value)} entries, at most {MAX_OVERRIDES}")
    for target, text in value.items():
        if not isinstance(text, str):
            raise BadInput(f"override {shown(target)}: the value must be a text (as after -p {shown(target)})")
    return pipeline.parse_overrides([[target, text] for target, text in value.items()])


def _step_names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput("'steps' must be a list of step names")
    return tuple(value)


def _check_sizes(texts: dict[str, str] | None, limit: int) -> dict[str, str]:
    """The override texts, each at most ``limit`` bytes (``max_parameter_bytes``)."""
    for target, text in (texts or {}).items():
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise TooLarge(f"override {shown(target)}: its value is {size} bytes, over the limit of {limit} bytes "
                           "(max_parameter_bytes)")
    return dict(texts or {})


def submit(ext, data: dict[str, Any]) -> dict[str, Any]:
    """Validate the pipeline and the overrides (nothing starts on a problem), then queue the job."""
    from . import pipeline

    force = data.get("force", False)
    if not isinstance(force, bool):
        raise BadInput("'force' must be true or false")
    texts = data.get("overrides")
    overrides = parse_overrides(texts)
    path = pipeline_path(ext.root, data.get("file"))
    project = ext.root.project(path)
    texts = _check_sizes(texts, project.config.max_parameter_bytes)
    pipe = pipeline.load(path, project, overrides)
    names = tuple(pipe.step(n).name for n in _step_names(data.get("steps")))
    rel = ext.root.inside(path, "pipeline file", hidden=True)
    job = ext.jobs(project).queue(rel, texts, kind=PIPELINE_KIND, pipeline=str(path), steps=list(names),
                                  force=force, total=len(pipe.selected(names)))
    return {"id": job.id}


# --- listing ----------------------------------------------------------------------------------


def _epoch(millis: int | None) -> float | None:
    """MLflow's milliseconds as epoch seconds (what the other listings give)."""
    return millis / 1000 if millis else None


def _seconds(info, now: float) -> float | None:
    if not info.start_time:
        return None
    end = info.end_time if info.end_time and info.status not in ("RUNNING", "SCHEDULED") else now * 1000
    return max(0.0, (end - info.start_time) / 1000)


def _step_json(root: ServerRoot, project_root: Path, run, now: float) -> dict[str, Any]:
    from . import pipeline_cache, tracking

    tags, info = run.data.tags, run.info
    status = info.status
    if status == "KILLED" and tags.get(tracking.REASON) == "skipped":
        status = "SKIPPED"
    notebook = tags.get(history.SIDE) or tags.get(history.NOTEBOOK)
    error = tags.get("cd4ml.status.message") or tags.get(tracking.FAILED_EVALUE)
    return {"step": tags.get(pipeline_cache.STEP) or info.run_name, "run_id": info.run_id, "status": status,
            "cache_hit": tags.get(pipeline_cache.HIT), "seconds": _seconds(info, now),
            "start_time": _epoch(info.start_time),
            "notebook": root.relative(project_root / notebook) if notebook else None,
            "error": error, "metrics": dict(run.data.metrics)}


def _pipeline_json(root: ServerRoot, project_root: Path, parent, children: list, now: float) -> dict[str, Any]:
    from . import tracking

    tags, info = parent.data.tags, parent.info
    by_name = {}
    for child in children:
        shown_step = _step_json(root, project_root, child, now)
        by_name.setdefault(shown_step["step"], shown_step)  # the newest run of a step name
    order = [n for n in (tags.get(STEPS_TAG) or "").split(",") if n]
    order += [n for n in by_name if n not in order]
    running = info.status in ("RUNNING", "SCHEDULED")
    steps = [by_name.get(n) or {"step": n, "run_id": None, "status": "PENDING" if running else "NOT RUN",
                                "cache_hit": None, "seconds": None, "start_time": None, "notebook": None,
                                "error": None, "metrics": {}} for n in order]
    counts = {k: int(tags[f"cd4ml.pipeline.{k}"]) for k in COUNTS if tags.get(f"cd4ml.pipeline.{k}", "").isdigit()}
    return {"run_id": info.run_id, "experiment": info.experiment_id, "status": info.status,
            "file": tags.get("cd4ml.pipeline.file"), "branch": tags.get(tracking.GIT_BRANCH),
            "commit": tags.get(tracking.GIT_COMMIT), "start_time": _epoch(info.start_time),
            "seconds": _seconds(info, now), "reason": tags.get(tracking.REASON), "counts": counts, "steps": steps}


def list_pipelines(root: ServerRoot, branch: str | None, limit: int) -> dict[str, Any]:
    """The branch's newest pipeline runs (default: the checked-out branch), each with its steps."""
    from . import tracking

    project = root.project()
    experiment = tracking.branch_experiment(project, branch)
    empty = {"experiment": experiment, "pipelines": []}
    try:
        c = tracking.read_client(project)
    except NoStore:
        return empty
    found = c.get_experiment_by_name(experiment)
    if found is None:
        return empty
    ids = [found.experiment_id]
    parents = c.search_runs(ids, filter_string=f"tags.`{history.KIND}` = '{history.PIPELINE}'", max_results=limit,
                            order_by=["attributes.start_time DESC"])
    now = time.time()
    pipelines = []
    for parent in parents:
        run_id = parent.info.run_id
        if not RUN_ID.fullmatch(run_id):  # never pasted into a filter unless it is a run id
            continue
        children = c.search_runs(ids, filter_string=f"tags.`{history.PARENT}` = '{run_id}'",
                                 max_results=MAX_STEPS_PER_PIPELINE, order_by=["attributes.start_time DESC"])
        pipelines.append(_pipeline_json(root, project.root, parent, list(children), now))
    return {"experiment": experiment, "pipelines": pipelines}


# --- the job process --------------------------------------------------------------------------


def _parent_of(project, run_id: str | None) -> str | None:
    from . import tracking

    if not run_id:
        return None
    return tracking.read_client(project).get_run(run_id).data.tags.get(history.PARENT)


def _experiment_id(project, result) -> str:
    """The id of the pipeline's experiment (as a notebook job gives), else its name."""
    from . import tracking

    found = tracking.read_client(project).get_experiment_by_name(result.experiment)
    return found.experiment_id if found is not None else result.experiment


def run_pipeline_job(spec: dict[str, Any], status: dict[str, Any], save) -> tuple[dict[str, Any], int]:
    """A pipeline job (:func:`.jobs.run_job` runs it): one entry in ``steps`` per step that ended,
    ``run_id`` the parent run as soon as a step starts; (final status, exit code)."""
    from . import pipeline, pipeline_run
    from .project import Project

    save(steps=[], done=0, total=spec.get("total", 0))
    project = Project.discover(Path.cwd())

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def on_step(result) -> None:
        parent = status.get("run_id") or _parent_of(project, result.run_id)
        if result.status == pipeline_run.RUNNING:  # told as it starts: the parent is known from the first
            save(run_id=parent)
            return
        status["steps"].append(asdict(result))
        save(done=len(status["steps"]), run_id=parent)

    overrides = pipeline.parse_overrides([[k, v] for k, v in (spec.get("parameters") or {}).items()])
    pipe = pipeline.load(Path(spec["pipeline"]), project, overrides, warn)
    options = pipeline_run.PipelineOptions(tuple(spec.get("steps") or ()), bool(spec.get("force")))
    result = pipeline_run.run_pipeline(pipe, project, options, on_step=on_step, warn=warn)
    failed = [s for s in result.steps if s.status != "FINISHED"]
    state = {"FINISHED": "finished", "KILLED": "killed"}.get(result.status, "failed")
    return {"state": state, "run_id": result.parent_run_id, "experiment": _experiment_id(project, result),
            "steps": [asdict(s) for s in result.steps], "done": len(result.steps),
            "error": "; ".join(f"{s.step}: {s.status}" + (f" ({s.error})" if s.error else "") for s in failed) or None,
            "metrics": {k: v for s in result.steps for k, v in s.metrics.items()}}, result.exit_code
