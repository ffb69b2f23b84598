"""Notebook regression tests: run a notebook, compare its results with a baseline within a tolerance.

What is compared:

- the **metrics** the run logs, per metric within ``atol + rtol * |baseline|`` (numpy's ``isclose``),
  per-metric overrides in ``[tool.cd4ml_nb] test_tolerances``; with K seeds, the mean over the
  seeds against the baseline's mean, widened by the baseline's spread (standard deviation);
- the outputs of cells tagged ``regression``: every number found in their text (``text/plain``,
  a DataFrame's HTML, ``application/json``, printed text) within the same tolerance, the rest as
  text with ids, addresses, timestamps and absolute paths masked and white space collapsed.

The baseline is a committed file ``.cd4ml-baselines/<notebook>.json`` (written by ``--update``,
reviewed like code), else the base branch's latest FINISHED run of the notebook; or a branch, a
run id or a folder of baseline files given explicitly.

Outcomes: ``pass`` (exit 0), ``regression`` (exit 1: a value beyond its tolerance, a changed
text, or a run that no longer finishes), ``cannot-evaluate`` (exit 2: no baseline, a metric no
longer logged…, each with what to run next), ``recorded`` (``--update``, exit 0).

Nothing here imports a test framework or a web framework: the CLI (``cd4ml-nb test``), ``cd4ml-nb
ci`` and the pytest plugin are adapters over :func:`check_notebook`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import history, pairing
from .baselines import Baseline, baseline_path, resolve_baseline, write_baseline_file
from .checks import (CellOutputs, Check, MetricValues, Tolerance, aggregate, compare_cell, compare_metric, 
                     regression_cells, tolerances)
from .exceptions import BadInput
from .project import Project

TEST_TAG = "cd4ml.test"
RESULT_TAG = "cd4ml.test.result"
PASS, REGRESSION, CANNOT, RECORDED = "pass", "regression", "cannot-evaluate", "recorded"
EXIT_CODES = {PASS: 0, RECORDED: 0, REGRESSION: 1, CANNOT: 2}

# --- one notebook -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NotebookOutcome:
    """The regression test of one notebook."""

    notebook: str
    status: str  # pass | regression | cannot-evaluate | recorded
    checks: tuple[Check, ...] = ()
    problems: tuple[str, ...] = ()  # why it cannot be evaluated, or why the run failed
    next_step: str = ""
    notes: tuple[str, ...] = ()
    baseline: Baseline | None = None
    run_ids: tuple[str, ...] = ()
    runs: tuple[Any, ...] = ()  # runner.RunResult of each run (seed)
    recorded: str | None = None  # the baseline file written by --update
    metrics: dict[str, MetricValues] = field(default_factory=dict)  # what the runs logged now

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> dict:
        return {"notebook": self.notebook, "status": self.status, "exit_code": self.exit_code,
                "checks": [c.to_json() for c in self.checks], "problems": list(self.problems),
                "next": self.next_step, "notes": list(self.notes),
                "baseline": self.baseline.to_json() if self.baseline else None,
                "run_ids": list(self.run_ids), "recorded": self.recorded,
                "metrics": {k: v.to_json() for k, v in self.metrics.items()}}


@dataclass(frozen=True)
class RegressionReport:
    """The outcomes of every notebook tested; the exit code is the worst one (1 over 2)."""

    outcomes: tuple[NotebookOutcome, ...]

    @property
    def exit_code(self) -> int:
        codes = {o.exit_code for o in self.outcomes}
        return 1 if 1 in codes else 2 if 2 in codes else 0

    def to_json(self) -> dict:
        return {"exit_code": self.exit_code, "notebooks": [o.to_json() for o in self.outcomes]}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if value == value else "nan"
    return "-" if value is None else str(value)


def table_rows(outcomes: Sequence[NotebookOutcome]) -> list[tuple[str, ...]]:
    return [("ok" if c.passed else "FAIL", c.notebook, c.item, _fmt(c.baseline), _fmt(c.now),
             f"{c.delta:+.3g}" if c.delta is not None else "-", c.tolerance or "-")
            for o in outcomes for c in o.checks]


TABLE_HEADER = ("result", "notebook", "metric or cell", "baseline", "now", "delta", "tolerance")


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] = TABLE_HEADER) -> str:
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def describe(outcome: NotebookOutcome) -> str:
    """A notebook's outcome as text: a heading, the table, problems, notes and what to do next."""
    runs = f"{len(outcome.run_ids)} run(s): {', '.join(r[:12] for r in outcome.run_ids)}" if outcome.run_ids \
        else "not run"
    against = f" against {outcome.baseline.source}" if outcome.baseline and outcome.status != RECORDED else ""
    verdict = {PASS: "within tolerance", REGRESSION: "REGRESSION", CANNOT: "CANNOT EVALUATE",
               RECORDED: f"baseline recorded in {outcome.recorded}"}[outcome.status]
    lines = [f"{outcome.notebook}: {verdict} ({runs}{against})"]
    if outcome.checks:
        lines.append(format_table(table_rows([outcome])))
    lines += [f"  {p}" for p in outcome.problems]
    lines += [f"  note: {n}" for n in outcome.notes]
    if outcome.next_step:
        lines.append(f"  next: {outcome.next_step}")
    return "\n".join(lines)


def _plan(contract, base: Baseline | None, texts: dict[str, str], given: dict[str, Any], seed_parameter: str | None,
          k: int, name: str) -> tuple[dict[str, Any], list[Any], list[str]]:
    """(values for every run, the seeds (``[None]`` without ``--seeds``), notes): the baseline's
    parameters that are still declared, overridden by those given; seeds count up from the given
    seed, else the baseline's first seed, else the declared default."""
    from . import params

    notes: list[str] = []
    values = {key: v for key, v in (base.parameters if base else {}).items() if key != seed_parameter}
    dropped = sorted(set(values) - set(contract.names()))
    for key in dropped:
        values.pop(key)
    if dropped:
        notes.append(f"the baseline's parameter(s) {', '.join(dropped)} are no longer declared: left out")
    explicit = params.validate(contract, texts, given, where=name) if (texts or given) else {}
    if base is not None:
        changed = {key: v for key, v in explicit.items() if key != seed_parameter and base.parameters.get(key) != v}
        if changed:
            notes.append("parameters differ from the baseline's: " + ", ".join(
                f"{key}={v!r} (baseline {base.parameters.get(key)!r})" for key, v in changed.items()))
    values.update(given)
    if seed_parameter is None:
        return values, [None], notes
    first = explicit.get(seed_parameter)
    if first is None and base is not None:
        first = base.seeds[0] if base.seeds else base.parameters.get(seed_parameter)
    if first is None:
        first = contract.get(seed_parameter).default
    if isinstance(first, bool) or not isinstance(first, int):
        first = 0
    return values, [first + i for i in range(k)], notes


def _run_seeds(project: Project, nb, values: dict[str, Any], texts: dict[str, str],
               seeding: tuple[str | None, list[Any]], tags: dict[str, str], progress: bool,
               warn: Callable[[str], None]) -> list:
    """One tracked run per seed (``seeding``: the seed parameter and its values), stopping at the
    first that does not finish (KILLED: interrupted)."""
    seed_parameter, seeds = seeding
    from .runner import Callbacks, RunOptions, run_notebook

    results = []
    for seed in seeds:
        run_values, run_texts, run_tags = dict(values), dict(texts), dict(tags)
        if seed is not None:
            run_values[seed_parameter] = seed
            run_texts.pop(seed_parameter, None)
            run_tags["cd4ml.test.seed"] = str(seed)
        result = run_notebook(nb.path, run_values, parameter_texts=run_texts, project=project,
                              options=RunOptions(progress=progress, extra_tags=run_tags), callbacks=Callbacks(warn=warn))
        results.append(result)
        if result.status == "KILLED":
            raise KeyboardInterrupt
        if result.status != "FINISHED":
            break
    return results


def check_options(seeds: int | None, baseline: str | None, update: bool) -> None:
    """BadInput for options that cannot work together, before anything runs."""
    if seeds is not None and seeds < 1:
        raise BadInput(f"--seeds {seeds}: give at least 1")
    if update and baseline is not None and not Path(baseline).is_dir():
        raise BadInput(f"--update writes baseline files: --baseline {baseline!r} must be a folder (or left out)")


@dataclass(frozen=True)
class CheckOptions:
    """How notebooks are regression-tested (``cd4ml-nb test``, ``cd4ml-nb ci``, ``pytest --cd4ml``)."""

    parameters: Mapping[str, Any] = field(default_factory=dict)  # typed values (YAML/JSON)
    parameter_texts: Mapping[str, str] = field(default_factory=dict)  # command-line texts
    seeds: int | None = None  # run K seeds and compare means
    rtol: float | None = None
    atol: float | None = None
    baseline: str | None = None  # a branch, a run id (prefix) or a folder of baseline files
    update: bool = False  # write the baseline files instead of comparing
    files_only: bool = False  # never fall back to a run for the baseline
    always_run: bool = False  # run even without a baseline (a smoke run)
    via: str = "cli"  # cli | ci | pytest: recorded on the runs
    progress: bool = False


def check_notebook(project: Project, path: str | Path, options: CheckOptions = CheckOptions(),
                   warn: Callable[[str], None] | None = None) -> NotebookOutcome:
    """Run one notebook (K seeds with ``seeds``) as tracked runs tagged ``cd4ml.test=true`` and
    compare with its baseline; with ``update``, write the baseline file instead.

    ``baseline``: None (the committed file, else the base branch's latest FINISHED run), a branch,
    a run id (prefix), or a folder of baseline files. ``files_only``: never fall back to a run (a
    notebook without a baseline file is then ``cannot-evaluate``). ``always_run``: run it even without
    a baseline (a smoke run; the outcome is still ``cannot-evaluate``). Raises BadInput for unusable
    input (a notebook that cannot be read, values that do not fit its parameters).
    """
    from . import notebooks, params

    warn = warn or (lambda message: None)
    texts, given = dict(options.parameter_texts), dict(options.parameters)
    seeds, baseline, update = options.seeds, options.baseline, options.update
    nb = notebooks.read(project.confine(Path(path).resolve(), allow_hidden=True))
    name = pairing.notebook_id(project, nb.path, nb.node)
    contract = params.read_contract(nb.node, nb.path)
    check_options(seeds, baseline, update)
    k = seeds or 1
    seed_parameter = project.config.test_seed_parameter if seeds else None
    if seed_parameter and contract.get(seed_parameter) is None:
        return NotebookOutcome(name, CANNOT, problems=(
            f"--seeds {k}: {name} has no parameter {seed_parameter!r} in its cell tagged 'parameters' "
            f"(declared: {contract.describe()})",),
            next_step=f"add `{seed_parameter}: int = 0` to its parameters cell and use it, or set "
                      "test_seed_parameter in [tool.cd4ml_nb]")
    want_cells = bool(regression_cells(nb.node))
    base: Baseline | None = None
    problem = next_step = ""
    if not update:
        base, problem, next_step = resolve_baseline(project, name, nb.path.stem, baseline, k, want_cells,
                                                    options.files_only)
        if base is None and not options.always_run:
            return NotebookOutcome(name, CANNOT, problems=(problem,), next_step=next_step)
    tol = tolerances(project, options.rtol, options.atol)
    values, seed_list, notes = _plan(contract, base, texts, given, seed_parameter, k, name)
    kind = history.CI if options.via == "ci" else history.TEST
    tags = {TEST_TAG: "true", "cd4ml.test.via": options.via, history.KIND: kind,
            **({"cd4ml.test.update": "true"} if update else {})}
    results = _run_seeds(project, nb, values, texts, (seed_parameter, seed_list), tags, options.progress, warn)
    run_ids = tuple(r.run_id for r in results if r.run_id)
    failed = next((r for r in results if r.status != "FINISHED"), None)
    if failed is not None:
        outcome = NotebookOutcome(
            name, REGRESSION, (Check(name, "run", "FINISHED", failed.status, False, kind="run",
                                     tolerance="must finish"),),
            problems=(f"run {failed.run_id} {failed.status}: {failed.error}",),
            next_step=f"see the executed notebook {failed.executed}" if failed.executed else "",
            notes=tuple(notes), baseline=base, run_ids=run_ids, runs=tuple(results))
        _tag_result(project, outcome, warn)
        return outcome
    now_metrics = aggregate([r.metrics for r in results])
    now_cells = _executed_cells(results[0])
    if base is None and not update:  # always_run: it ran, there is nothing to compare with
        outcome = NotebookOutcome(name, CANNOT, problems=(problem,), next_step=next_step, notes=tuple(notes),
                                  run_ids=run_ids, runs=tuple(results), metrics=now_metrics)
        _tag_result(project, outcome, warn)
        return outcome
    if update:
        first = results[0]
        recorded = {key: v for key, v in first.parameters.items() if key != seed_parameter}
        new = Baseline(name, "", now_metrics, tuple(now_cells or ()), recorded, seed_parameter,
                       tuple(seed_list) if seed_parameter else (), run_ids, first.git_commit)
        target = baseline_path(project, name, Path(baseline).resolve() if baseline else None)
        write_baseline_file(target, new)
        if not now_metrics and not now_cells:
            notes.append("the notebook logs no metric and tags no cell 'regression': the baseline compares nothing")
        return NotebookOutcome(name, RECORDED, notes=tuple(notes), baseline=new, run_ids=run_ids,
                               runs=tuple(results), recorded=project.relative(target), metrics=now_metrics)
    outcome = _compare(name, base, now_metrics, now_cells, tol, seed_list if seed_parameter else None, notes)
    outcome = NotebookOutcome(outcome.notebook, outcome.status, outcome.checks, outcome.problems, outcome.next_step,
                              outcome.notes, base, run_ids, tuple(results), metrics=now_metrics)
    _tag_result(project, outcome, warn)
    return outcome


def _executed_cells(result) -> list[CellOutputs] | None:
    if result.executed is None:
        return None
    try:
        return regression_cells(json.loads(Path(result.executed).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _compare(name: str, base: Baseline, now_metrics: dict[str, MetricValues], now_cells: list[CellOutputs] | None,
             tol: Callable[[str | None], Tolerance], seed_list: list | None, notes: list[str]) -> NotebookOutcome:
    checks: list[Check] = []
    problems: list[str] = []
    update = f"if the change is intended, record a new baseline: `cd4ml-nb test {name} --update`"
    for metric, values in sorted(base.metrics.items()):
        if metric not in now_metrics:
            problems.append(f"metric {metric!r} is in the baseline but was not logged now "
                            f"(logged: {', '.join(sorted(now_metrics)) or 'none'})")
            continue
        if len(now_metrics[metric].values) < (len(seed_list) if seed_list else 1):
            problems.append(f"metric {metric!r} was logged by {len(now_metrics[metric].values)} of "
                            f"{len(seed_list or [1])} runs")
            continue
        checks.append(compare_metric(name, metric, values, now_metrics[metric], tol(metric)))
    extra = sorted(set(now_metrics) - set(base.metrics))
    if extra:
        notes.append(f"metric(s) not in the baseline, not compared: {', '.join(extra)}")
    if seed_list and len(base.metrics) and all(len(v.values) == 1 for v in base.metrics.values()):
        notes.append("the baseline has one value per metric (no spread): the mean must match within the tolerance")
    if base.seeds and seed_list and list(base.seeds) != list(seed_list):
        notes.append(f"seeds differ from the baseline's ({list(base.seeds)} now {seed_list})")
    cells_compared = False
    if base.cells is None:
        notes.append("the baseline run's executed notebook is not available: cells tagged 'regression' not compared")
    elif now_cells is None:
        notes.append("the executed notebook was not written: cells tagged 'regression' not compared")
    elif len(base.cells) != len(now_cells):
        problems.append(f"{len(now_cells)} cell(s) tagged 'regression' now, {len(base.cells)} in the baseline")
    else:
        for a, b in zip(base.cells, now_cells):
            checks.extend(compare_cell(name, a, b, tol(None)))
            cells_compared = True
    if not checks and not problems:
        problems.append("nothing to compare: the baseline has no metric and no cell tagged 'regression'")
    if problems:
        return NotebookOutcome(name, CANNOT, tuple(checks), tuple(problems),
                               f"record a new baseline with `cd4ml-nb test {name} --update`", tuple(notes))
    if cells_compared and seed_list and len(seed_list) > 1:
        notes.append(f"cells tagged 'regression' compared on the first seed ({seed_list[0]})")
    failed = any(not c.passed for c in checks)
    return NotebookOutcome(name, REGRESSION if failed else PASS, tuple(checks), (), update if failed else "",
                           tuple(notes))


def _tag_result(project: Project, outcome: NotebookOutcome, warn: Callable[[str], None]) -> None:
    """Record the verdict on the test's runs (tag ``cd4ml.test.result``)."""
    if not outcome.run_ids:
        return
    try:
        from . import tracking

        c = tracking.client(project)
        for run_id in outcome.run_ids:
            c.set_tag(run_id, RESULT_TAG, outcome.status)
    except Exception as e:  # the verdict is printed anyway; a store that went away must not hide it
        warn(f"could not tag the test runs with their result: {e}")


# --- many notebooks ---------------------------------------------------------------------------


def default_notebooks(project: Project) -> list[Path]:
    """What ``cd4ml-nb test`` tests without arguments: the notebooks with a committed baseline
    file and the ``ci_notebooks``."""
    found: list[Path] = []
    folder = project.root / project.config.test_baselines_dir
    for file in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            name = json.loads(file.read_text(encoding="utf-8")).get("notebook")
        except (OSError, ValueError, AttributeError):
            name = None
        if isinstance(name, str) and (project.root / name).is_file():
            found.append((project.root / name).resolve())
    found += [project.confine(n) for n in project.config.ci_notebooks]
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def run_regression(project: Project, paths: Sequence[str | Path], options: CheckOptions = CheckOptions(),
                   warn: Callable[[str], None] | None = None) -> RegressionReport:
    """:func:`check_notebook` on each notebook; bad input in one (an unreadable notebook, values
    that do not fit) makes it ``cannot-evaluate`` without stopping the others."""
    check_options(options.seeds, options.baseline, options.update)
    outcomes = []
    for path in paths:
        try:
            outcomes.append(check_notebook(project, path, options, warn))
        except BadInput as e:
            outcomes.append(NotebookOutcome(project.relative(Path(path)), CANNOT, problems=(str(e),)))
    return RegressionReport(tuple(outcomes))


__all__ = ["CheckOptions", "NotebookOutcome", "RegressionReport", "check_notebook", "run_regression", "describe", "format_table",
           "default_notebooks"]
