"""Regression tests of notebooks (`test`) and the CI sequence (`ci`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..exceptions import BadInput
from . import parameter_texts, project_at, say, warn
from .assess import gate_specs, step_option
from .runs import sync_first

def pipeline_step(project, name: str, given: str | None):
    """The pipeline step ``--step`` names (the last step without a name)."""
    from .. import pipeline

    pipe = pipeline.load_if_present(project, given)
    if pipe is None:
        raise BadInput(f"--step reads {pipeline.PIPELINE_FILE}, and {project.root / pipeline.PIPELINE_FILE} "
                       "does not exist")
    return pipe.step(name) if name else pipe.last


def cmd_test(args: argparse.Namespace) -> int:
    """Regression-test notebooks against their baselines: 0 within tolerance, 1 regression, 2 cannot evaluate."""
    from .. import params as params_mod
    from .. import regression

    project = project_at(args.notebooks[0] if args.notebooks and Path(args.notebooks[0]).exists() else ".",
                       args.tracking_uri)
    paths = [Path(n).resolve() for n in args.notebooks] or regression.default_notebooks(project)
    values = params_mod.load_values_file(Path(args.file)) if args.file else None
    if args.step is not None:  # the step's notebook with the step's parameters (-f and -p on top)
        if args.notebooks:
            raise BadInput("test: give NOTEBOOK... or --step, not both")
        step = pipeline_step(project, args.step, args.pipeline_file)
        paths, values = [project.root / step.notebook], {**step.parameters, **(values or {})}
    if not paths:
        raise BadInput("no notebook to test: give NOTEBOOK..., list ci_notebooks in [tool.cd4ml_nb], or record a "
                       "baseline with `cd4ml-nb test NOTEBOOK --update`")
    if args.sync:
        sync_first(paths, args.tracking_uri)
    options = regression.CheckOptions(parameters=values or {}, parameter_texts=parameter_texts(args.param),
                                      seeds=args.seeds, rtol=args.rtol, atol=args.atol, baseline=args.baseline,
                                      update=args.update, progress=not (args.quiet or args.json))
    report = regression.run_regression(project, paths, options, warn)
    if args.json:
        say(json.dumps(report.to_json(), indent=2, default=str))
        return report.exit_code
    for outcome in report.outcomes:
        say(regression.describe(outcome))
    counts = {s: sum(o.status == s for o in report.outcomes) for s in ("pass", "regression", "cannot-evaluate")}
    if args.update:
        say(f"\nbaseline(s) written for {sum(o.status == 'recorded' for o in report.outcomes)} notebook(s): "
             "review and commit them")
    else:
        say(f"\n{counts['pass']} within tolerance, {counts['regression']} regression(s), "
             f"{counts['cannot-evaluate']} cannot be evaluated")
    return report.exit_code


def _heading(name: str) -> None:
    say(f"\n== ci: {name} ==")


def _run_pipeline(project) -> tuple[object | None, int]:
    """Run the project's pipeline when it has one (only the steps that changed execute): (the
    pipeline or None, 0 or 4 when a step did not finish)."""
    from .. import pipeline, pipeline_run
    from .pipeline import step_line

    pipe = pipeline.load_if_present(project)
    if pipe is None:
        return None, 0
    _heading(f"pipeline ({pipe.file})")
    result = pipeline_run.run_pipeline(pipe, project, on_step=lambda r: say(step_line(r)), warn=warn)
    if result.status != "FINISHED":
        failed = [s.step for s in result.steps if s.status != "FINISHED"]
        say(f"ci FAILED at the pipeline: step(s) {', '.join(failed)} did not finish "
            f"(parent run {result.parent_run_id})")
        return pipe, 4
    say(f"pipeline FINISHED: parent run {result.parent_run_id}; the gate reads step {pipe.last.name!r}")
    return pipe, 0


def _gate(project, selects) -> tuple[object, int]:
    """The configured gate over each selection (smoke runs, the pipeline's last step): (result, 0 / 7)."""
    from ..compare import CannotEvaluate, GateResult, gate

    checks, skipped = [], []
    for select in selects:
        try:
            found = gate(project, gate_specs(list(project.config.ci_gate)), select=select)
        except CannotEvaluate as e:
            say(f"ci cannot evaluate the gate on the runs of {select.label}: {e}")
            return None, 7
        checks += found.checks
        skipped += found.skipped
    result = GateResult(tuple(checks), tuple(skipped))
    for line in [c.describe() for c in result.checks] + [s.describe() for s in result.skipped]:
        say(line)
    return result, 0


def cmd_ci(args: argparse.Namespace) -> int:
    """check pairs (3) -> the pipeline when cd4ml-pipeline.yaml exists (4) -> smoke runs (4) and
    their regression test against the committed baselines (5; 7 cannot evaluate) -> nbval with
    --nbval or ci_nbval = true (5) -> gate (6; 7) -> report."""
    import subprocess
    import tempfile

    from .. import pairing, params, regression, report
    from ..compare import compare
    from ..history import CI, STEP, Selection

    project = project_at(".", args.tracking_uri)
    cfg = project.config
    smoke = Selection(kind=CI)  # smoke runs are compared with the base branch's smoke runs

    _heading("pairs in sync")
    states = [pairing.compare(p, project) for p in pairing.discover_pairs([project.root], project)]
    bad = [s for s in states if not s.in_sync]
    for s in bad:
        say(f"OUT OF SYNC {project.relative(s.pair.ipynb)} <-> {project.relative(s.pair.text)}")
    if bad:
        say("ci FAILED at the pair check: run `cd4ml-nb sync` and commit")
        return 3
    say(f"{len(states)} pair(s) in sync")
    notebooks_ = [project.confine(n) for n in cfg.ci_notebooks]
    values = params.load_values_file(project.root / cfg.ci_params) if cfg.ci_params else None
    pipe, code = _run_pipeline(project)
    if code:
        return code
    # the gate and the report read the smoke runs, and the pipeline's last step when there is one
    selects = ([smoke] if notebooks_ or pipe is None else []) + (
        [Selection(kind=STEP, step=pipe.last.name)] if pipe is not None else [])
    outcomes = []
    if notebooks_:
        _heading("smoke runs")
    smoke_run = regression.CheckOptions(parameters=values or {}, files_only=True, always_run=True, via="ci")
    for nb in notebooks_:  # each smoke run is the regression test's run (tagged cd4ml.test)
        outcome = regression.check_notebook(project, nb, smoke_run, warn)
        result = outcome.runs[-1]
        say(f"{project.relative(nb)}: {result.status} run {result.run_id} " +
             " ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items())))
        if result.status != "FINISHED":
            say(f"ci FAILED at the smoke run of {project.relative(nb)}: {result.error}")
            return 4
        outcomes.append(outcome)
    if outcomes:
        _heading("regression test (committed baselines)")
        for outcome in outcomes:
            if outcome.baseline is None:
                say(f"{outcome.notebook}: no committed baseline, not compared (the gate compares it with the base "
                     f"branch); {outcome.next_step}")
            else:
                say(regression.describe(outcome))
        if any(o.status == "regression" for o in outcomes):
            say("ci FAILED at the regression test")
            return 5
        if any(o.status == "cannot-evaluate" and o.baseline is not None for o in outcomes):
            say("ci cannot evaluate the regression test")
            return 7
    nbval = args.nbval or cfg.ci_nbval
    if nbval and notebooks_:
        _heading("nbval")
        ipynbs = [str(n.with_suffix(".ipynb")) for n in notebooks_]
        with tempfile.TemporaryDirectory(prefix="cd4ml-nbval-") as scratch:  # nbval's runs are checks, not
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db"}  # experiments
            done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                                   "-o", "addopts=", "-o", "testpaths=", *ipynbs], cwd=project.root, env=env)
        if done.returncode != 0:
            say("ci FAILED at nbval")
            return 5
    gate_result = None
    if cfg.ci_gate:
        _heading("gate")
        gate_result, code = _gate(project, selects)
        if code:
            return code
    _heading("report")
    comparison = compare(project, goals=dict(cfg.metric_goals), select=selects[-1])
    text = report.markdown(project, comparison, report.code_diff(project, comparison.base), gate_result)
    if args.report:  # relative to the current folder
        out = Path(args.report).resolve()
    elif cfg.ci_report:  # relative to the root
        out = project.root / cfg.ci_report
    else:  # the git-ignored state folder: ci leaves the work tree as it found it
        out = project.ensure_state_dir() / "ci-report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    say(f"wrote {project.relative(out)}")
    if gate_result is not None and not gate_result.passed:
        say("ci FAILED at the gate")
        return 6
    say("ci passed")
    return 0


def register(add) -> None:
    """Declare this module's subcommands."""
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
    step_option(p)
    p.add_argument("--sync", action="store_true", help="sync the notebook's pair first when its sides differ "
                   "(without it such a run is refused)")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable result")

    p = add("ci", cmd_ci, "the CI sequence: pairs, smoke runs with the regression test, gate, report "
            "([tool.cd4ml_nb] ci_*); exit 3 pairs out of sync, 4 smoke run failed, 5 regression, 6 gate failed, "
            "7 cannot evaluate")
    p.add_argument("--nbval", action="store_true", help="also run nbval --nbval-lax on the notebooks")
    p.add_argument("--report", metavar="PATH", help="write the review report here (default: ci_report, "
                   "else .cd4ml/ci-report.md, git-ignored)")
    p.add_argument("--tracking-uri", metavar="URI")

