"""A notebook's history: one identity per pair, the kind of every run, and which runs compare.

- **Identity.** A notebook is named by its canonical path, project-relative: the ``.ipynb`` of its
  pair, else the file itself (:func:`.pairing.notebook_id`). Runs carry it in ``cd4ml.notebook``
  whichever side was executed (that side is ``cd4ml.notebook.side``); runs recorded under the other
  side are read as the same notebook (:class:`.pairing.Names`).
- **Kinds.** Every run carries ``cd4ml.kind``: ``run`` (a plain run, from the CLI or the Lab),
  ``trial`` (a child of a ``sweep``), ``test``, ``ci`` (a smoke run), ``reproduce``, ``interactive``,
  and ``schedule``, ``pipeline``, ``step`` for what is built on them. Runs recorded before kinds are
  read by their older tags.
- **Assessment compares like with like**: a :class:`Selection` picks a branch's runs of one kind
  (``run`` unless asked), or one named run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .exceptions import BadInput

NOTEBOOK = "cd4ml.notebook"  # the canonical path: the identity of the notebook
SIDE = "cd4ml.notebook.side"  # the file that was executed (either side of a pair)
KIND = "cd4ml.kind"
PARENT = "mlflow.parentRunId"
STEP_NAME = "cd4ml.step"  # a pipeline step's name, on its runs (kind ``step``)

RUN, TRIAL, SWEEP, TEST, CI, REPRODUCE, INTERACTIVE = "run", "trial", "sweep", "test", "ci", "reproduce", "interactive"
SCHEDULE, PIPELINE, STEP = "schedule", "pipeline", "step"
KINDS = (RUN, TRIAL, SWEEP, TEST, CI, REPRODUCE, INTERACTIVE, SCHEDULE, PIPELINE, STEP)


def kind_of(tags: Mapping[str, str]) -> str:
    """A run's kind: its ``cd4ml.kind`` tag, or for runs recorded before kinds, what its tags show."""
    explicit = tags.get(KIND)
    if explicit:
        return explicit
    if tags.get("cd4ml.sweep") == "true":
        return SWEEP
    if tags.get(PARENT) or tags.get("cd4ml.trial.key"):
        return TRIAL
    if tags.get("cd4ml.test") == "true":
        return CI if tags.get("cd4ml.test.via") == "ci" else TEST
    if tags.get("cd4ml.reproduces"):
        return REPRODUCE
    if tags.get("cd4ml.interactive") == "true":
        return INTERACTIVE
    return RUN


def parse_kind(text: str) -> str:
    """``--kind`` checked against the known kinds (BadInput listing them)."""
    if text not in KINDS:
        raise BadInput(f"--kind {text!r}: use one of {', '.join(KINDS)}")
    return text


def run_tags(notebook: str, side: str, kind: str) -> dict[str, str]:
    """The identity tags of a new run."""
    return {NOTEBOOK: notebook, SIDE: side, KIND: kind}


@dataclass(frozen=True)
class Selection:
    """Which of a branch's runs stand for a notebook in an assessment: its runs of ``kind``, the
    latest (``min_runs`` of them, averaged) or the best; or exactly run ``run_id``, whatever its kind.
    With ``step``, only the runs of that pipeline step (kind ``step``)."""

    kind: str = RUN
    runs: str = "latest"  # latest | best
    min_runs: int = 1
    run_id: str | None = None
    step: str | None = None

    def __post_init__(self) -> None:
        parse_kind(self.kind)
        if self.step is not None and self.kind != STEP:
            raise BadInput(f"--step {self.step} compares runs of kind step, not {self.kind!r}")
        if self.runs not in ("latest", "best"):
            raise BadInput(f"--runs {self.runs!r}: use latest or best")
        if self.min_runs < 1:
            raise BadInput("--min-runs must be at least 1")

    def keep(self, runs: Iterable, *, base: bool = False) -> list:
        """The runs of this selection's kind, in the order given; on the branch side of a selection
        naming a run, that run alone (the base side is then still chosen by kind)."""
        if self.run_id is not None and not base:
            return [r for r in runs if r.info.run_id == self.run_id]
        return [r for r in runs if kind_of(r.data.tags) == self.kind
                and (self.step is None or r.data.tags.get(STEP_NAME) == self.step)]

    @property
    def label(self) -> str:
        """What is compared, for messages: ``kind 'run'`` or ``step 'train'``."""
        return f"step {self.step!r}" if self.step is not None else f"kind {self.kind!r}"


def by_notebook(runs: Iterable, name_of: Callable[[Any], str | None]) -> dict[str, list]:
    """Runs grouped by notebook (``name_of(run)``, e.g. :class:`.pairing.Names`; runs of no notebook
    under ``(interactive)``), order kept."""
    grouped: dict[str, list] = {}
    for run in runs:
        grouped.setdefault(name_of(run) or "(interactive)", []).append(run)
    return grouped


def parameters_differ(a: Mapping[str, str], b: Mapping[str, str]) -> tuple[str, ...]:
    """The parameter names whose values differ between two runs (or that only one has)."""
    return tuple(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))
