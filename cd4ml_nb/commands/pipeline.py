"""Notebook pipelines: ``pipeline run`` (only what changed executes) and ``pipeline status``."""
from __future__ import annotations

import argparse
import json

from . import project_at, say, warn


def _load(args: argparse.Namespace, overrides=None):
    from .. import pipeline

    path = pipeline.find_file(".", args.file)
    project = project_at(path.parent if path.parent.is_dir() else ".", args.tracking_uri)
    return pipeline.load(path, project, overrides, warn), project


def step_line(result) -> str:
    """One progress line for a step that started executing or ended."""
    run = (result.run_id or "-")[:12]
    if result.status == "RUNNING":
        return f"{result.step}: executing (run {run})"
    if result.cache_hit:
        return f"{result.step}: cache hit (run {run} stands for {result.cache_hit[:12]}), not executed"
    if result.status == "FINISHED":
        return f"{result.step}: executed, FINISHED in {result.seconds:.1f} s (run {run})"
    return f"{result.step}: {result.status} (run {run}): {result.error}"


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from .. import pipeline, pipeline_run

    pipe, project = _load(args, pipeline.parse_overrides(args.param))
    names = tuple(pipe.step(n).name for n in args.steps)
    options = pipeline_run.PipelineOptions(names, args.force, args.parallel, args.dask)
    on_step = None if args.json else (lambda result: say(step_line(result)))
    result = pipeline_run.run_pipeline(pipe, project, options, on_step=on_step, warn=warn)
    if args.json:
        say(json.dumps(result.to_json(), indent=2, default=str))
        return result.exit_code
    hits = sum(bool(s.cache_hit) for s in result.steps)
    say(f"pipeline {result.status}: parent run {result.parent_run_id} in experiment '{result.experiment}' "
        f"({len(result.steps)} step(s): {len(result.steps) - hits} not from the cache, {hits} cache hit(s))")
    return result.exit_code


def cmd_pipeline_status(args: argparse.Namespace) -> int:
    from .. import pipeline_run

    pipe, project = _load(args)
    found = pipeline_run.status(pipe, project)
    if args.json:
        say(json.dumps({"file": pipe.file, "steps": [vars(s) | {"after": list(s.after)} for s in found]}, indent=2))
        return 0
    for s in found:
        if s.up_to_date:
            after = f", unless {', '.join(s.after)} (which run first) write different outputs" if s.after else ""
            say(f"{s.step}: {s.reason}{after}")
        else:
            say(f"{s.step}: would run: {s.reason}")
    stale = [s.step for s in found if not s.up_to_date]
    say(f"{len(found) - len(stale)} of {len(found)} step(s) up to date"
        + (f"; `cd4ml-nb pipeline run` executes {', '.join(stale)}" if stale else ""))
    return 0


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("pipeline", lambda args: args.pipeline_func(args),
            "run a pipeline of notebooks (cd4ml-pipeline.yaml), executing only the steps that changed")
    sub = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run the pipeline's steps (those named and what they need, else all)",
                         description="Run the pipeline: each step a child MLflow run of one parent run; a step "
                         "whose code, parameters, inputs and environment match a FINISHED run with its outputs "
                         "intact is a cache hit and not executed.")
    run.set_defaults(pipeline_func=cmd_pipeline_run)
    run.add_argument("steps", nargs="*", metavar="STEP", help="steps to run (with the steps they need)")
    run.add_argument("--force", action="store_true", help="execute every step, cache or not")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("STEP.NAME", "VALUE"),
                     help="a parameter value of one step, coerced to the declared type (repeatable)")
    run.add_argument("--parallel", type=int, default=0, metavar="N", help="steps at once (default: cores)")
    run.add_argument("--dask", metavar="ADDRESS", help="run the steps on this Dask scheduler (tcp://HOST:PORT); the "
                     "workers must share the project folder and the tracking store")
    status = sub.add_parser("status", help="per step: up to date, or why it would run (runs nothing)",
                            description="Per step: up to date, or why it would run; runs nothing.")
    status.set_defaults(pipeline_func=cmd_pipeline_status)
    for q in (run, status):
        q.add_argument("-f", "--file", metavar="PATH", help="the pipeline file (default: cd4ml-pipeline.yaml at "
                       "the project root)")
        q.add_argument("--tracking-uri", metavar="URI")
        q.add_argument("--json", action="store_true", help="machine-readable output")
