"""Baselines of regression tests: what a notebook produced before, from a committed file
(``.cd4ml-baselines/<notebook>.json``, written by ``--update``), a branch's latest runs or a run."""
from __future__ import annotations

import logging
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import history, pairing
from .checks import CellOutputs, MetricValues, aggregate, regression_cells
from .exceptions import BadInput, NotebookError
from .project import Project

log = logging.getLogger(__name__)

BASELINE_FORMAT = 1


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
    from .files import write_atomic

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
    except Exception as e:  # no such artifact (an interactive run), or the store's artifacts are gone
        log.debug("run %s: no executed notebook %s.ipynb to read cells from: %s", run.info.run_id, stem, e)
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
