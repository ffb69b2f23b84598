"""Running notebooks: run, runs, sweep, and gc of what runs leave behind."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Sequence

from ..exceptions import BadInput, TrackingError
from . import parameter_texts, project_at, say, table, warn

def sync_first(paths: Sequence[str | Path], tracking_uri: str | None = None) -> None:
    """``--sync``: bring the pairs of the notebooks about to run in sync (PairConflict, writing
    nothing, when both sides changed)."""
    from .. import pairing

    for raw in paths:
        path = Path(raw).resolve()
        project = project_at(path, tracking_uri)
        before = path.read_bytes() if path.is_file() else None
        pairing.ensure_in_sync(pairing.find_pair(path, project), project, path, sync=True)
        if path.is_file() and path.read_bytes() != before:
            print(f"cd4ml-nb: synced {project.relative(path)} from the other side of its pair", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from .. import papermill_door, papermill_options
    from ..runner import Callbacks, RunOptions, run_notebook

    if args.sync:
        sync_first([args.notebook], args.tracking_uri)
    values = papermill_options.given_values(args.file, args.parameters_yaml, args.parameters_base64, args.parameters_raw)
    with _papermill_options(args) as pm:
        if args.prepare_only:
            out = papermill_door.prepare_only(args.notebook, values, parameter_texts(args.param), pm)
            say(f"prepared {out} (not executed, no run recorded)")
            return 0
        result = run_notebook(
            args.notebook,
            values,
            parameter_texts=parameter_texts(args.param),
            options=RunOptions(tracking_uri=args.tracking_uri, experiment=args.experiment, timeout=args.timeout,
                               html=False if args.no_html else None,
                               progress=not (args.quiet or args.no_progress_bar), papermill=pm),
            callbacks=Callbacks(warn=warn),
        )
    if args.json:
        say(json.dumps(result.to_json(), indent=2, default=str))
        return result.exit_code
    mark = {"FINISHED": "finished", "FAILED": "FAILED", "KILLED": "KILLED"}[result.status]
    if result.spooled:  # the server does not hold the end yet: say so, not only what the notebook did
        mark = (f"ended {result.status} here but not yet on the server (RUNNING there until `cd4ml-nb runs sync` "
                f"uploads {result.spooled})")
    say(f"run {result.run_id} {mark} in experiment '{result.experiment}' ({result.tracking_uri})")
    if result.error:
        say(f"reason: {result.reason}: {result.error}")
    if result.traceback and not args.quiet:  # the failing cell's traceback, as papermill prints it
        say(result.traceback if sys.stdout.isatty() else re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", result.traceback))
    if result.metrics:
        say("metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.metrics.items())))
    else:
        say("metrics: none logged (call mlflow.log_metric(...) in the notebook)")
    if result.parameters:
        say("parameters: " + ", ".join(f"{k}={v!r}" for k, v in result.parameters.items()))
    if result.executed:
        say(f"executed notebook: {result.executed}")
    if result.html:
        say(f"html: {result.html}")
    say("next: `cd4ml-nb runs` lists this branch's runs; `cd4ml-nb ui` opens the MLflow UI")
    return result.exit_code


@contextmanager
def _papermill_options(args: argparse.Namespace):
    """papermill's options of ``run``, its ``--stdout-file``/``--stderr-file`` open while it runs."""
    from ..papermill_options import PapermillOptions

    with ExitStack() as stack:
        out, err = (stack.enter_context(open(f, "w", encoding="utf-8")) if f else None
                    for f in (args.stdout_file, args.stderr_file))
        yield PapermillOptions(
            output_path=args.output, kernel=args.kernel, cwd=args.cwd, log_output=args.log_output,
            stdout_file=out, stderr_file=err, report_mode=args.report_mode, start_timeout=args.start_timeout,
            autosave_cell_every=args.autosave_cell_every, inject_input_path=args.inject_input_path or args.inject_paths,
            inject_output_path=args.inject_output_path or args.inject_paths)


def cmd_runs(args: argparse.Namespace) -> int:
    from .. import history, tracking
    from ..compare import notebook_id

    project = project_at(".", args.tracking_uri)
    from .. import spool

    if args.action == "sync":
        if args.wait:
            say("waiting until every journal is on its tracking server (Ctrl-C stops waiting)")
        uploaded, left = spool.sync(project, wait=args.wait, on_error=warn)
        say(f"uploaded {uploaded} journaled run(s); {left} still pending"
             + (" (the tracking server is unreachable, or a runner still holds them)" if left else ""))
        return 1 if left else 0
    experiment = tracking.branch_experiment(project, args.branch)
    notebook = notebook_id(project, args.notebook) if args.notebook else None
    kind = history.parse_kind(args.kind) if args.kind else None
    pending = spool.pending(project)
    for p in [] if args.json else pending:  # shown before the server is asked: it may be down
        state = "running" if p.live else f"ended {p.ended}" if p.ended else "runner gone"
        if not p.uploaded:
            say(f"pending: run {p.run_id[:12]} ({state}): {max(p.bytes_pending, 0)} journal bytes and "
                f"{max(p.artifacts_pending, 0)} artifact(s) not yet on {p.server_uri}; `cd4ml-nb runs sync` "
                "uploads them")
        if p.refused:
            say(f"refused: run {p.run_id[:12]}: {p.server_uri} refused {len(p.refused)} record(s), kept in "
                f"{p.folder / 'refused.jsonl'} (first: {p.refused[0]['error']}); delete the folder once handled")
    if args.json:
        from dataclasses import asdict

        data: dict = {"experiment": experiment, "pending": [{**asdict(p), "folder": str(p.folder)} for p in pending]}
        try:
            tracking.reconcile_orphans(project, experiment)
            data["runs"] = [asdict(r) for r in tracking.runs_page(project, experiment, notebook, args.limit,
                                                                  kind=kind).runs]
        except TrackingError as e:  # the server is down: the pending journals are still worth showing
            data.update(runs=[], error=str(e).splitlines()[0])
        say(json.dumps(data, indent=2))
        return 1 if "error" in data else 0
    tracking.reconcile_orphans(project, experiment)
    runs = tracking.runs_page(project, experiment, notebook, args.limit, kind=kind).runs
    if not runs:
        which = " ".join(filter(None, [f"of kind {kind}" if kind else "", f"of {notebook}" if notebook else ""]))
        say(f"no runs {which + ' ' if which else ''}in experiment '{experiment}' yet; "
             "start one with `cd4ml-nb run NOTEBOOK`")
        return 0
    say(f"experiment '{experiment}' ({project.tracking_uri}), newest first:")
    rows = []
    for r in runs:
        started = datetime.fromtimestamp(r.start_time).strftime("%Y-%m-%d %H:%M:%S") if r.start_time else "-"
        kind_text = f"{r.kind} of {r.parent_run_id[:8]}" if r.parent_run_id else r.kind
        rows.append((started, r.status, kind_text, r.run_id[:12], r.notebook or "-",
                     " ".join(f"{k}={v}" for k, v in sorted(r.params.items())),
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())), r.why()))
    table(["started", "status", "kind", "run", "notebook", "params", "metrics", "why"], rows)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .. import notebooks, params, study, sweep

    project = project_at(Path(args.notebook) if Path(args.notebook).exists() else ".", args.tracking_uri)
    if args.sync:
        sync_first([args.notebook], args.tracking_uri)
    nb = notebooks.read(Path(args.notebook).resolve())
    contract = params.read_contract(nb.node, args.notebook)
    spec = params.load_values_file(Path(args.file)) if args.file else {}
    grid = {}
    for item in args.grid or []:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise BadInput(f"--grid {item!r}: use NAME=V1,V2,...")
        grid[name] = values.split(",")
    metric = args.metric or spec.get("metric")
    goal = args.goal or spec.get("goal", "")
    where_file = args.file or args.notebook
    search = None
    if "search" in spec or args.resume:
        if grid or "search" not in spec:
            raise BadInput(f"{where_file}: --resume continues a study: give the sweep file with its 'search' "
                           "(and no --grid)")
        fixed = params.validate(contract, parameter_texts(args.param), spec.get("parameters") or {},
                                where=where_file)
        search = study.parse({**spec, "metric": metric, "goal": goal}, contract, where_file, fixed)
    planned = sweep.plan(contract, args.notebook, grid, parameter_texts(args.param),
                         {k: v for k, v in spec.items() if k != "search"}) if search is None else None
    trials = list(planned.trials) if planned is not None else []
    parallel = args.parallel or int(spec.get("parallel", 0))
    max_failures = args.max_failures if args.max_failures is not None else spec.get("max_failures")
    where = f"Dask at {args.dask}" if args.dask else f"{parallel or os.cpu_count()} local worker(s)"
    dropped = (f" ({planned.duplicates} duplicate(s) dropped: trials with the same values run once)"
               if planned is not None and planned.duplicates else "")
    source = trials
    if search is not None:
        git = project.git_info(nb.path)
        scope = study.Scope(project.relative(nb.path), (git.branch if git else None) or "", fixed, where_file)
        source = study.StudySource(project, search, scope, resume=args.resume)
        dropped = f" ({search.method} study {source.name}{', resumed' if args.resume else ''})"
    total = len(trials) if search is None else source.total
    if not args.json:  # with --json, stdout is the JSON document alone
        say(f"sweep of {nb.path.name}: {total} trial(s){dropped} on {where}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="trial", desc="Trials")

    def on_trial(result, done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)
            if result.status != "FINISHED" and not result.pruned:
                bar.write(f"trial {result.trial.index} {result.status}: {result.error}")

    try:
        options = sweep.SweepOptions(parallel, args.dask, metric, goal, max_failures)
        result = sweep.run_sweep(nb.path, source, project=project, options=options, on_trial=on_trial)
    finally:
        if bar is not None:
            bar.close()
    told: dict[str, int] = {}  # what the trials' runs warned about, each message once
    for r in result.results:
        for message in r.warnings:
            told[message] = told.get(message, 0) + 1
    for message, count in told.items():
        warn(f"{message}" + (f" ({count} trials)" if count > 1 else ""))
    if args.json:
        from dataclasses import asdict

        say(json.dumps({"parent_run_id": result.parent_run_id, "experiment": result.experiment,
                         "best": asdict(result.best) if result.best else None,
                         "trials": [asdict(r) for r in result.ranked()], "peak_rss_mb": result.peak_rss_mb},
                        indent=2, default=str))
        return result.exit_code
    names = contract.names()
    varied = [n for n in names if len({json.dumps(r.trial.values.get(n), default=str) for r in result.results}) > 1]
    metrics = sorted({m for r in result.results for m in r.metrics})
    rows = [(r.trial.index, r.status, r.run_id[:12], *(r.trial.values.get(n, "") for n in varied),
             *(f"{r.metrics[m]:.4g}" if m in r.metrics else "-" for m in metrics)) for r in result.ranked()]
    say(f"\nparent run {result.parent_run_id} in experiment '{result.experiment}'"
         + (f", trials sorted by {result.metric} ({result.goal})" if result.metric else ""))
    table(["trial", "status", "run", *varied, *metrics], rows)
    if result.best and result.metric:
        b = result.best
        say(f"best: trial {b.trial.index} ({', '.join(f'{k}={v!r}' for k, v in b.trial.values.items())}) "
             f"{result.metric}={b.metrics[result.metric]:.6g}, run {b.run_id}")
    if result.pruned:
        say(f"pruned: {len(result.pruned)} trial(s) stopped early by the pruner (runs KILLED, "
            "cd4ml.trial.state=pruned)")
    for r in result.failed:
        say(f"trial {r.trial.index} {r.status}: {r.error} (run {r.run_id})")
    say(f"peak memory of this process: {result.peak_rss_mb:.0f} MB")
    return result.exit_code


def cmd_gc(args: argparse.Namespace) -> int:
    """Prune ended Lab jobs (with their run folders) and the CLI's run folders; MLflow keeps the runs."""
    from ..cleanup import prune_runs, prune_socket_folders
    from ..jobs import JobManager

    project = project_at(".")
    keep = project.config.job_retention_count if args.keep is None else args.keep
    days = project.config.job_retention_days if args.days is None else args.days
    removed = JobManager(project).prune(keep, days, dry_run=args.dry_run)
    removed += prune_runs(project, keep, days, dry_run=args.dry_run)
    removed += prune_socket_folders(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"

    def size(n: int) -> str:
        return next((f"{n / f:.1f} {u}" for f, u in ((2**30, "GB"), (2**20, "MB"), (2**10, "kB")) if n >= f),
                    f"{n} B")

    kinds = {"job": "job", "run": "run folder", "socket": "kernel socket folder"}
    for r in removed:
        where = ", ".join(project.relative(p) for p in r.paths)
        say(f"{verb} {kinds[r.kind]} {r.name} ({r.detail}): {where}: {size(r.bytes)}")
    count = {kind: sum(r.kind == kind for r in removed) for kind in kinds}
    say(f"{verb} {count['job']} job(s) and {count['run']} run folder(s), "
         f"{'would free' if args.dry_run else 'freed'} {size(sum(r.bytes for r in removed))} "
         f"(kept: queued and running jobs, the newest {keep} ended, "
         f"{f'none older than {days:g} days' if days else 'no age limit'}; MLflow runs untouched)")
    say(f"{verb} {count['socket']} kernel socket folder(s) of ended processes (kept: those of live ones)")
    return 0


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("run", cmd_run, "execute a notebook with Papermill as a tracked MLflow run (papermill's options too)")
    p.add_argument("notebook", metavar="NOTEBOOK", help=".ipynb or its paired .py")
    p.add_argument("output", nargs="?", metavar="OUT", help="also write the executed notebook here, as papermill "
                   "does ('-': standard output); the run's folder keeps its copy too")
    p.add_argument("-p", "--param", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter value, read as papermill reads it, then converted to the declared type "
                   "(repeatable)")
    p.add_argument("-r", "--parameters_raw", "--parameters-raw", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter value as text (repeatable)")
    p.add_argument("-y", "--parameters_yaml", "--parameters-yaml", action="append", metavar="YAML",
                   help="parameter values as a YAML mapping (repeatable)")
    p.add_argument("-b", "--parameters_base64", "--parameters-base64", action="append", metavar="BASE64",
                   help="parameter values as a base64-encoded YAML mapping (repeatable)")
    p.add_argument("-f", "--file", "--parameters_file", "--parameters-file", metavar="PARAMS.yaml",
                   help="parameter values from a YAML/JSON file")
    p.add_argument("-k", "--kernel", metavar="NAME", help="the kernel to run on (default: the notebook's)")
    p.add_argument("--cwd", metavar="DIR", help="the kernel's working directory (default: the notebook's folder)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: embedded store)")
    p.add_argument("--experiment", metavar="NAME", help="experiment name (default: the git branch)")
    p.add_argument("--timeout", "--execution-timeout", type=float, metavar="SECONDS", help="seconds each cell may run")
    p.add_argument("--start-timeout", type=float, metavar="SECONDS", help="seconds the kernel may take to start")
    p.add_argument("--log-output", action="store_true", help="write the cells' output to the log, as papermill does")
    p.add_argument("--stdout-file", metavar="FILE", help="also write the cells' standard output to FILE")
    p.add_argument("--stderr-file", metavar="FILE", help="also write the cells' standard error to FILE")
    p.add_argument("--report-mode", action="store_true", help="hide input cells in the executed notebook")
    p.add_argument("--no-report-mode", dest="report_mode", action="store_false")
    p.add_argument("--prepare-only", action="store_true", help="only write the parameterised notebook to OUT "
                   "(no kernel, no run)")
    p.add_argument("--prepare-execute", dest="prepare_only", action="store_false")
    p.add_argument("--inject-paths", action="store_true", help="PAPERMILL_INPUT_PATH and PAPERMILL_OUTPUT_PATH as "
                   "parameters")
    p.add_argument("--inject-input-path", action="store_true", help="PAPERMILL_INPUT_PATH as a parameter")
    p.add_argument("--inject-output-path", action="store_true", help="PAPERMILL_OUTPUT_PATH as a parameter")
    p.add_argument("--autosave-cell-every", type=int, default=30, metavar="SECONDS",
                   help="save the executed notebook at most this often during a long cell (0: never)")
    p.add_argument("--progress-bar", dest="no_progress_bar", action="store_false")
    p.add_argument("--no-progress-bar", action="store_true", help="no progress bar")
    p.add_argument("--no-html", action="store_true", help="do not render and log an HTML copy")
    p.add_argument("--sync", action="store_true", help="sync the notebook's pair first when its sides differ "
                   "(without it such a run is refused)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no traceback of a failed cell")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("runs", cmd_runs, "list this branch's runs, newest first, and journals not yet on the tracking "
            "server; `runs sync` uploads them")
    p.add_argument("action", nargs="?", choices=["list", "sync"], default="list")
    p.add_argument("--wait", action="store_true", help="sync: block until every journal is uploaded")
    p.add_argument("--branch", metavar="B", help="another branch's experiment")
    p.add_argument("--notebook", metavar="PATH", help="only runs of this notebook (either side of its pair)")
    p.add_argument("--kind", metavar="KIND", help="only runs of this kind (run, trial, sweep, test, ci, ...)")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("gc", cmd_gc, "remove ended Lab jobs and old run folders (the MLflow runs stay)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--keep", type=int, metavar="N", help="ended jobs and run folders kept (default: "
                   "job_retention_count)")
    p.add_argument("--days", type=float, metavar="D", help="remove those older than D days, 0: no age limit "
                   "(default: job_retention_days)")

    p = add("sweep", cmd_sweep, "run a grid/random sweep of a notebook's parameters, locally or on Dask")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,...", help="values to try (repeatable)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a fixed value")
    p.add_argument("-f", "--file", metavar="SWEEP.yaml", help="parameters, grid, trials, random or search "
                   "(an Optuna study), metric, goal")
    p.add_argument("--parallel", type=int, default=0, metavar="N", help="local trials at once (default: cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="run trials on a Dask scheduler (tcp://host:port)")
    p.add_argument("--metric", metavar="M", help="sort trials by this metric")
    p.add_argument("--goal", choices=["minimize", "maximize"])
    p.add_argument("--max-failures", type=int, metavar="K", help="start no new trial after K failures")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted study (a sweep file's "
                   "'search') of this notebook on this branch until its n trials are complete")
    p.add_argument("--sync", action="store_true", help="sync the notebook's pair first when its sides differ "
                   "(without it such a run is refused)")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true")

