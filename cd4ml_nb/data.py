"""The data axes of a run: schema and sampling fingerprints of the datasets a notebook uses.

``log_dataset`` (called in a notebook) records a pandas DataFrame three ways: as an MLflow dataset
input of the run (digest, schema, profile: the MLflow UI shows it), as tags
(``cd4ml.data.<name>.schema`` / ``.digest`` / ``.rows``) and as the artifact
``cd4ml_data/<name>.json`` holding the full fingerprint that ``cd4ml-nb diff`` compares.
pandas and mlflow are imported inside the functions that need them.

The schema axis compares *logical* column types (:data:`LOGICAL_TYPES`), not pandas dtype names:
``object`` holding strings (pandas 2) and ``str`` (pandas 3) are both ``string``, ``int64`` and
``Int64`` both ``integer``. Fingerprints recorded before carry only dtype names; those are mapped
to logical types when compared (:func:`logical_of_dtype_name`).
"""
from __future__ import annotations

import logging
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import BadInput

log = logging.getLogger(__name__)

TAG_PREFIX = "cd4ml.data."
ARTIFACT_DIR = "cd4ml_data"
QUANTILES = tuple(i / 10 for i in range(11))  # deciles, min and max included
PSI_THRESHOLD = 0.1  # population stability index: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift
MISSING_THRESHOLD = 0.05  # change in a column's missing fraction that counts as a shift
LOGICAL_TYPES = ("integer", "float", "boolean", "string", "datetime", "category", "other")
_DTYPE_NAMES = (  # recorded pandas/numpy/pyarrow dtype name -> logical type, first match wins
    (re.compile(r"category$"), "category"),
    (re.compile(r"bool"), "boolean"),
    (re.compile(r"u?int\d*(\[|$)"), "integer"),
    (re.compile(r"(float|double|halffloat)\d*(\[|$)"), "float"),
    (re.compile(r"(datetime64|timestamp|date\d+)"), "datetime"),
    (re.compile(r"(object|str|string|large_string)(\[|$)"), "string"),
)


def schema_tag(name: str) -> str:
    return f"{TAG_PREFIX}{name}.schema"


def digest_tag(name: str) -> str:
    return f"{TAG_PREFIX}{name}.digest"


def rows_tag(name: str) -> str:
    return f"{TAG_PREFIX}{name}.rows"


@dataclass(frozen=True)
class ColumnProfile:
    """Sampling statistics of one column (numeric ones get mean/std/quantiles, others cardinality)."""

    dtype: str
    missing: int
    mean: float | None = None
    std: float | None = None
    quantiles: tuple[float, ...] | None = None  # at QUANTILES
    cardinality: int | None = None


@dataclass(frozen=True)
class Fingerprint:
    """Schema and sampling fingerprints of one dataset."""

    name: str
    context: str
    source: str | None
    schema: dict[str, str]  # column -> pandas dtype name, in column order (informational)
    schema_hash: str  # of the logical schema (before: of the dtype names)
    rows: int
    digest: str  # content: every value, the index and the column names
    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    logical: dict[str, str] = field(default_factory=dict)  # column -> logical type; empty in old records

    @property
    def logical_schema(self) -> dict[str, str]:
        """Column -> logical type, in column order; derived from the dtype names for old records."""
        return self.logical or {c: logical_of_dtype_name(t) for c, t in self.schema.items()}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Fingerprint":
        columns = {k: ColumnProfile(**{**v, "quantiles": tuple(v["quantiles"]) if v.get("quantiles") else None})
                   for k, v in data.get("columns", {}).items()}
        return cls(**{**data, "columns": columns})


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def logical_of_dtype_name(name: str) -> str:
    """The logical type of a recorded dtype name (``int64``, ``Int64``, ``object``, ``str``, ...).

    ``object`` maps to ``string``: that is what pandas before 3 called a column of strings."""
    name = name.strip().lower()
    if name in LOGICAL_TYPES:
        return name
    return next((kind for pattern, kind in _DTYPE_NAMES if pattern.match(name)), "other")


def logical_type(series) -> str:
    """The logical type of a pandas Series: stable across pandas versions and storage backends."""
    import pandas as pd
    from pandas.api import types

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if dtype == object:  # strings (pandas < 3 default), or values of mixed types
        return "string" if types.infer_dtype(series, skipna=True) in ("string", "empty") else "other"
    checks = ((types.is_bool_dtype, "boolean"), (types.is_integer_dtype, "integer"),
              (types.is_float_dtype, "float"), (types.is_datetime64_any_dtype, "datetime"),
              (types.is_string_dtype, "string"))
    return next((kind for check, kind in checks if check(dtype)), "other")


def schema_hash(logical: dict[str, str]) -> str:
    """The hash of a logical schema: column names and types, in order."""
    return hashlib.sha256(json.dumps(list(logical.items())).encode()).hexdigest()[:16]


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise BadInput(f"dataset name {name!r}: use letters, digits, '_', '-' or '.'")


def fingerprint(df, name: str, context: str = "training", source: str | None = None) -> Fingerprint:
    """The schema and sampling fingerprints of a pandas DataFrame."""
    import pandas as pd

    _check_name(name)
    if not isinstance(df, pd.DataFrame):
        raise BadInput(f"log_dataset({name!r}): expected a pandas DataFrame or a CSV/Parquet path, "
                       f"got {type(df).__name__}")
    schema = {str(c): str(t) for c, t in df.dtypes.items()}
    logical = {str(c): logical_type(df.iloc[:, i]) for i, c in enumerate(df.columns)}
    content = hashlib.sha256(json.dumps(list(schema)).encode())
    content.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    columns = {}
    for i, column in enumerate(df.columns):
        col, dtype, series = str(column), str(df.dtypes.iloc[i]), df.iloc[:, i]
        missing = int(series.isna().sum())
        is_time = pd.api.types.is_datetime64_any_dtype(series)
        if is_time or (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)):
            values = series.dropna()
            values = (values.astype("int64") if is_time else values).astype(float)  # times: epoch units
            if len(values):
                columns[col] = ColumnProfile(dtype, missing, _number(values.mean()),
                                             _number(values.std()) if len(values) > 1 else 0.0,
                                             tuple(float(q) for q in values.quantile(list(QUANTILES))))
            else:
                columns[col] = ColumnProfile(dtype, missing)
        else:
            columns[col] = ColumnProfile(dtype, missing, cardinality=int(series.nunique(dropna=True)))
    return Fingerprint(name, context, source, schema, schema_hash(logical), len(df), content.hexdigest()[:32],
                       columns, logical)


def _read(path: Path):
    import pandas as pd

    if not path.is_file():
        raise BadInput(f"{path}: no such data file")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt") or path.name.lower().endswith(".csv.gz"):
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    raise BadInput(f"{path}: log_dataset reads .csv, .tsv and .parquet files; pass a DataFrame otherwise")


def log_dataset(data, name: str, context: str = "training", source: str | None = None) -> Fingerprint:
    """Record a dataset (a pandas DataFrame, or a CSV/Parquet path) in the active MLflow run.

    Logs it as an MLflow dataset input (``mlflow.data.from_pandas``), sets the tags
    ``cd4ml.data.<name>.schema``, ``.digest`` and ``.rows`` and the artifact
    ``cd4ml_data/<name>.json``. Without an active run it calls :func:`cd4ml_nb.track` first.
    Returns the :class:`Fingerprint`.
    """
    import warnings

    import mlflow
    import mlflow.data

    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        source = source or str(data)
        data = _read(path)
    fp = fingerprint(data, name, context, source)
    if mlflow.active_run() is None:
        from .tracking import track

        track()
    with warnings.catch_warnings():  # a path source "can be interpreted in multiple ways", and
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(data, source=source, name=name)
        mlflow.log_input(dataset, context=context)  # schema inference hints about integer columns
    mlflow.set_tags({schema_tag(name): fp.schema_hash, digest_tag(name): fp.digest, rows_tag(name): str(fp.rows)})
    mlflow.log_dict(fp.to_json(), f"{ARTIFACT_DIR}/{name}.json")
    return fp


def _schema_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k[len(TAG_PREFIX):-len(".schema")]: v for k, v in tags.items()
            if k.startswith(TAG_PREFIX) and k.endswith(".schema")}


def run_fingerprints(c, run, names: list[str] | None = None) -> dict[str, Fingerprint]:
    """The fingerprints a run recorded (all, or those ``names``), by dataset name, read from its artifacts."""
    import tempfile

    names = sorted(_schema_tags(run.data.tags) if names is None else names)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                local = c.download_artifacts(run.info.run_id, f"{ARTIFACT_DIR}/{name}.json", tmp)
                found[name] = Fingerprint.from_json(json.loads(Path(local).read_text()))
            except Exception as e:  # the artifact is missing: compare the tags alone
                log.debug("run %s: fingerprint of %s not readable (%s): comparing its tags", run.info.run_id, name, e)
                tags = run.data.tags
                found[name] = Fingerprint(name, "", None, {}, tags[schema_tag(name)],
                                          int(tags.get(rows_tag(name), -1)), tags.get(digest_tag(name), ""))
    return found


def schema_changes(c, run_a, run_b) -> list[str]:
    """Datasets whose logical schema differs between two MLflow runs (or that one run logged alone).

    Equal ``cd4ml.data.<name>.schema`` tags settle it; when they differ, the recorded fingerprints
    are compared, so a run recorded with pandas dtype names (before logical types) still matches."""
    a, b = _schema_tags(run_a.data.tags), _schema_tags(run_b.data.tags)
    unsure = sorted(n for n in set(a) & set(b) if a[n] != b[n])
    fa, fb = run_fingerprints(c, run_a, unsure), run_fingerprints(c, run_b, unsure)
    changed = {n for n in set(a) ^ set(b)} | {n for n in unsure if diff_fingerprints(fa[n], fb[n]).schema_changed}
    return sorted(changed)


# --- comparing two fingerprints ---------------------------------------------------------------


def psi(expected: tuple[float, ...], actual: tuple[float, ...]) -> float:
    """Population stability index of ``actual`` against ``expected``, both given as quantiles at
    :data:`QUANTILES`. Bins are the distinct inner quantiles of ``expected``; each side's share of a
    bin is read from its own quantile function by linear interpolation."""
    import numpy as np

    levels = np.array(QUANTILES)
    edges = np.unique(np.array(expected[1:-1]))

    def shares(q: tuple[float, ...]) -> np.ndarray:
        q = np.maximum.accumulate(np.array(q, dtype=float))
        if q[-1] == q[0]:  # a constant column: all mass at one value
            cdf = (edges >= q[0]).astype(float)
        else:
            cdf = np.interp(edges, q, levels)
        return np.diff(np.concatenate([[0.0], cdf, [1.0]]))

    e, a = np.clip(shares(expected), 1e-4, None), np.clip(shares(actual), 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class ColumnShift:
    column: str
    statistic: str  # psi | missing | cardinality
    value: float
    threshold: float | None

    def describe(self) -> str:
        limit = f" > {self.threshold:g}" if self.threshold is not None else ""
        return f"{self.column}: {self.statistic} {self.value:.4g}{limit}"


@dataclass(frozen=True)
class DatasetDiff:
    """How one dataset differs between two runs: the schema axis and the sampling axis."""

    name: str
    only_in: str | None = None  # "a" or "b" when the dataset was logged by one run only
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    type_changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    rows: tuple[int, int] = (0, 0)
    digest_changed: bool = False
    shifted: tuple[ColumnShift, ...] = ()

    @property
    def schema_changed(self) -> bool:
        return bool(self.only_in or self.added or self.removed or self.type_changed)

    @property
    def sampling_changed(self) -> bool:
        return self.digest_changed

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(schema_changed=self.schema_changed, sampling_changed=self.sampling_changed,
                    type_changed={k: list(v) for k, v in self.type_changed.items()})
        return data


def _schema_diff(a: Fingerprint, b: Fingerprint) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    """Columns added, removed and retyped (logical types) from ``a`` to ``b``.

    A fingerprint read from tags alone has no columns: only its schema hash can tell."""
    sa, sb = a.logical_schema, b.logical_schema
    if not (sa and sb):
        return ((), (), {}) if a.schema_hash == b.schema_hash else ((), (), {"(schema hash)": (a.schema_hash,
                                                                                                b.schema_hash)})
    added = tuple(c for c in sb if c not in sa)
    removed = tuple(c for c in sa if c not in sb)
    return added, removed, {c: (sa[c], sb[c]) for c in sa if c in sb and sa[c] != sb[c]}


def diff_fingerprints(a: Fingerprint, b: Fingerprint) -> DatasetDiff:
    """Schema changes (columns added, removed, retyped) and sampling shifts from ``a`` to ``b``."""
    added, removed, retyped = _schema_diff(a, b)
    shifts = []
    for col in a.columns:
        pa, pb = a.columns[col], b.columns.get(col)
        if pb is None:
            continue
        if pa.quantiles and pb.quantiles:
            value = psi(pa.quantiles, pb.quantiles)
            if value > PSI_THRESHOLD:
                shifts.append(ColumnShift(col, "psi", value, PSI_THRESHOLD))
        elif pa.cardinality is not None and pb.cardinality is not None and pa.cardinality != pb.cardinality:
            shifts.append(ColumnShift(col, "cardinality", pb.cardinality - pa.cardinality, None))
        if a.rows > 0 and b.rows > 0:
            change = pb.missing / b.rows - pa.missing / a.rows
            if abs(change) > MISSING_THRESHOLD:
                shifts.append(ColumnShift(col, "missing", change, MISSING_THRESHOLD))
    return DatasetDiff(a.name, None, added, removed, retyped, (a.rows, b.rows), a.digest != b.digest, tuple(shifts))
