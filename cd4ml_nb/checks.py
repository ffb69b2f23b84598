"""What a regression test compares, and how: the metrics a run logs and the outputs of cells tagged
``regression``, each number within ``atol + rtol * |baseline|`` (numpy's ``isclose``), the rest of
the text with ids, addresses, timestamps and absolute paths masked."""
from __future__ import annotations

import html as html_lib
import json
import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .exceptions import BadInput, ConfigError
from .project import Project

REGRESSION_TAG = "regression"
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
