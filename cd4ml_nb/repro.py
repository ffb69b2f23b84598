"""Two runs compared along the four version axes (code, model, data schema and sampling, plus the
environment, recorded by :mod:`.axes`): ``cd4ml-nb diff``; and a run re-run at its commit to check
it reproduces: ``cd4ml-nb reproduce``.
"""
from __future__ import annotations

import logging
import difflib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import axes, data, gitinfo, history, tracking
from .exceptions import BadInput, NotFound
from .project import Project

log = logging.getLogger(__name__)

REPRODUCES = "cd4ml.reproduces"
DEFAULT_RTOL = 1e-6


# --- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDiff:
    """Two runs side by side along code, model, data schema, data sampling and environment."""

    run_a: str
    run_b: str
    commits: tuple[str | None, str | None]
    notebooks: tuple[str | None, str | None]
    source_diff: str
    params_changed: dict[str, tuple[str | None, str | None]]
    model_hashes: tuple[str | None, str | None]
    datasets: tuple[data.DatasetDiff, ...]
    python: tuple[str | None, str | None]
    packages_changed: dict[str, tuple[str | None, str | None]]
    env_hashes: tuple[str | None, str | None]
    metrics: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def axes(self) -> dict[str, bool]:
        """Which axes changed."""
        return {
            "code": self.commits[0] != self.commits[1] or bool(self.source_diff),
            "model": bool(self.params_changed) or self.model_hashes[0] != self.model_hashes[1],
            "schema": any(d.schema_changed for d in self.datasets),
            "sampling": any(d.sampling_changed for d in self.datasets),
            "environment": self.env_hashes[0] != self.env_hashes[1],
        }

    def to_json(self) -> dict:
        out = asdict(self)
        out["datasets"] = [d.to_json() for d in self.datasets]
        out["axes"] = self.axes
        return out


def _run(c, run_id: str):
    try:
        return c.get_run(run_id)
    except Exception:
        raise NotFound(f"no run {run_id!r} in this tracking store") from None


def _artifact_text(c, run_id: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(c.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")
        except Exception as e:  # not logged (an older or interactive run), or the artifacts are gone
            log.debug("run %s: artifact %s not readable: %s", run_id, path, e)
            return None


def _source(c, run) -> str | None:
    notebook = run.data.tags.get(tracking.NOTEBOOK)
    return _artifact_text(c, run.info.run_id, f"{Path(notebook).stem}.source.py") if notebook else None


def _changed(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def diff_runs(project: Project, run_a: str, run_b: str) -> RunDiff:
    """Compare two runs of the project's store along every axis."""
    c = tracking.client(project)
    a, b = _run(c, run_a), _run(c, run_b)
    ta, tb = a.data.tags, b.data.tags
    source_diff = ""
    if ta.get(tracking.SOURCE_SHA) != tb.get(tracking.SOURCE_SHA) or ta.get(tracking.NOTEBOOK) != tb.get(tracking.NOTEBOOK):
        sa, sb = _source(c, a) or "", _source(c, b) or ""
        source_diff = "".join(difflib.unified_diff(
            sa.splitlines(keepends=True), sb.splitlines(keepends=True),
            f"{run_a[:8]}/{ta.get(tracking.NOTEBOOK)}", f"{run_b[:8]}/{tb.get(tracking.NOTEBOOK)}"))
    fa, fb = data.run_fingerprints(c, a), data.run_fingerprints(c, b)
    datasets = []
    for name in sorted(set(fa) | set(fb)):
        if name not in fb or name not in fa:
            datasets.append(data.DatasetDiff(name, only_in="a" if name in fa else "b"))
        else:
            datasets.append(data.diff_fingerprints(fa[name], fb[name]))
    ea = json.loads(_artifact_text(c, run_a, axes.ENV_ARTIFACT) or "{}")
    eb = json.loads(_artifact_text(c, run_b, axes.ENV_ARTIFACT) or "{}")
    return RunDiff(
        run_a, run_b,
        commits=(ta.get(tracking.GIT_COMMIT), tb.get(tracking.GIT_COMMIT)),
        notebooks=(ta.get(tracking.NOTEBOOK), tb.get(tracking.NOTEBOOK)),
        source_diff=source_diff,
        params_changed=_changed(dict(a.data.params), dict(b.data.params)),
        model_hashes=(ta.get(axes.MODEL_HASH), tb.get(axes.MODEL_HASH)),
        datasets=tuple(datasets),
        python=(ea.get("python"), eb.get("python")),
        packages_changed=_changed(ea.get("packages", {}), eb.get("packages", {})),
        env_hashes=(ta.get(axes.ENV_HASH), tb.get(axes.ENV_HASH)),
        metrics=_changed(dict(a.data.metrics), dict(b.data.metrics)),
    )


def describe_diff(d: RunDiff) -> list[str]:
    """Human-readable lines, one section per axis."""
    lines = [f"run A {d.run_a}  vs  run B {d.run_b}",
             "changed axes: " + (", ".join(k for k, v in d.axes.items() if v) or "none")]
    lines.append(f"\n[code] commits {d.commits[0] or '-'} -> {d.commits[1] or '-'}"
                 + (f"; notebook {d.notebooks[0]} -> {d.notebooks[1]}" if d.notebooks[0] != d.notebooks[1] else ""))
    lines.append(d.source_diff.rstrip() if d.source_diff else "  paired .py source identical")
    lines.append(f"\n[model] model hash {d.model_hashes[0] or '-'} -> {d.model_hashes[1] or '-'}")
    lines += [f"  parameter {k}: {a} -> {b}" for k, (a, b) in d.params_changed.items()] or ["  parameters identical"]
    lines.append("\n[data schema]")
    for ds in d.datasets:
        if ds.only_in:
            lines.append(f"  {ds.name}: logged by run {ds.only_in.upper()} only")
        elif ds.schema_changed:
            parts = ([f"added {', '.join(ds.added)}"] if ds.added else []) + \
                    ([f"removed {', '.join(ds.removed)}"] if ds.removed else []) + \
                    [f"{c} {x} -> {y}" for c, (x, y) in ds.type_changed.items()]
            lines.append(f"  {ds.name}: " + "; ".join(parts))
        else:
            lines.append(f"  {ds.name}: unchanged")
    if not d.datasets:
        lines.append("  no datasets logged (call cd4ml_nb.log_dataset(df, name) in the notebook)")
    lines.append(f"\n[data sampling] shift statistic: PSI over recorded deciles (threshold {data.PSI_THRESHOLD}), "
                 f"missing fraction (threshold {data.MISSING_THRESHOLD}), category cardinality")
    for ds in d.datasets:
        if ds.only_in:
            continue
        if not ds.sampling_changed:
            lines.append(f"  {ds.name}: identical content ({ds.rows[0]} rows)")
            continue
        shifted = "; ".join(s.describe() for s in ds.shifted) or "no column beyond its threshold"
        lines.append(f"  {ds.name}: content changed, rows {ds.rows[0]} -> {ds.rows[1]} "
                     f"({ds.rows[1] - ds.rows[0]:+d}); shifted: {shifted}")
    lines.append(f"\n[environment] python {d.python[0] or '-'} -> {d.python[1] or '-'}")
    lines += [f"  {k}: {a or '-'} -> {b or '-'}" for k, (a, b) in d.packages_changed.items()] \
        or ["  packages identical"]
    if d.metrics:
        lines.append("\n[metrics]")
        lines += [f"  {k}: {a} -> {b}" for k, (a, b) in d.metrics.items()]
    return lines


# --- reproduce --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    original: float | None
    reproduced: float | None
    rtol: float

    @property
    def ok(self) -> bool:
        a, b = self.original, self.reproduced
        return a is not None and b is not None and abs(a - b) <= 1e-12 + self.rtol * abs(a)


@dataclass(frozen=True)
class Reproduction:
    """The outcome of re-running a past run at its commit with its parameters."""

    original_run_id: str
    run_id: str | None
    status: str
    commit: str
    notebook: str
    metrics: tuple[MetricCheck, ...]
    data_changed: tuple[str, ...]  # dataset names whose digest differs (or that are missing)
    allow_data_change: bool
    error: str | None = None
    model_hashes: tuple[str | None, str | None] = (None, None)  # informational: not part of the verdict

    @property
    def differences(self) -> list[str]:
        out = []
        if self.status != "FINISHED":
            out.append(f"run: {self.status}" + (f" ({self.error})" if self.error else ""))
        if self.data_changed:
            out.append("data: " + ", ".join(self.data_changed) + (" changed (allowed)" if self.allow_data_change
                                                                  else " changed"))
        bad = [m for m in self.metrics if not m.ok]
        if bad:
            out.append("metrics: " + ", ".join(
                f"{m.metric} {m.original} -> {m.reproduced} beyond rtol {m.rtol:g}" for m in bad))
        return out

    @property
    def reproduced(self) -> bool:
        failing = [d for d in self.differences if not (d.startswith("data:") and self.allow_data_change)]
        return not failing

    @property
    def exit_code(self) -> int:
        return 0 if self.reproduced else 1

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(reproduced=self.reproduced, differences=self.differences,
                   metrics=[{**asdict(m), "ok": m.ok} for m in self.metrics])
        return out


def reproduce(project: Project, run_id: str, rtol: float = DEFAULT_RTOL, allow_data_change: bool = False,
              progress: bool = False, warn: Callable[[str], None] | None = None) -> Reproduction:
    """Re-run ``run_id`` in a temporary git worktree at its commit (with its uncommitted diff
    applied) and its parameters, into the same store and experiment; compare data and metrics.
    The user's working tree is not touched; the worktree is removed afterwards."""
    from .runner import Callbacks, RunOptions, run_notebook

    if rtol < 0:
        raise BadInput(f"--rtol {rtol}: must not be negative")
    if not project.in_git:
        raise BadInput(f"{project.root}: not a git repository; reproduce needs the run's commit")
    c = tracking.client(project)
    original = _run(c, run_id)
    tags = original.data.tags
    commit, notebook = tags.get(tracking.GIT_COMMIT), tags.get(tracking.NOTEBOOK)
    if not commit or not notebook:
        raise BadInput(f"run {run_id} has no {tracking.GIT_COMMIT if not commit else tracking.NOTEBOOK} tag: "
                       "only runs of `cd4ml-nb run` in a git repository can be reproduced")
    if not gitinfo.run(project.root, "cat-file", "-e", f"{commit}^{{commit}}").ok:
        raise BadInput(f"run {run_id}: commit {commit[:12]} is not in {project.root} (fetch it first)")
    if tags.get(tracking.DIFF_TRUNCATED) == "true":
        raise BadInput(f"run {run_id}: its uncommitted diff was cut at max_diff_bytes, so its code cannot be "
                       "restored; commit your changes before runs you want to reproduce")
    defaults = set(filter(None, tags.get(tracking.PARAMS_DEFAULTS, "").split(",")))
    values = {k: v for k, v in json.loads(tags.get("cd4ml.params.json", "{}")).items() if k not in defaults}
    experiment = c.get_experiment(original.info.experiment_id).name
    before = data.run_fingerprints(c, original)
    tmp = Path(tempfile.mkdtemp(prefix="cd4ml-reproduce-"))
    tree = tmp / "tree"
    gitinfo.run(project.root, "worktree", "add", "--detach", "--quiet", str(tree), commit, check=True)
    try:
        if tags.get(tracking.DIRTY) == "true":
            try:
                patch = c.download_artifacts(run_id, "uncommitted.diff", str(tmp))
            except Exception:
                raise BadInput(f"run {run_id} was dirty but its uncommitted.diff artifact cannot be read") from None
            if Path(patch).stat().st_size:
                gitinfo.run(tree, "apply", "--whitespace=nowarn", patch, check=True)
        result = run_notebook(tree / tags.get(history.SIDE, notebook), values,  # the side it executed
                              project=Project.discover(tree, tracking_uri=project.tracking_uri),
                              options=RunOptions(experiment=experiment, progress=progress,
                                                 extra_tags={REPRODUCES: run_id, history.KIND: history.REPRODUCE}),
                              callbacks=Callbacks(warn=warn))
    finally:
        gitinfo.run(project.root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
        gitinfo.run(project.root, "worktree", "prune")
    after = data.run_fingerprints(c, c.get_run(result.run_id)) if result.run_id else {}
    changed = tuple(sorted(n for n in set(before) | set(after)
                           if n not in before or n not in after or before[n].digest != after[n].digest))
    checks = tuple(MetricCheck(m, v, result.metrics.get(m), rtol) for m, v in sorted(original.data.metrics.items()))
    new_hash = c.get_run(result.run_id).data.tags.get(axes.MODEL_HASH) if result.run_id else None
    return Reproduction(run_id, result.run_id, result.status, commit, notebook, checks, changed,
                        allow_data_change, result.error, (tags.get(axes.MODEL_HASH), new_hash))


def describe_reproduction(r: Reproduction) -> list[str]:
    lines = [f"reproduced {r.original_run_id} at {r.commit[:12]} ({r.notebook}) as run {r.run_id}: {r.status}"]
    for m in r.metrics:
        lines.append(f"  {'ok  ' if m.ok else 'DIFF'} {m.metric}: {m.original!r} -> {m.reproduced!r}")
    if r.data_changed:
        lines.append(f"  data changed: {', '.join(r.data_changed)}")
    if any(r.model_hashes):
        same = "same" if r.model_hashes[0] == r.model_hashes[1] else "different"
        lines.append(f"  model hash {r.model_hashes[0] or '-'} -> {r.model_hashes[1] or '-'} ({same})")
    if r.reproduced:
        note = " (data changed, allowed)" if r.data_changed else ""
        within = f": {len(r.metrics)} metric(s) within rtol {r.metrics[0].rtol:g}" if r.metrics else ""
        lines.append("REPRODUCED" + note + within)
    else:
        lines.append("NOT REPRODUCED: differing axes: " + "; ".join(
            d for d in r.differences if not (d.startswith("data:") and r.allow_data_change)))
        if r.data_changed and not r.allow_data_change:
            lines.append("  (pass --allow-data-change to accept the changed data and judge by the metrics alone)")
    return lines
