"""Command-line adapter: ``cd4ml-nb`` (argparse over the core; ``main(argv) -> exit code``).

Exit codes: 0 success, 1 a check or run failed, 2 bad input or usage, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .exceptions import BadInput, Cd4mlError, PairConflict, TrackingError

EPILOG = """\
exit codes: 0 ok, 1 a check or run failed, 2 bad input, 130 interrupted.
Runs go to MLflow, one experiment per git branch; the embedded store is .cd4ml/mlflow.db.
"""


def _say(message: str = "") -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(f"cd4ml-nb: warning: {message}", file=sys.stderr, flush=True)


def _project(start: Path | str = ".", tracking_uri: str | None = None):
    from .project import Project

    return Project.discover(start, tracking_uri=tracking_uri)


# --- pairing ----------------------------------------------------------------------------------


def cmd_pair(args: argparse.Namespace) -> int:
    from . import pairing

    status = 0
    for raw in args.paths:
        path = Path(raw)
        project = _project(path)
        try:
            pair, done = pairing.pair_notebook(path.resolve(), project)
        except PairConflict as e:
            print(f"cd4ml-nb: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        _say(f"{project.relative(pair.ipynb)} <-> {project.relative(pair.text)} ({pair.formats}): {done}")
    return status


def cmd_sync(args: argparse.Namespace) -> int:
    from . import pairing

    status = 0
    for raw in args.paths:
        path = Path(raw).resolve()
        project = _project(path)
        pairs = pairing.discover_pairs([path], project)
        if path.is_file() and not pairs:
            raise BadInput(f"{raw}: not paired; pair it first with `cd4ml-nb pair {raw}`")
        for pair in pairs:
            try:
                done = pairing.sync_pair(pair, project)
            except PairConflict as e:
                print(f"cd4ml-nb: {e}\n{e.diff}", file=sys.stderr)
                status = 1
                continue
            _say(f"{project.relative(pair.ipynb)} <-> {project.relative(pair.text)}: {done}")
    return status


def cmd_check(args: argparse.Namespace) -> int:
    from . import pairing

    project = _project(args.paths[0] if args.paths else ".")
    roots = [Path(p) for p in args.paths] or [project.root]
    states = [pairing.compare(pair, project) for pair in pairing.discover_pairs(roots, project)]
    bad = [s for s in states if not s.in_sync]
    if args.json:
        _say(json.dumps({"pairs": [s.to_json(project) for s in states], "out_of_sync": len(bad)}, indent=2))
        return 1 if bad else 0
    for s in bad:
        ipynb, text = project.relative(s.pair.ipynb), project.relative(s.pair.text)
        if s.missing:
            what = f"{ipynb if s.missing == 'ipynb' else text} is missing"
        elif s.conflict:
            what = f"both sides changed since {s.basis}"
        else:
            newer = ipynb if s.newer == "ipynb" else text
            what = f"inputs differ; {newer} looks newer (compared with {s.basis})"
        _say(f"OUT OF SYNC  {ipynb} <-> {text}: {what}")
    if bad:
        _say(f"{len(bad)} of {len(states)} pair(s) out of sync; run `cd4ml-nb sync PATH` to reconcile")
        return 1
    _say(f"{len(states)} pair(s) in sync")
    return 0


def cmd_merge_driver(args: argparse.Namespace) -> int:
    from . import merge

    if args.action == "install":
        if args.files:
            raise BadInput("merge-driver install takes no file arguments")
        changed = merge.install(Path.cwd(), global_=args.global_)
        where = "globally" if args.global_ else "in this repository"
        _say(f"merge driver for *.ipynb installed {where}: " + (", ".join(changed) if changed else "already installed"))
        return 0
    if args.global_ or len(args.files) not in (4, 5):
        raise BadInput("merge-driver run takes BASE OURS THEIRS [MARKER_SIZE] PATH (git passes %O %A %B %L %P)")
    base, ours, theirs, *rest = args.files
    marker_size = int(rest[0]) if len(rest) == 2 and rest[0].isdigit() else 7
    result = merge.run(Path(base), Path(ours), Path(theirs), rest[-1], marker_size, warn=_warn)
    return result.exit_code


# --- parameters and runs ----------------------------------------------------------------------


def cmd_params(args: argparse.Namespace) -> int:
    from . import notebooks, params

    nb = notebooks.read(args.notebook)
    contract = params.read_contract(nb.node, nb.path)
    if args.json:
        _say(json.dumps(contract.to_json(), indent=2, default=str))
        return 0
    if contract.cell_index is None:
        _say(f"{args.notebook}: no cell tagged 'parameters' (the notebook takes no parameters)")
        return 0
    rows = [(p.name, p.type + (" | None" if p.nullable and p.type != "any" else ""),
             p.expression if p.expression is not None else repr(p.default), p.help) for p in contract.parameters]
    _table(["name", "type", "default", "help"], rows)
    for note in contract.notes:
        _warn(f"{args.notebook}: parameters cell (cell {contract.cell_index}), {note}; the other lines are used")
    return 0


def _collect_texts(pairs: list[list[str]] | None) -> dict[str, str]:
    return {name: value for name, value in (pairs or [])}


def _sync_first(paths: Sequence[str | Path], tracking_uri: str | None = None) -> None:
    """``--sync``: bring the pairs of the notebooks about to run in sync (PairConflict, writing
    nothing, when both sides changed)."""
    from . import pairing

    for raw in paths:
        path = Path(raw).resolve()
        project = _project(path, tracking_uri)
        before = path.read_bytes() if path.is_file() else None
        pairing.ensure_in_sync(pairing.find_pair(path, project), project, path, sync=True)
        if path.is_file() and path.read_bytes() != before:
            print(f"cd4ml-nb: synced {project.relative(path)} from the other side of its pair", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from . import params as params_mod
    from .runner import run_notebook

    if args.sync:
        _sync_first([args.notebook], args.tracking_uri)
    values = params_mod.load_values_file(Path(args.file)) if args.file else None
    result = run_notebook(
        args.notebook,
        values,
        parameter_texts=_collect_texts(args.param),
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        timeout=args.timeout,
        html=False if args.no_html else None,
        progress=not args.quiet,
        warn=_warn,
    )
    if args.json:
        _say(json.dumps(result.to_json(), indent=2, default=str))
        return result.exit_code
    mark = {"FINISHED": "finished", "FAILED": "FAILED", "KILLED": "KILLED"}[result.status]
    _say(f"run {result.run_id} {mark} in experiment '{result.experiment}' ({result.tracking_uri})")
    if result.error:
        _say(f"reason: {result.reason}: {result.error}")
    if result.metrics:
        _say("metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.metrics.items())))
    else:
        _say("metrics: none logged (call mlflow.log_metric(...) in the notebook)")
    if result.parameters:
        _say("parameters: " + ", ".join(f"{k}={v!r}" for k, v in result.parameters.items()))
    if result.executed:
        _say(f"executed notebook: {result.executed}")
    if result.html:
        _say(f"html: {result.html}")
    _say("next: `cd4ml-nb runs` lists this branch's runs; `cd4ml-nb ui` opens the MLflow UI")
    return result.exit_code


def cmd_runs(args: argparse.Namespace) -> int:
    from . import history, tracking
    from .compare import notebook_id

    project = _project(".", args.tracking_uri)
    from . import spool

    if args.action == "sync":
        if args.wait:
            _say("waiting until every journal is on its tracking server (Ctrl-C stops waiting)")
        uploaded, left = spool.sync(project, wait=args.wait, on_error=_warn)
        _say(f"uploaded {uploaded} journaled run(s); {left} still pending"
             + (" (the tracking server is unreachable, or a runner still holds them)" if left else ""))
        return 1 if left else 0
    experiment = tracking.branch_experiment(project, args.branch)
    notebook = notebook_id(project, args.notebook) if args.notebook else None
    kind = history.parse_kind(args.kind) if args.kind else None
    pending = spool.pending(project)
    for p in [] if args.json else pending:  # shown before the server is asked: it may be down
        state = "running" if p.live else f"ended {p.ended}" if p.ended else "runner gone"
        _say(f"pending: run {p.run_id[:12]} ({state}): {max(p.bytes_pending, 0)} journal bytes and "
             f"{max(p.artifacts_pending, 0)} artifact(s) not yet on {p.server_uri}; `cd4ml-nb runs sync` uploads them")
    if args.json:
        from dataclasses import asdict

        data: dict = {"experiment": experiment, "pending": [{**asdict(p), "folder": str(p.folder)} for p in pending]}
        try:
            tracking.reconcile_orphans(project, experiment)
            data["runs"] = [asdict(r) for r in tracking.runs_page(project, experiment, notebook, args.limit,
                                                                  kind=kind).runs]
        except TrackingError as e:  # the server is down: the pending journals are still worth showing
            data.update(runs=[], error=str(e).splitlines()[0])
        _say(json.dumps(data, indent=2))
        return 1 if "error" in data else 0
    tracking.reconcile_orphans(project, experiment)
    runs = tracking.runs_page(project, experiment, notebook, args.limit, kind=kind).runs
    if not runs:
        which = " ".join(filter(None, [f"of kind {kind}" if kind else "", f"of {notebook}" if notebook else ""]))
        _say(f"no runs {which + ' ' if which else ''}in experiment '{experiment}' yet; "
             "start one with `cd4ml-nb run NOTEBOOK`")
        return 0
    _say(f"experiment '{experiment}' ({project.tracking_uri}), newest first:")
    rows = []
    for r in runs:
        started = datetime.fromtimestamp(r.start_time).strftime("%Y-%m-%d %H:%M:%S") if r.start_time else "-"
        kind_text = f"{r.kind} of {r.parent_run_id[:8]}" if r.parent_run_id else r.kind
        rows.append((started, r.status, kind_text, r.run_id[:12], r.notebook or "-",
                     " ".join(f"{k}={v}" for k, v in sorted(r.params.items())),
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())), r.why()))
    _table(["started", "status", "kind", "run", "notebook", "params", "metrics", "why"], rows)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:

    project = _project(".", args.tracking_uri)
    if not project.tracking_uri.startswith("sqlite:"):
        _say(f"the tracking server has its own UI: {project.mlflow_ui_url or project.tracking_uri}")
        return 0
    from . import tracking

    tracking.client(project)  # create the store first, under the lock
    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", project.tracking_uri,
               "--default-artifact-root", project.artifact_root.as_uri(), "--host", "127.0.0.1",
               "--port", str(args.port), "--workers", "1"]
    _say(f"MLflow UI on {project.tracking_uri}: {url} (Ctrl-C to stop)")
    return _serve(command, None if args.no_browser else url)


# --- assessment: compare, gate, report, promote, ci -------------------------------------------


class _MetricAction(argparse.Action):
    """`--metric M` starts a gate rule; `--goal` and `--max-regression` apply to the last one."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = list(getattr(namespace, "gate_specs", None) or [])
        if self.dest == "metric":
            specs.append({"metric": value})
        elif not specs:
            parser.error(f"{option_string} must follow a --metric")
        else:
            specs[-1][self.dest] = value
        namespace.gate_specs = specs


def _gate_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("gate rules (repeat --metric for several, each with its own goal and tolerance)")
    g.add_argument("--metric", action=_MetricAction, dest="metric", metavar="M", required=required)
    g.add_argument("--goal", action=_MetricAction, dest="goal", metavar="minimize|maximize")
    g.add_argument("--max-regression", action=_MetricAction, dest="max_regression", metavar="X",
                   help="allowed regression: absolute (0.05) or relative to the base (2%%)")
    g.add_argument("--against", metavar="models:/NAME@ALIAS",
                   help="compare with a registered model's run, on the notebook that run came from")
    g.add_argument("--notebook", dest="notebooks", action="append", type=os.path.abspath, metavar="PATH",
                   help="only this notebook, either side of a pair (repeatable)")
    g.add_argument("--runs", choices=["latest", "best"], default="latest", help="which runs to compare")
    g.add_argument("--min-runs", type=int, default=1, metavar="K", help="mean over the K latest runs per side")
    _kind_option(g)
    g.add_argument("--allow-schema-change", action="store_true",
                   help="evaluate even when a logged dataset's schema differs between the runs")
    p.set_defaults(gate_specs=[])


def _kind_option(p) -> None:
    from .history import KINDS, RUN

    p.add_argument("--kind", default=RUN, choices=KINDS,
                   help="compare runs of this kind on both sides (default: run; trials, tests and ci smoke "
                        "runs are left out)")


def _selection(args: argparse.Namespace, run_id: str | None = None):
    from .history import Selection

    return Selection(args.kind, args.runs, getattr(args, "min_runs", 1), run_id)


def _specs(raw: list[dict]):
    from .compare import GateSpec, parse_tolerance

    specs = []
    for item in raw:
        unknown = set(item) - {"metric", "goal", "max_regression"}
        if unknown or "metric" not in item:
            raise BadInput(f"gate rule {item!r}: use metric, goal and max_regression")
        tolerance, relative = parse_tolerance(str(item.get("max_regression", "0")))
        specs.append(GateSpec(str(item["metric"]), str(item.get("goal", "")), tolerance, relative))
    return specs


def _run_gate(project, args, run_id: str | None = None):
    from .compare import gate

    return gate(project, _specs(args.gate_specs), branch=getattr(args, "branch", None), base=args.base,
                against=args.against, notebooks=args.notebooks or (), select=_selection(args, run_id),
                allow_schema_change=args.allow_schema_change)


def cmd_compare(args: argparse.Namespace) -> int:
    from . import report
    from .compare import compare, no_base

    project = _project(".", args.tracking_uri)
    comparison = compare(project, args.branch, args.base, args.metric_names or None,
                         goals=dict(project.config.metric_goals), notebooks=args.notebooks or (),
                         select=_selection(args))
    if args.json:
        _say(json.dumps(comparison.to_json(), indent=2))
        return 0
    if args.format == "markdown":
        _say(report.markdown(project, comparison, report.CodeDiff((), "", ())).split("## Code:")[0].rstrip())
        return 0
    _say(f"branch {comparison.branch!r} against base {comparison.base!r} ({comparison.runs} runs of kind "
         f"{comparison.kind!r})")
    if not comparison.notebooks:
        _say("no FINISHED runs on either branch yet; start with `cd4ml-nb run NOTEBOOK`")
    for nb in comparison.notebooks:
        _say(f"\n{nb.notebook}: base run {nb.base.run_id if nb.base else '-'}, branch run "
             f"{nb.branch.run_id if nb.branch else '-'}")
        if nb.base is None:
            _say(f"  {no_base(comparison.base, nb.notebook, comparison.kind)}")
        rows = [(d.metric, d.goal, report.fmt(d.base), report.fmt(d.branch), report.fmt(d.delta),
                 report.pct(d.relative)) for d in nb.deltas]
        _table(["metric", "goal", "base", "branch", "delta", "delta %"], rows)
        best = [(m, report.fmt(nb.best_base.metrics.get(m) if nb.best_base else None),
                 report.fmt(nb.best_branch.metrics.get(m) if nb.best_branch else None))
                for m in (d.metric for d in nb.deltas[:1])]
        if best and args.runs == "latest":
            _say(f"best runs by {best[0][0]}: base {best[0][1]}, branch {best[0][2]}")
        if nb.parameters_differ:
            _say(f"  parameters differ between the compared runs: {', '.join(nb.parameters_differ)}")
        for key, (a, b) in nb.params_changed.items():
            _say(f"  parameter {key}: {a} -> {b}")
        if nb.schema_changed:
            _say(f"  data schema changed: {', '.join(nb.schema_changed)} "
                 f"(`cd4ml-nb diff {nb.base.run_id} {nb.branch.run_id}`)")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    project = _project(".", args.tracking_uri)
    result = _run_gate(project, args)
    for line in [c.describe() for c in result.checks] + [s.describe() for s in result.skipped]:
        _say(line)
    _say("gate passed" if result.passed else "gate FAILED: the branch regressed beyond the tolerance")
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from . import report
    from .compare import compare

    project = _project(".", args.tracking_uri)
    gate_result = _run_gate(project, args) if args.gate_specs else None
    comparison = compare(project, args.branch, args.base, [s["metric"] for s in args.gate_specs] or None,
                         goals=dict(project.config.metric_goals), notebooks=args.notebooks or (),
                         select=_selection(args))
    code = report.code_diff(project, comparison.base)
    text = (report.html_report if args.format == "html" else report.markdown)(project, comparison, code, gate_result)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        _say(f"wrote {args.output}")
    else:
        _say(text)
    return gate_result.exit_code if gate_result else 0


def cmd_promote(args: argparse.Namespace) -> int:
    from . import tracking
    from .compare import promote

    project = _project(".", args.tracking_uri)
    run_id = tracking.resolve_run_id(tracking.client(project), args.run_id)
    if args.if_gate_passes:
        if not args.gate_specs:
            raise BadInput("--if-gate-passes needs gate rules: --metric M [--goal G] [--max-regression X]")
        result = _run_gate(project, args, run_id)  # the gate judges this run, not the branch's latest
        for line in [c.describe() for c in result.checks] + [s.describe() for s in result.skipped]:
            _say(line)
        if not result.passed:
            _say(f"not promoted: the gate failed, {args.model}@{args.alias} is unchanged")
            return 1
    version, source = promote(project, run_id, args.model, args.alias)
    _say(f"registered {source} as {args.model} version {version}; models:/{args.model}@{args.alias} -> v{version}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Regression-test notebooks against their baselines: 0 within tolerance, 1 regression, 2 cannot evaluate."""
    from . import params as params_mod
    from . import regression

    project = _project(args.notebooks[0] if args.notebooks and Path(args.notebooks[0]).exists() else ".",
                       args.tracking_uri)
    paths = [Path(n).resolve() for n in args.notebooks] or regression.default_notebooks(project)
    if not paths:
        raise BadInput("no notebook to test: give NOTEBOOK..., list ci_notebooks in [tool.cd4ml_nb], or record a "
                       "baseline with `cd4ml-nb test NOTEBOOK --update`")
    if args.sync:
        _sync_first(paths, args.tracking_uri)
    values = params_mod.load_values_file(Path(args.file)) if args.file else None
    report = regression.run_regression(
        project, paths, parameters=values, parameter_texts=_collect_texts(args.param), seeds=args.seeds,
        rtol=args.rtol, atol=args.atol, baseline=args.baseline, update=args.update,
        progress=not (args.quiet or args.json), warn=_warn)
    if args.json:
        _say(json.dumps(report.to_json(), indent=2, default=str))
        return report.exit_code
    for outcome in report.outcomes:
        _say(regression.describe(outcome))
    counts = {s: sum(o.status == s for o in report.outcomes) for s in ("pass", "regression", "cannot-evaluate")}
    if args.update:
        _say(f"\nbaseline(s) written for {sum(o.status == 'recorded' for o in report.outcomes)} notebook(s): "
             "review and commit them")
    else:
        _say(f"\n{counts['pass']} within tolerance, {counts['regression']} regression(s), "
             f"{counts['cannot-evaluate']} cannot be evaluated")
    return report.exit_code


def cmd_ci(args: argparse.Namespace) -> int:
    """check pairs (3) -> smoke runs (4) and their regression test against the committed baselines
    (5; 7 cannot evaluate) -> nbval with --nbval or ci_nbval = true (5) -> gate (6; 7) -> report."""
    import subprocess

    from . import pairing, params, regression, report
    from .compare import CannotEvaluate, compare, gate
    from .history import CI, Selection

    project = _project(".", args.tracking_uri)
    cfg = project.config
    smoke = Selection(kind=CI)  # smoke runs are compared with the base branch's smoke runs
    def step(name: str) -> None:
        _say(f"\n== ci: {name} ==")

    step("pairs in sync")
    states = [pairing.compare(p, project) for p in pairing.discover_pairs([project.root], project)]
    bad = [s for s in states if not s.in_sync]
    for s in bad:
        _say(f"OUT OF SYNC {project.relative(s.pair.ipynb)} <-> {project.relative(s.pair.text)}")
    if bad:
        _say("ci FAILED at the pair check: run `cd4ml-nb sync` and commit")
        return 3
    _say(f"{len(states)} pair(s) in sync")
    notebooks_ = [project.confine(n) for n in cfg.ci_notebooks]
    values = params.load_values_file(project.root / cfg.ci_params) if cfg.ci_params else None
    step("smoke runs")
    outcomes = []
    for nb in notebooks_:  # each smoke run is the regression test's run (tagged cd4ml.test)
        outcome = regression.check_notebook(project, nb, parameters=values, files_only=True, always_run=True,
                                            via="ci", warn=_warn)
        result = outcome.runs[-1]
        _say(f"{project.relative(nb)}: {result.status} run {result.run_id} " +
             " ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items())))
        if result.status != "FINISHED":
            _say(f"ci FAILED at the smoke run of {project.relative(nb)}: {result.error}")
            return 4
        outcomes.append(outcome)
    if outcomes:
        step("regression test (committed baselines)")
        for outcome in outcomes:
            if outcome.baseline is None:
                _say(f"{outcome.notebook}: no committed baseline, not compared (the gate compares it with the base "
                     f"branch); {outcome.next_step}")
            else:
                _say(regression.describe(outcome))
        if any(o.status == "regression" for o in outcomes):
            _say("ci FAILED at the regression test")
            return 5
        if any(o.status == "cannot-evaluate" and o.baseline is not None for o in outcomes):
            _say("ci cannot evaluate the regression test")
            return 7
    nbval = args.nbval or cfg.ci_nbval
    if nbval and notebooks_:
        step("nbval")
        ipynbs = [str(n.with_suffix(".ipynb")) for n in notebooks_]
        done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                               "-o", "addopts=", "-o", "testpaths=", *ipynbs], cwd=project.root)
        if done.returncode != 0:
            _say("ci FAILED at nbval")
            return 5
    gate_result = None
    if cfg.ci_gate:
        step("gate")
        try:
            gate_result = gate(project, _specs(list(cfg.ci_gate)), select=smoke)
        except CannotEvaluate as e:
            _say(f"ci cannot evaluate the gate: {e}")
            return 7
        for line in [c.describe() for c in gate_result.checks] + [s.describe() for s in gate_result.skipped]:
            _say(line)
    step("report")
    comparison = compare(project, goals=dict(cfg.metric_goals), select=smoke)
    text = report.markdown(project, comparison, report.code_diff(project, comparison.base), gate_result)
    if args.report:  # relative to the current folder
        out = Path(args.report).resolve()
    elif cfg.ci_report:  # relative to the root
        out = project.root / cfg.ci_report
    else:  # the git-ignored state folder: ci leaves the work tree as it found it
        out = project.ensure_state_dir() / "ci-report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    _say(f"wrote {project.relative(out)}")
    if gate_result is not None and not gate_result.passed:
        _say("ci FAILED at the gate")
        return 6
    _say("ci passed")
    return 0


# --- the version axes: diff, reproduce ----------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    from . import repro, tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    project = _project(".", args.tracking_uri)
    c = tracking.client(project)
    run_a, run_b = tracking.resolve_run_id(c, args.run_a), tracking.resolve_run_id(c, args.run_b)
    result = repro.diff_runs(project, run_a, run_b)
    _say(json.dumps(result.to_json(), indent=2, default=str) if args.json else "\n".join(repro.describe_diff(result)))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import repro, tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    project = _project(".", args.tracking_uri)
    run_id = tracking.resolve_run_id(tracking.client(project), args.run_id)
    result = repro.reproduce(project, run_id, args.rtol, args.allow_data_change,
                             progress=not args.quiet, warn=_warn)
    _say(json.dumps(result.to_json(), indent=2, default=str) if args.json
         else "\n".join(repro.describe_reproduction(result)))
    return result.exit_code


# --- sweeps and team mode ----------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import notebooks, params, sweep

    project = _project(Path(args.notebook) if Path(args.notebook).exists() else ".", args.tracking_uri)
    if args.sync:
        _sync_first([args.notebook], args.tracking_uri)
    nb = notebooks.read(Path(args.notebook).resolve())
    contract = params.read_contract(nb.node, args.notebook)
    spec = params.load_values_file(Path(args.file)) if args.file else {}
    grid = {}
    for item in args.grid or []:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise BadInput(f"--grid {item!r}: use NAME=V1,V2,...")
        grid[name] = values.split(",")
    planned = sweep.plan(contract, args.notebook, grid, _collect_texts(args.param), spec)
    trials = list(planned.trials)
    metric = args.metric or spec.get("metric")
    goal = args.goal or spec.get("goal", "")
    parallel = args.parallel or int(spec.get("parallel", 0))
    max_failures = args.max_failures if args.max_failures is not None else spec.get("max_failures")
    where = f"Dask at {args.dask}" if args.dask else f"{parallel or os.cpu_count()} local worker(s)"
    dropped = (f" ({planned.duplicates} duplicate(s) dropped: trials with the same values run once)"
               if planned.duplicates else "")
    _say(f"sweep of {nb.path.name}: {len(trials)} trial(s){dropped} on {where}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(trials), unit="trial", desc="Trials")

    def on_trial(result, done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)
            if result.status != "FINISHED":
                bar.write(f"trial {result.trial.index} {result.status}: {result.error}")

    try:
        result = sweep.run_sweep(nb.path, trials, project=project, parallel=parallel, dask=args.dask,
                                 metric=metric, goal=goal, max_failures=max_failures, on_trial=on_trial)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        from dataclasses import asdict

        _say(json.dumps({"parent_run_id": result.parent_run_id, "experiment": result.experiment,
                         "best": asdict(result.best) if result.best else None,
                         "trials": [asdict(r) for r in result.ranked()], "peak_rss_mb": result.peak_rss_mb},
                        indent=2, default=str))
        return result.exit_code
    names = contract.names()
    varied = [n for n in names if len({json.dumps(r.trial.values.get(n), default=str) for r in result.results}) > 1]
    metrics = sorted({m for r in result.results for m in r.metrics})
    rows = [(r.trial.index, r.status, r.run_id[:12], *(r.trial.values.get(n, "") for n in varied),
             *(f"{r.metrics[m]:.4g}" if m in r.metrics else "-" for m in metrics)) for r in result.ranked()]
    _say(f"\nparent run {result.parent_run_id} in experiment '{result.experiment}'"
         + (f", trials sorted by {result.metric} ({result.goal})" if result.metric else ""))
    _table(["trial", "status", "run", *varied, *metrics], rows)
    if result.best and result.metric:
        b = result.best
        _say(f"best: trial {b.trial.index} ({', '.join(f'{k}={v!r}' for k, v in b.trial.values.items())}) "
             f"{result.metric}={b.metrics[result.metric]:.6g}, run {b.run_id}")
    for r in result.failed:
        _say(f"trial {r.trial.index} {r.status}: {r.error} (run {r.run_id})")
    _say(f"peak memory of this process: {result.peak_rss_mb:.0f} MB")
    return result.exit_code


def cmd_gc(args: argparse.Namespace) -> int:
    """Prune ended Lab jobs (with their run folders) and the CLI's run folders; MLflow keeps the runs."""
    from .jobs import JobManager, prune_runs

    project = _project(".")
    keep = project.config.job_retention_count if args.keep is None else args.keep
    days = project.config.job_retention_days if args.days is None else args.days
    removed = JobManager(project).prune(keep, days, dry_run=args.dry_run)
    removed += prune_runs(project, keep, days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"

    def size(n: int) -> str:
        return next((f"{n / f:.1f} {u}" for f, u in ((2**30, "GB"), (2**20, "MB"), (2**10, "kB")) if n >= f),
                    f"{n} B")

    for r in removed:
        what = f"job {r.name} ({r.detail})" if r.kind == "job" else f"run folder {r.name} ({r.detail})"
        where = ", ".join(project.relative(p) for p in r.paths)
        _say(f"{verb} {what}: {where}: {size(r.bytes)}")
    jobs = sum(r.kind == "job" for r in removed)
    _say(f"{verb} {jobs} job(s) and {len(removed) - jobs} run folder(s), "
         f"{'would free' if args.dry_run else 'freed'} {size(sum(r.bytes for r in removed))} "
         f"(kept: queued and running jobs, the newest {keep} ended, "
         f"{f'none older than {days:g} days' if days else 'no age limit'}; MLflow runs untouched)")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from . import store

    project = _project(".")
    folder = project.ensure_state_dir() / "server"
    folder.mkdir(exist_ok=True)
    backend = args.backend_store_uri or store.uri_of(folder / "mlflow.db")
    artifacts = Path(args.artifacts or folder / "artifacts").resolve()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", args.host,
               "--port", str(args.port), "--workers", str(args.workers)]
    if backend.startswith("sqlite:"):  # born complete before MLflow's workers open it
        backend = store.absolute_uri(backend, Path.cwd())
        store.ensure_sqlite(backend, "mlflow-artifacts:/")
    uri = f"http://{args.host}:{args.port}"
    _say(f"MLflow tracking server: backend {backend}, artifacts {artifacts}")
    _say(f"use it with: export MLFLOW_TRACKING_URI={uri}   (or --tracking-uri {uri}); Ctrl-C stops it")
    return _serve(command)


def _serve(command: list[str], open_url: str | None = None) -> int:
    """Run a server in the foreground; Ctrl-C or SIGTERM stop it and every process it started
    (MLflow's workers and job consumers), then return 130 (interrupted). A server that ends by
    itself gives its own exit code."""
    import subprocess

    from .runner import signals_as_interrupts

    with signals_as_interrupts():
        server = subprocess.Popen(command)  # same process group: a kill of the group reaches it too
        try:
            if open_url:
                import webbrowser

                webbrowser.open(open_url)
            return server.wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (runner.Terminated)
            return 130
        finally:
            if server.poll() is None:  # never signal a pid the system may have given to another process
                from .mlflow_ui import stop_tree

                stop_tree(server.pid)


# --- plumbing ---------------------------------------------------------------------------------


def _table(header: list[str], rows: list[tuple]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        _say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            _say("  ".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cd4ml-nb",
        description="Pair, run and track notebooks per git branch (Continuous Delivery for ML).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cd4ml-nb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("pair", cmd_pair, "pair notebooks with .py percent scripts, creating the missing side")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("sync", cmd_sync, "bring pairs in sync; refuse with a diff when both sides changed")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("check", cmd_check, "report pairs whose inputs differ (exit 1); writes nothing")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the repository)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("merge-driver", cmd_merge_driver, "git merge driver for paired .ipynb: `install` once per clone "
            "(--global: for every repository); git calls `run`")
    p.add_argument("action", choices=["install", "run"])
    p.add_argument("files", nargs="*", metavar="FILE", help="run: %%O %%A %%B %%L %%P, as git passes them")
    p.add_argument("--global", dest="global_", action="store_true", help="install: ~/.gitconfig and the "
                   "global attributes file")

    p = add("params", cmd_params, "show a notebook's parameter contract (cell tagged 'parameters')")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("run", cmd_run, "execute a notebook with Papermill as a tracked MLflow run")
    p.add_argument("notebook", metavar="NOTEBOOK", help=".ipynb or its paired .py")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter value, coerced to the declared type (repeatable)")
    p.add_argument("-f", "--file", metavar="PARAMS.yaml", help="parameter values from a YAML/JSON file")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: embedded store)")
    p.add_argument("--experiment", metavar="NAME", help="experiment name (default: the git branch)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="seconds each cell may run")
    p.add_argument("--no-html", action="store_true", help="do not render and log an HTML copy")
    p.add_argument("--sync", action="store_true", help="sync the notebook's pair first when its sides differ "
                   "(without it such a run is refused)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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

    p = add("compare", cmd_compare, "compare a branch's runs with the base branch's, per notebook")
    p.add_argument("--branch", metavar="B", help="default: the current branch")
    p.add_argument("--base", metavar="BRANCH", help="default: base_branch from config (main or master)")
    p.add_argument("--metric", dest="metric_names", action="append", metavar="M", help="default: metrics both logged")
    p.add_argument("--notebook", dest="notebooks", action="append", type=os.path.abspath, metavar="PATH",
                   help="only this notebook, either side of a pair (repeatable)")
    p.add_argument("--runs", choices=["latest", "best"], default="latest")
    _kind_option(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--format", choices=["text", "markdown"], default="text")
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("gate", cmd_gate, "exit 1 when the branch regressed beyond the tolerance (2: cannot evaluate)")
    p.add_argument("--branch", metavar="B", help="default: the current branch")
    p.add_argument("--base", metavar="BRANCH", help="default: base_branch from config")
    _gate_options(p, required=True)
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("report", cmd_report, "review report: metric deltas, parameter diff, paired .py diff, run links")
    p.add_argument("--branch", metavar="B", help="default: the current branch")
    p.add_argument("--base", metavar="BRANCH", help="default: base_branch from config")
    p.add_argument("--format", choices=["markdown", "html"], default="markdown")
    p.add_argument("-o", "--output", metavar="FILE")
    _gate_options(p)
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("promote", cmd_promote, "register a run's model in the MLflow registry and move an alias to it")
    p.add_argument("run_id", metavar="RUN_ID", help="the run id or a unique prefix of 6+ characters")
    p.add_argument("--model", required=True, metavar="NAME")
    p.add_argument("--alias", default="champion")
    p.add_argument("--if-gate-passes", action="store_true", help="promote only if the gate rules pass")
    p.add_argument("--base", metavar="BRANCH")
    _gate_options(p)
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("diff", cmd_diff, "two runs side by side: code, model, data schema, data sampling, environment")
    p.add_argument("run_a", metavar="RUN_A", help="a run id or a unique prefix of 6+ characters")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("reproduce", cmd_reproduce, "re-run a run at its commit with its parameters; exit 1 unless it reproduces")
    p.add_argument("run_id", metavar="RUN_ID", help="the run id or a unique prefix of 6+ characters")
    p.add_argument("--rtol", type=float, default=1e-6, metavar="R", help="relative tolerance on metrics (1e-6)")
    p.add_argument("--allow-data-change", action="store_true", help="a changed dataset does not fail")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("test", cmd_test, "regression-test notebooks: run them (tracked, tagged cd4ml.test) and compare metrics "
            "and cells tagged 'regression' with a baseline within a tolerance (exit 1 regression, 2 cannot evaluate)")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="default: the notebooks with a baseline file, and ci_notebooks")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter value (default: the baseline's parameters)")
    p.add_argument("-f", "--file", metavar="PARAMS.yaml", help="parameter values from a YAML/JSON file")
    p.add_argument("--seeds", type=int, metavar="K", help="run K seeds (parameter test_seed_parameter, 'seed') and "
                   "compare the mean with the baseline's mean ± its spread")
    p.add_argument("--rtol", type=float, metavar="R", help="relative tolerance (default: test_rtol, 1e-5)")
    p.add_argument("--atol", type=float, metavar="A", help="absolute tolerance (default: test_atol, 1e-8)")
    p.add_argument("--baseline", metavar="BRANCH|RUN|FOLDER", help="default: the committed baseline file, else the "
                   "base branch's latest FINISHED run")
    p.add_argument("--update", action="store_true", help="record the baseline files (.cd4ml-baselines/) instead")
    p.add_argument("--sync", action="store_true", help="sync the notebook's pair first when its sides differ "
                   "(without it such a run is refused)")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable result")

    p = add("ci", cmd_ci, "the CI sequence: pairs, smoke runs with the regression test, gate, report "
            "([tool.cd4ml_nb] ci_*)")
    p.add_argument("--nbval", action="store_true", help="also run nbval --nbval-lax on the notebooks")
    p.add_argument("--report", metavar="PATH", help="write the review report here (default: ci_report, "
                   "else .cd4ml/ci-report.md, git-ignored)")
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("sweep", cmd_sweep, "run a grid/random sweep of a notebook's parameters, locally or on Dask")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,...", help="values to try (repeatable)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a fixed value")
    p.add_argument("-f", "--file", metavar="SWEEP.yaml", help="parameters, grid, trials, random, metric, goal")
    p.add_argument("--parallel", type=int, default=0, metavar="N", help="local trials at once (default: cores)")
    p.add_argument("--dask", metavar="ADDRESS", help="run trials on a Dask scheduler (tcp://host:port)")
    p.add_argument("--metric", metavar="M", help="sort trials by this metric")
    p.add_argument("--goal", choices=["minimize", "maximize"])
    p.add_argument("--max-failures", type=int, metavar="K", help="start no new trial after K failures")
    p.add_argument("--sync", action="store_true", help="sync the notebook's pair first when its sides differ "
                   "(without it such a run is refused)")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true")

    p = add("server", cmd_server, "start an MLflow tracking server for the team (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", metavar="URI", help="sqlite:///... or postgresql://... "
                   "(default: .cd4ml/server/mlflow.db)")
    p.add_argument("--artifacts", metavar="DIR", help="artifact folder (default: .cd4ml/server/artifacts)")
    p.add_argument("--workers", type=int, default=2)

    p = add("ui", cmd_ui, "open the MLflow UI on the project's store (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--tracking-uri", metavar="URI")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(e.code or 0)
    try:
        return args.func(args)
    except Cd4mlError as e:
        print(f"cd4ml-nb: error: {e}", file=sys.stderr)
        if isinstance(e, PairConflict) and e.diff:
            print(e.diff, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cd4ml-nb: interrupted", file=sys.stderr)
        return 130


def main_entry() -> None:
    """Console script: exit without tearing down the heavy modules (about a second)."""
    from .notebooks import skip_iri_grammar

    skip_iri_grammar()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_entry()
