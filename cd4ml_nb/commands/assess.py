"""Assessment commands: compare, gate, report, promote, and diff and reproduce along the version axes."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..exceptions import BadInput
from . import project_at, say, table, warn

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


def gate_options(p: argparse.ArgumentParser, required: bool = False) -> None:
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
    kind_option(g)
    g.add_argument("--allow-schema-change", action="store_true",
                   help="evaluate even when a logged dataset's schema differs between the runs")
    p.set_defaults(gate_specs=[])


def kind_option(p) -> None:
    from ..history import KINDS

    p.add_argument("--kind", choices=KINDS,
                   help="compare runs of this kind on both sides (default: run; trials, tests and ci smoke "
                        "runs are left out)")
    step_option(p)


def step_option(p) -> None:
    p.add_argument("--step", nargs="?", const="", metavar="NAME",
                   help="a pipeline step's runs (kind step); without NAME the last step of cd4ml-pipeline.yaml")
    p.add_argument("--pipeline-file", metavar="PATH", help="the pipeline file --step reads (default: "
                   "cd4ml-pipeline.yaml at the project root)")


def selection(args: argparse.Namespace, run_id: str | None = None, project=None):
    from ..history import RUN, STEP, Selection
    from ..pipeline import assessed_step

    step = assessed_step(project or project_at(".", args.tracking_uri), args.step, args.pipeline_file)
    kind = args.kind or (STEP if step is not None else RUN)
    return Selection(kind, args.runs, getattr(args, "min_runs", 1), run_id, step)


def gate_specs(raw: list[dict]):
    from ..compare import GateSpec, parse_tolerance

    specs = []
    for item in raw:
        unknown = set(item) - {"metric", "goal", "max_regression"}
        if unknown or "metric" not in item:
            raise BadInput(f"gate rule {item!r}: use metric, goal and max_regression")
        tolerance, relative = parse_tolerance(str(item.get("max_regression", "0")))
        specs.append(GateSpec(str(item["metric"]), str(item.get("goal", "")), tolerance, relative))
    return specs


def run_gate(project, args, run_id: str | None = None):
    from ..compare import gate

    return gate(project, gate_specs(args.gate_specs), branch=getattr(args, "branch", None), base=args.base,
                against=args.against, notebooks=args.notebooks or (), select=selection(args, run_id, project),
                allow_schema_change=args.allow_schema_change)


def cmd_compare(args: argparse.Namespace) -> int:
    from .. import report
    from ..compare import compare, no_base

    project = project_at(".", args.tracking_uri)
    select = selection(args, project=project)
    comparison = compare(project, args.branch, args.base, args.metric_names or None,
                         goals=dict(project.config.metric_goals), notebooks=args.notebooks or (), select=select)
    if args.json:
        say(json.dumps(comparison.to_json(), indent=2))
        return 0
    if args.format == "markdown":
        say(report.markdown(project, comparison, report.CodeDiff((), "", ())).split("## Code:")[0].rstrip())
        return 0
    say(f"branch {comparison.branch!r} against base {comparison.base!r} ({comparison.runs} runs of {select.label})")
    if not comparison.notebooks:
        say("no FINISHED runs on either branch yet; start with `cd4ml-nb run NOTEBOOK`")
    for nb in comparison.notebooks:
        say(f"\n{nb.notebook}: base run {nb.base.run_id if nb.base else '-'}, branch run "
             f"{nb.branch.run_id if nb.branch else '-'}")
        if nb.base is None:
            say(f"  {no_base(comparison.base, nb.notebook, comparison.kind)}")
        rows = [(d.metric, d.goal, report.fmt(d.base), report.fmt(d.branch), report.fmt(d.delta),
                 report.pct(d.relative)) for d in nb.deltas]
        table(["metric", "goal", "base", "branch", "delta", "delta %"], rows)
        best = [(m, report.fmt(nb.best_base.metrics.get(m) if nb.best_base else None),
                 report.fmt(nb.best_branch.metrics.get(m) if nb.best_branch else None))
                for m in (d.metric for d in nb.deltas[:1])]
        if best and args.runs == "latest":
            say(f"best runs by {best[0][0]}: base {best[0][1]}, branch {best[0][2]}")
        if nb.parameters_differ:
            say(f"  parameters differ between the compared runs: {', '.join(nb.parameters_differ)}")
        for key, (a, b) in nb.params_changed.items():
            say(f"  parameter {key}: {a} -> {b}")
        if nb.schema_changed:
            say(f"  data schema changed: {', '.join(nb.schema_changed)} "
                 f"(`cd4ml-nb diff {nb.base.run_id} {nb.branch.run_id}`)")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    project = project_at(".", args.tracking_uri)
    result = run_gate(project, args)
    for line in [c.describe() for c in result.checks] + [s.describe() for s in result.skipped]:
        say(line)
    say("gate passed" if result.passed else "gate FAILED: the branch regressed beyond the tolerance")
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from .. import report
    from ..compare import compare

    project = project_at(".", args.tracking_uri)
    gate_result = run_gate(project, args) if args.gate_specs else None
    comparison = compare(project, args.branch, args.base, [s["metric"] for s in args.gate_specs] or None,
                         goals=dict(project.config.metric_goals), notebooks=args.notebooks or (),
                         select=selection(args, project=project))
    code = report.code_diff(project, comparison.base)
    text = (report.html_report if args.format == "html" else report.markdown)(project, comparison, code, gate_result)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        say(f"wrote {args.output}")
    else:
        say(text)
    return gate_result.exit_code if gate_result else 0


def cmd_promote(args: argparse.Namespace) -> int:
    from .. import tracking
    from ..compare import promote

    project = project_at(".", args.tracking_uri)
    run_id = tracking.resolve_run_id(tracking.client(project), args.run_id)
    if args.if_gate_passes:
        if not args.gate_specs:
            raise BadInput("--if-gate-passes needs gate rules: --metric M [--goal G] [--max-regression X]")
        result = run_gate(project, args, run_id)  # the gate judges this run, not the branch's latest
        for line in [c.describe() for c in result.checks] + [s.describe() for s in result.skipped]:
            say(line)
        if not result.passed:
            say(f"not promoted: the gate failed, {args.model}@{args.alias} is unchanged")
            return 1
    version, source = promote(project, run_id, args.model, args.alias)
    say(f"registered {source} as {args.model} version {version}; models:/{args.model}@{args.alias} -> v{version}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from .. import repro, tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    project = project_at(".", args.tracking_uri)
    c = tracking.client(project)
    run_a, run_b = tracking.resolve_run_id(c, args.run_a), tracking.resolve_run_id(c, args.run_b)
    result = repro.diff_runs(project, run_a, run_b)
    say(json.dumps(result.to_json(), indent=2, default=str) if args.json else "\n".join(repro.describe_diff(result)))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .. import repro, tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    project = project_at(".", args.tracking_uri)
    run_id = tracking.resolve_run_id(tracking.client(project), args.run_id)
    result = repro.reproduce(project, run_id, args.rtol, args.allow_data_change,
                             progress=not args.quiet, warn=warn)
    say(json.dumps(result.to_json(), indent=2, default=str) if args.json
         else "\n".join(repro.describe_reproduction(result)))
    return result.exit_code


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("compare", cmd_compare, "compare a branch's runs with the base branch's, per notebook")
    p.add_argument("--branch", metavar="B", help="default: the current branch")
    p.add_argument("--base", metavar="BRANCH", help="default: base_branch from config (main or master)")
    p.add_argument("--metric", dest="metric_names", action="append", metavar="M", help="default: metrics both logged")
    p.add_argument("--notebook", dest="notebooks", action="append", type=os.path.abspath, metavar="PATH",
                   help="only this notebook, either side of a pair (repeatable)")
    p.add_argument("--runs", choices=["latest", "best"], default="latest")
    kind_option(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--format", choices=["text", "markdown"], default="text")
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("gate", cmd_gate, "exit 1 when the branch regressed beyond the tolerance (2: cannot evaluate)")
    p.add_argument("--branch", metavar="B", help="default: the current branch")
    p.add_argument("--base", metavar="BRANCH", help="default: base_branch from config")
    gate_options(p, required=True)
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("report", cmd_report, "review report: metric deltas, parameter diff, paired .py diff, run links")
    p.add_argument("--branch", metavar="B", help="default: the current branch")
    p.add_argument("--base", metavar="BRANCH", help="default: base_branch from config")
    p.add_argument("--format", choices=["markdown", "html"], default="markdown")
    p.add_argument("-o", "--output", metavar="FILE")
    gate_options(p)
    p.add_argument("--tracking-uri", metavar="URI")

    p = add("promote", cmd_promote, "register a run's model in the MLflow registry and move an alias to it")
    p.add_argument("run_id", metavar="RUN_ID", help="the run id or a unique prefix of 6+ characters")
    p.add_argument("--model", required=True, metavar="NAME")
    p.add_argument("--alias", default="champion")
    p.add_argument("--if-gate-passes", action="store_true", help="promote only if the gate rules pass")
    p.add_argument("--base", metavar="BRANCH")
    gate_options(p)
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

