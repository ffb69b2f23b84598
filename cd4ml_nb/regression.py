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

import html as html_lib
import json
import math
import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import history, pairing
from .exceptions import BadInput, ConfigError, NotebookError
from .project import Project

REGRESSION_TAG = "regression"
TEST_TAG = "cd4ml.test"
RESULT_TAG = "cd4ml.test.result"
BASELINE_FORMAT = 1
PASS, REGRESSION, CANNOT, RECORDED = "pass", "regression", "cannot-evaluate", "recorded"
EXIT_CODES = {PASS: 0, RECORDED: 0, REGRESSION: 1, CANNOT: 2}
TEXT_MIMES = ("application/json", "text/plain", "text/html", "text/markdown", "text/latex")

# --- tolerance --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """``|now - baseline| <= atol + rtol * |baseline| + spread`` (NaN equals NaN, inf equals itself)."""

    rtol: float
    atol: float

    def allowed(self, baseline: float, spread: float = 0.0) -> float:
        return self.atol + self.rtol * abs(baseline) + spread

    def holds(self, baseline: float, now: float, spread: float = 0.0) -> bool:
        if math.isnan(baseline) or math.isnan(now):
            return math.isnan(baseline) and math.isnan(now)
        if math.isinf(baseline) or math.isinf(now):
            return baseline == now
        return abs(now - baseline) <= self.allowed(baseline, spread) * (1 + 1e-12)

    def describe(self, baseline: float, spread: float = 0.0) -> str:
        text = f"±{self.allowed(baseline, spread):.3g}"
        if spread:
            return f"{text} (rtol {self.rtol:g}, atol {self.atol:g}, spread {spread:.3g})"
        return f"{text} (rtol {self.rtol:g}, atol {self.atol:g})"


def tolerances(project: Project, rtol: float | None = None, atol: float | None = None
               ) -> Callable[[str | None], Tolerance]:
    """The tolerance of a metric (None: cell outputs): flags, else per-metric config, else the
    configured defaults. A malformed ``test_tolerances`` entry is a ConfigError naming the file."""
    cfg = project.config
    where = f"{project.root / 'pyproject.toml'}: [tool.cd4ml_nb] test_tolerances"
    per_metric: dict[str, Tolerance] = {}
    for metric, entry in dict(cfg.test_tolerances).items():
        unknown = set(entry) - {"rtol", "atol"}
        values = {k: entry.get(k) for k in ("rtol", "atol")}
        bad = [k for k, v in values.items() if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                                   or v < 0)]
        if unknown or bad:
            raise ConfigError(f"{where}: {metric} = {entry!r}: use rtol and atol, numbers >= 0")
        per_metric[metric] = Tolerance(float(values["rtol"] if values["rtol"] is not None else cfg.test_rtol),
                                       float(values["atol"] if values["atol"] is not None else cfg.test_atol))
    for flag, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and not value >= 0:
            raise BadInput(f"{flag} {value!r} must be a number >= 0")
    default = Tolerance(cfg.test_rtol, cfg.test_atol)

    def of(metric: str | None) -> Tolerance:
        base = per_metric.get(metric, default) if metric else default
        return Tolerance(base.rtol if rtol is None else rtol, base.atol if atol is None else atol)

    return of


# --- text: normalisation and numbers ----------------------------------------------------------

_MASKS = (
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?\b"), "<timestamp>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<address>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{12,}\b"), "<id>"),  # run ids, hashes
    (re.compile(r"(?:file://)?(?<![\w.~])(?:/[\w.@+~-]+){2,}/?|\b[A-Za-z]:\\(?:[\w.@+~ -]+\\)*[\w.@+~-]*"), "<path>"),
)
_NUMBER = re.compile(r"(?<![\w.])(?:[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?))(?!\w)",
                     re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """``text`` with what differs between identical runs masked: timestamps, times, uuids, long
    hex ids, memory addresses, absolute paths."""
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


def split_numbers(text: str) -> tuple[str, list[float]]:
    """(template, numbers): the numbers replaced by ``#`` and white space collapsed, and their values."""
    numbers = [float(m.group(0)) for m in _NUMBER.finditer(text)]
    template = _SPACE.sub(" ", _NUMBER.sub("#", text)).strip()
    return template, numbers


def html_text(markup: str) -> str:
    """The visible text of an HTML output (a DataFrame's table): tags dropped, entities decoded."""
    markup = re.sub(r"(?is)<(style|script)\b.*?</\1\s*>", " ", markup)
    return html_lib.unescape(re.sub(r"(?s)<[^>]*>", " ", markup))


def output_texts(cell: dict) -> list[str]:
    """The comparable texts of one cell's outputs: stdout (its chunks joined), each result in its
    first text form (JSON, plain text, HTML text …), errors as ``ename: evalue``; stderr (warnings)
    and images are not compared."""
    texts: list[str] = []
    stdout: int | None = None
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") != "stdout":
                continue
            text = _joined(out.get("text", ""))
            if stdout is None:
                stdout = len(texts)
                texts.append(text)
            else:
                texts[stdout] += text
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            mime = next((m for m in TEXT_MIMES if m in data), None)
            if mime == "application/json":
                texts.append(json.dumps(data[mime], sort_keys=True))
            elif mime == "text/html":
                texts.append(html_text(_joined(data[mime])))
            elif mime is not None:
                texts.append(_joined(data[mime]))
        elif kind == "error":
            texts.append(f"{out.get('ename', '')}: {out.get('evalue', '')}")
    return [normalise(t) for t in texts]


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class CellOutputs:
    """The normalised output texts of one cell tagged ``regression`` (``index``: its cell index)."""

    index: int
    outputs: tuple[str, ...]

    def to_json(self) -> dict:
        return {"index": self.index, "outputs": list(self.outputs)}


def regression_cells(node: Any) -> list[CellOutputs]:
    """The cells tagged ``regression`` of a notebook (a dict or nbformat node), in order. Cells a
    runner injected (tagged ``cd4ml-injected``/``injected-parameters``) are not counted."""
    found, index = [], 0
    for cell in node.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if "cd4ml-injected" in tags or "injected-parameters" in tags:
            continue
        if cell.get("cell_type") == "code" and REGRESSION_TAG in tags:
            found.append(CellOutputs(index, tuple(output_texts(cell))))
        index += 1
    return found


# --- rows of the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One row of the table: a metric, a number or text of a cell, or the run itself."""

    notebook: str
    item: str  # "nwrmsle", "cell 4 number 2", "cell 4 text", "run"
    baseline: Any
    now: Any
    passed: bool
    delta: float | None = None
    tolerance: str = ""
    kind: str = "metric"  # metric | cell | run
    allowed: float | None = None  # the largest |delta| that passes

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def compare_metric(notebook: str, metric: str, base: "MetricValues", now: "MetricValues", tol: Tolerance) -> Check:
    """One metric: the mean now against the baseline's mean, widened by the baseline's spread."""
    delta = _finite(now.mean - base.mean) if not (math.isinf(now.mean) or math.isinf(base.mean)) else None
    label = metric if len(now.values) == 1 and len(base.values) == 1 else \
        f"{metric} (mean of {len(now.values)} vs {len(base.values)})"
    return Check(notebook, label, base.mean, now.mean, tol.holds(base.mean, now.mean, base.spread), delta,
                 tol.describe(base.mean, base.spread), "metric", tol.allowed(base.mean, base.spread))


def _first_difference(a: str, b: str) -> tuple[str, str]:
    lines_a, lines_b = a.splitlines() or [""], b.splitlines() or [""]
    for x, y in zip(lines_a, lines_b):
        if _SPACE.sub(" ", x).strip() != _SPACE.sub(" ", y).strip():
            return x.strip(), y.strip()
    n = min(len(lines_a), len(lines_b))
    return ("\n".join(lines_a[n:]).strip() or "(end)", "\n".join(lines_b[n:]).strip() or "(end)")


def compare_cell(notebook: str, base: CellOutputs, now: CellOutputs, tol: Tolerance) -> list[Check]:
    """A regression cell: one row per number beyond tolerance and per changed text, else one row."""
    where = f"cell {now.index}" + (f" (baseline cell {base.index})" if base.index != now.index else "")
    if len(base.outputs) != len(now.outputs):
        return [Check(notebook, f"{where} outputs", len(base.outputs), len(now.outputs), False, kind="cell",
                      tolerance="equal count")]
    checks: list[Check] = []
    count, worst = 0, 0.0
    for n, (a, b) in enumerate(zip(base.outputs, now.outputs)):
        label = where if len(now.outputs) == 1 else f"{where} output {n}"
        (ta, na), (tb, nb) = split_numbers(a), split_numbers(b)
        if ta != tb:
            x, y = _first_difference(a, b)
            checks.append(Check(notebook, f"{label} text", _clip(x), _clip(y), False, kind="cell",
                                tolerance="equal text"))
            continue
        for i, (x, y) in enumerate(zip(na, nb)):
            count += 1
            if not tol.holds(x, y):
                checks.append(Check(notebook, f"{label} number {i}", x, y, False, _finite(y - x)
                                    if not (math.isinf(x) or math.isinf(y)) else None, tol.describe(x), "cell",
                                    tol.allowed(x)))
            elif not math.isnan(x) and not math.isinf(x):
                worst = max(worst, abs(y - x))
    if not checks:
        checks.append(Check(notebook, where, f"{count} number(s)", "same text, numbers within", True, worst,
                            f"rtol {tol.rtol:g}, atol {tol.atol:g}", "cell"))
    return checks


def _clip(text: str, limit: int = 60) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- baselines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricValues:
    """A metric's values over the runs of one side (one per seed)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        """The sample standard deviation over seeds (0 for one value)."""
        finite = [v for v in self.values if math.isfinite(v)]
        return statistics.stdev(finite) if len(finite) > 1 else 0.0

    def to_json(self) -> dict:
        return {"mean": self.mean, "spread": self.spread, "values": list(self.values)}


def aggregate(runs_metrics: Sequence[dict[str, float]]) -> dict[str, MetricValues]:
    """Per metric, its values over the runs that logged it, in run order."""
    names = sorted({m for metrics in runs_metrics for m in metrics})
    return {m: MetricValues(tuple(float(r[m]) for r in runs_metrics if m in r)) for m in names}


@dataclass(frozen=True)
class Baseline:
    """What a notebook produced before: metrics, regression cells, and how it was run."""

    notebook: str
    source: str  # "file .cd4ml-baselines/nb.json", "run 1a2b… (latest FINISHED on 'master')"
    metrics: dict[str, MetricValues]
    cells: tuple[CellOutputs, ...] | None  # None: not known (a run whose executed notebook is gone)
    parameters: dict[str, Any] = field(default_factory=dict)
    seed_parameter: str | None = None
    seeds: tuple[Any, ...] = ()
    run_ids: tuple[str, ...] = ()
    commit: str | None = None

    def to_file(self) -> dict:
        return {
            "format": BASELINE_FORMAT,
            "notebook": self.notebook,
            "parameters": self.parameters,
            "seeds": {"parameter": self.seed_parameter, "values": list(self.seeds)} if self.seeds else None,
            "metrics": {k: v.to_json() for k, v in sorted(self.metrics.items())},
            "cells": [c.to_json() for c in self.cells or ()],
            "source": {"commit": self.commit, "runs": list(self.run_ids)},
        }

    def to_json(self) -> dict:
        data = self.to_file()
        data["source"]["description"] = self.source
        return data


def baseline_path(project: Project, notebook: str, folder: Path | None = None) -> Path:
    """``<root>/.cd4ml-baselines/<notebook without suffix>.json`` (or under ``folder``)."""
    rel = Path(notebook).with_suffix(".json")
    return (folder or project.root / project.config.test_baselines_dir) / rel


def read_baseline_file(path: Path, notebook: str, project: Project) -> Baseline:
    """A baseline file; NotebookError naming the file when it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
            raise ValueError(f"not a cd4ml-nb baseline (format {BASELINE_FORMAT})")
        metrics = {str(k): MetricValues(tuple(float(x) for x in v["values"])) for k, v in data["metrics"].items()}
        if any(not m.values for m in metrics.values()):
            raise ValueError("a metric without values")
        cells = tuple(CellOutputs(int(c["index"]), tuple(str(t) for t in c["outputs"])) for c in data["cells"])
        seeds = data.get("seeds") or {}
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError("parameters must be a mapping")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise NotebookError(f"{path}: unreadable baseline file: {e}; record it again with "
                            f"`cd4ml-nb test {notebook} --update`") from None
    source = data.get("source") or {}
    return Baseline(notebook, f"file {project.relative(path)}", metrics, cells, parameters,
                    seeds.get("parameter"), tuple(seeds.get("values") or ()), tuple(source.get("runs") or ()),
                    source.get("commit"))


def write_baseline_file(path: Path, baseline: Baseline) -> None:
    from .notebooks import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(baseline.to_file(), indent=2, sort_keys=False, allow_nan=True) + "\n")


def _run_parameters(run) -> dict[str, Any]:
    """The values a run was given (not those left at the notebook's defaults)."""
    tags = run.data.tags
    defaults = set(filter(None, tags.get("cd4ml.params.defaults", "").split(",")))
    try:
        values = json.loads(tags["cd4ml.params.json"])
    except (KeyError, ValueError):
        values = dict(run.data.params)  # texts: coerced to the declared types when re-run
    return {k: v for k, v in values.items() if k not in defaults} if isinstance(values, dict) else {}


def _run_cells(c, run, stem: str) -> tuple[CellOutputs, ...] | None:
    """The regression cells of a run's executed notebook (its ``<stem>.ipynb`` artifact)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = c.download_artifacts(run.info.run_id, f"{stem}.ipynb", tmp)
            return tuple(regression_cells(json.loads(Path(local).read_text(encoding="utf-8"))))
    except Exception:  # no such artifact (an interactive run), or the store's artifacts are gone
        return None


def run_baseline(project: Project, notebook: str, branch: str | None = None, run_id: str | None = None,
                 count: int = 1, stem: str = "", want_cells: bool = False) -> Baseline | None:
    """The ``count`` latest FINISHED runs (kind ``run`` or ``test``) of ``notebook`` on ``branch``, or run
    ``run_id``; None when there are none."""
    from . import tracking
    from .compare import finished_runs

    c = tracking.client(project)
    if run_id is not None:
        runs = [c.get_run(tracking.resolve_run_id(c, run_id))]
        if runs[0].info.status != "FINISHED":
            raise BadInput(f"--baseline {run_id}: run {runs[0].info.run_id} is {runs[0].info.status}, not FINISHED")
        source = f"run {runs[0].info.run_id[:12]}"
    else:
        experiment = tracking.branch_experiment(project, branch)
        found = c.get_experiment_by_name(experiment)
        like = {history.RUN, history.TEST}  # runs of the notebook's own parameters: not trials nor smoke runs
        grouped = history.by_notebook((r for r in finished_runs(c, found.experiment_id)
                                       if history.kind_of(r.data.tags) in like), pairing.Names(project).of) \
            if found is not None else {}
        runs = grouped.get(notebook, [])[:max(1, count)]
        if not runs:
            return None
        latest = "latest FINISHED run" if len(runs) == 1 else f"{len(runs)} latest FINISHED runs"
        source = f"{latest} on {branch!r} (run {runs[0].info.run_id[:12]})"
    first = runs[0]
    cells = _run_cells(c, first, stem) if want_cells else ()
    return Baseline(notebook, source, aggregate([dict(r.data.metrics) for r in runs]), cells,
                    _run_parameters(first), run_ids=tuple(r.info.run_id for r in runs),
                    commit=first.data.tags.get(tracking.GIT_COMMIT))


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


def resolve_baseline(project: Project, name: str, stem: str, spec: str | None,
                     count: int, want_cells: bool, files_only: bool = False
                     ) -> tuple[Baseline | None, str, str]:
    """(baseline, problem, next step): the baseline named by ``spec`` (None: the committed file,
    else the base branch's latest FINISHED run); when there is none, why and what to run."""
    from . import gitinfo

    file = baseline_path(project, name)
    record = f"record one with `cd4ml-nb test {name} --update` and commit {project.relative(file)}"
    if spec is None or Path(spec).is_dir():
        path = baseline_path(project, name, Path(spec).resolve() if spec else None)
        if path.is_file():
            return read_baseline_file(path, name, project), "", ""
        if spec or files_only:
            return None, f"no baseline: no file {project.relative(path)}", record
        base = project.base_branch
        found = run_baseline(project, name, base, count=count, stem=stem, want_cells=want_cells)
        if found is None:
            return None, (f"no baseline: no committed file {project.relative(file)} and no FINISHED run of "
                          f"{name} on the base branch {base!r}"), f"{record} (or `cd4ml-nb run {name}` on {base})"
        return found, "", ""
    if re.fullmatch(r"[0-9a-fA-F]{6,32}", spec) and not (project.in_git and gitinfo.branch_exists(project.root, spec)):
        return run_baseline(project, name, run_id=spec, stem=stem, want_cells=want_cells), "", ""
    found = run_baseline(project, name, spec, count=count, stem=stem, want_cells=want_cells)
    if found is None:
        return None, f"no baseline: no FINISHED run of {name} on branch {spec!r}", \
            f"run it there first (`cd4ml-nb run {name}`), or {record}"
    return found, "", ""


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


def _run_seeds(project: Project, nb, values: dict[str, Any], texts: dict[str, str], seed_parameter: str | None,
               seeds: list[Any], tags: dict[str, str], progress: bool, warn: Callable[[str], None]) -> list:
    """One tracked run per seed, stopping at the first that does not finish (KILLED: interrupted)."""
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


def check_notebook(
    project: Project,
    path: str | Path,
    *,
    parameters: dict[str, Any] | None = None,
    parameter_texts: dict[str, str] | None = None,
    seeds: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    baseline: str | None = None,
    update: bool = False,
    files_only: bool = False,
    always_run: bool = False,
    via: str = "cli",
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> NotebookOutcome:
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
    texts = dict(parameter_texts or {})
    given = dict(parameters or {})
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
                                                    files_only)
        if base is None and not always_run:
            return NotebookOutcome(name, CANNOT, problems=(problem,), next_step=next_step)
    tol = tolerances(project, rtol, atol)
    values, seed_list, notes = _plan(contract, base, texts, given, seed_parameter, k, name)
    tags = {TEST_TAG: "true", "cd4ml.test.via": via, history.KIND: history.CI if via == "ci" else history.TEST, **({"cd4ml.test.update": "true"} if update else {})}
    results = _run_seeds(project, nb, values, texts, seed_parameter, seed_list, tags, progress, warn)
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


def run_regression(project: Project, paths: Sequence[str | Path], **options: Any) -> RegressionReport:
    """:func:`check_notebook` on each notebook; bad input in one (an unreadable notebook, values
    that do not fit) makes it ``cannot-evaluate`` without stopping the others."""
    check_options(options.get("seeds"), options.get("baseline"), options.get("update", False))
    outcomes = []
    for path in paths:
        try:
            outcomes.append(check_notebook(project, path, **options))
        except BadInput as e:
            outcomes.append(NotebookOutcome(project.relative(Path(path)), CANNOT, problems=(str(e),)))
    return RegressionReport(tuple(outcomes))


__all__ = ["Baseline", "Check", "CellOutputs", "MetricValues", "NotebookOutcome", "RegressionReport", "Tolerance",
           "check_notebook", "run_regression", "normalise", "split_numbers", "output_texts", "regression_cells",
           "compare_cell", "compare_metric", "aggregate", "describe", "format_table"]
