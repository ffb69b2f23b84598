"""Pairs of ``.ipynb`` notebooks and Jupytext text notebooks (``.py``, ``.md``, …): pair, check and sync.

Whether a pair is in sync is decided by the *content* of its inputs (cell types, sources, tags),
never by modification times. Which side changed is decided against the last sync that
``cd4ml-nb pair``/``sync`` recorded in the state folder while the same branch and commit were
checked out; else a side equal to its committed version at git ``HEAD`` has not changed (the
record is one per work tree and outlives branch switches); else an older record, else ``HEAD``;
only without any of these do modification times say which side looks newer. When both sides
changed, ``sync`` refuses and shows a diff.

Files are written as Jupytext writes them (byte for byte), except that a notebook older than
nbformat 4.5 never gets cell ids (see :func:`notebooks.ipynb_text`); a text form that would not
read back with the same inputs is refused rather than written.
"""
from __future__ import annotations

import logging
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from . import files, gitinfo, history, kernels, notebooks
from .config import DEFAULT_FORMATS
from .exceptions import BadInput, NotebookError, OutOfSync, PairConflict
from .project import Project

log = logging.getLogger(__name__)

SKIP_DIRS = {".git", ".ipynb_checkpoints", "node_modules", "__pycache__", ".venv", "venv", "site-packages"}
SYNC_RECORD = "pairs.json"


@dataclass(frozen=True)
class Pair:
    """The two files of a paired notebook."""

    ipynb: Path
    text: Path
    text_format: str  # e.g. "py:percent"
    formats: str  # e.g. "ipynb,py:percent"
    formats_source: str  # "notebook metadata", "cd4ml_nb config", "jupytext config" or "default"


@dataclass(frozen=True)
class PairState:
    """How the two sides of a pair compare."""

    pair: Pair
    in_sync: bool
    newer: str | None  # "ipynb", "text" or None (in sync, or both changed)
    conflict: bool  # both sides changed since the last sync
    missing: str | None  # "ipynb" or "text" when that file does not exist
    basis: str  # how `newer` was decided

    def to_json(self, project: Project) -> dict:
        return {
            "ipynb": project.relative(self.pair.ipynb),
            "text": project.relative(self.pair.text),
            "formats": self.pair.formats,
            "in_sync": self.in_sync,
            "newer": self.newer,
            "conflict": self.conflict,
            "missing": self.missing,
            "basis": self.basis,
        }


# --- finding pairs ----------------------------------------------------------------------------


def _jupytext_config_formats(path: Path) -> str | None:
    from jupytext.config import load_jupytext_config

    try:
        config = load_jupytext_config(str(path))
    except Exception as e:  # invalid jupytext.toml
        raise BadInput(f"jupytext configuration for {path}: {notebooks.first_line(e)}") from None
    if config is None:
        return None
    formats = config.default_formats(str(path))
    if isinstance(formats, (list, tuple)):
        formats = ",".join(formats)
    return formats or None


def _formats_of(path: Path, project: Project, node: Any | None, *, default: bool) -> tuple[str, str] | None:
    meta = (node.metadata.get("jupytext", {}) if node is not None else {}) or {}
    if meta.get("formats"):
        formats = meta["formats"]
        return (",".join(formats) if isinstance(formats, list) else formats), "notebook metadata"
    if project.config.formats:
        return project.config.formats, "cd4ml_nb config"
    from_jupytext = _jupytext_config_formats(path)
    if from_jupytext:
        return from_jupytext, "jupytext config"
    return (DEFAULT_FORMATS, "default") if default else None


def find_pair(path: Path, project: Project, *, default: bool = False, node: Any | None = None) -> Pair | None:
    """The pair ``path`` belongs to, or None when it is not paired (and ``default`` is off)."""
    from jupytext.formats import long_form_multiple_formats, short_form_one_format
    from jupytext.paired_paths import InconsistentPath, paired_paths

    path = Path(path).resolve()
    if node is None and path.exists():
        node = notebooks.read(path).node
    found = _formats_of(path, project, node, default=default)
    if found is None:
        return None
    formats, source = found
    try:
        long = long_form_multiple_formats(formats)
    except Exception as e:
        raise NotebookError(f"{path}: invalid pairing formats {formats!r}: {notebooks.first_line(e)}") from None
    current = next((f for f in long if f["extension"] == path.suffix), None)
    if current is None:
        if source == "notebook metadata":
            raise NotebookError(f"{path}: its formats {formats!r} do not include {path.suffix}")
        return None
    try:
        paths = paired_paths(str(path), current, long)
    except InconsistentPath as e:
        raise NotebookError(f"{path}: {notebooks.first_line(e)}") from None
    ipynb = next((Path(p) for p, f in paths if f["extension"] == ".ipynb"), None)
    text = next(((Path(p), f) for p, f in paths if f["extension"] != ".ipynb"), None)
    if ipynb is None or text is None:
        return None
    for side in (ipynb, text[0]):
        project.confine(side, allow_hidden=True)
    return Pair(ipynb, text[0], short_form_one_format(text[1]), formats, source)


def notebook_id(project: Project, path: Path, node=None) -> str:
    """The canonical name of the notebook at ``path`` (either side of a pair, or a lone file)."""
    pair = find_pair(path, project, node=node) if path.exists() else None
    return project.relative(pair.ipynb if pair is not None else path)


class Names:
    """Reads the ``cd4ml.notebook`` tag of runs as canonical names: a run recorded under the text
    side of a pair (before runs were named by their pair) is read as the pair's ``.ipynb``."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._known: dict[str, str] = {}

    def __call__(self, name: str | None) -> str | None:
        if not name or name.endswith(".ipynb"):
            return name
        if name not in self._known:
            self._known[name] = self._canonical(name)
        return self._known[name]

    def _canonical(self, name: str) -> str:
        path = self.project.root / name
        sibling = path.with_suffix(".ipynb")
        if sibling.is_file():  # Jupytext's default pairing: the .ipynb beside the script
            return self.project.relative(sibling)
        if path.is_file():  # paired across folders (formats with a prefix): ask the pair
            try:
                pair = find_pair(path, self.project)
            except BadInput:  # an unreadable file: it names itself
                return name
            if pair is not None:
                return self.project.relative(pair.ipynb)
        return name

    def of(self, run) -> str | None:
        """The canonical notebook of an MLflow run (None for a run of no notebook)."""
        return self(run.data.tags.get(history.NOTEBOOK))


def iter_candidates(paths: Iterable[Path], project: Project) -> Iterator[Path]:
    """Notebook files under ``paths``, skipping hidden, generated and state folders."""
    skip = {project.state_dir, project.lab_runs_dir}  # generated outputs, never pairs
    for start in paths:
        start = Path(start).resolve()
        if start.is_file():
            yield start
            continue
        if not start.is_dir():
            raise BadInput(f"{start}: no such file or folder")
        for folder, dirs, names in os.walk(start):
            here = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if d not in SKIP_DIRS and not d.startswith(".") and here / d not in skip
            )
            for name in sorted(names):
                if name.endswith((".ipynb", ".py")):
                    yield here / name


def _has_jupytext_header(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("# ---") and "jupyter:" in head


def discover_pairs(paths: Iterable[Path], project: Project) -> list[Pair]:
    """Every paired notebook under ``paths`` (each pair once).

    Files named explicitly are always looked at; in folders, a ``.py`` is a candidate only with a
    Jupytext header (a paired script without one is found through its ``.ipynb``).
    """
    paths = [Path(p).resolve() for p in paths]
    pairs: dict[Path, Pair] = {}
    for path in iter_candidates(paths, project):
        if path.suffix == ".py" and path not in paths and not _has_jupytext_header(path):
            continue
        pair = find_pair(path, project)
        if pair is not None:
            pairs.setdefault(pair.ipynb, pair)
    return list(pairs.values())


# --- comparing --------------------------------------------------------------------------------


def _record_path(project: Project) -> Path:
    return project.state_dir / SYNC_RECORD


def _load_record(project: Project) -> dict[str, Any]:
    try:
        return json.loads(_record_path(project).read_text())
    except (OSError, ValueError):
        return {}


def _checked_out(project: Project) -> str | None:
    """What is checked out: ``branch@commit`` (``@commit`` when detached), or None outside git."""
    if not project.in_git:
        return None
    commit = (gitinfo.output(project.root, "rev-parse", "--verify", "-q", "HEAD") or "").strip()
    branch = (gitinfo.output(project.root, "symbolic-ref", "--quiet", "--short", "HEAD") or "").strip()
    return f"{branch}@{commit}"


def _save_record(project: Project, pair: Pair, digest: str) -> None:
    """Record the inputs of a pair in sync, and the branch and commit checked out then.

    The record is one per work tree; what was checked out tells whether it still describes it.
    """
    project.ensure_state_dir()
    record = _load_record(project)
    record[project.relative(pair.ipynb)] = {"inputs": digest, "head": _checked_out(project)}
    files.write_atomic(_record_path(project), json.dumps(record, indent=1, sort_keys=True) + "\n")


def record_sync(pair: Pair, project: Project, digest: str) -> None:
    """Record ``digest`` as the inputs both sides of ``pair`` hold now (a save that wrote both)."""
    _save_record(project, pair, digest)


def _recorded(project: Project, pair: Pair) -> tuple[str | None, str | None]:
    """The inputs digest of the last sync and what was checked out then (None: unknown)."""
    entry = _load_record(project).get(project.relative(pair.ipynb))
    if isinstance(entry, str):  # records written before the commit was kept
        return entry, None
    if isinstance(entry, dict) and isinstance(entry.get("inputs"), str):
        return entry["inputs"], entry.get("head")
    return None, None


def _head_digest(project: Project, side: Path, fmt: str) -> str | None:
    """Inputs digest of ``side`` as committed at git HEAD, or None (no git, not committed, unreadable)."""
    if not project.in_git:
        return None
    import jupytext

    committed = gitinfo.output(project.root, "show", f"HEAD:{project.relative(side)}")
    if committed is None:
        return None
    try:
        return notebooks.inputs_digest(jupytext.reads(committed, fmt=fmt))
    except Exception as e:  # a committed file jupytext cannot read: no basis, not an error
        log.debug("HEAD:%s not readable as %s: %s", project.relative(side), fmt, e)
        return None


def _changed(pair: Pair, state_of: tuple[bool, bool], basis: str) -> PairState:
    ipynb_changed, text_changed = state_of
    if ipynb_changed and text_changed:
        return PairState(pair, False, None, True, None, basis)
    return PairState(pair, False, "ipynb" if ipynb_changed else "text", False, None, basis)


def compare(pair: Pair, project: Project) -> PairState:
    """Compare the inputs of both sides. Writes nothing.

    Which side changed is decided against the last sync when it was made with the same branch and
    commit checked out as now. Otherwise (another branch, or no record) a side equal to its committed version at
    git HEAD has not changed, whatever an older record says: the record is one per work tree and
    outlives branch switches. Then the older record, then HEAD when both sides agreed there, and
    only without any of these the modification times.
    """
    for side, name in ((pair.ipynb, "ipynb"), (pair.text, "text")):
        if not side.exists():
            other = "text" if name == "ipynb" else "ipynb"
            return PairState(pair, False, other, False, name, "missing file")
    d_ipynb = notebooks.inputs_digest(notebooks.read(pair.ipynb).node)
    d_text = notebooks.inputs_digest(notebooks.read(pair.text).node)
    if d_ipynb == d_text:
        return PairState(pair, True, None, False, None, "content")
    base, base_head = _recorded(project, pair)
    if base is not None and base_head == _checked_out(project):
        return _changed(pair, (d_ipynb != base, d_text != base), "the last cd4ml-nb sync")
    head_ipynb = _head_digest(project, pair.ipynb, "ipynb")
    head_text = _head_digest(project, pair.text, pair.text_format)
    at_head = (d_ipynb == head_ipynb, d_text == head_text)
    if at_head[0] != at_head[1]:
        return _changed(pair, (not at_head[0], not at_head[1]), "git HEAD")
    if base is not None:
        return _changed(pair, (d_ipynb != base, d_text != base), "the last cd4ml-nb sync")
    if head_ipynb is not None and head_ipynb == head_text:
        return _changed(pair, (d_ipynb != head_ipynb, d_text != head_text), "git HEAD")
    newer = "ipynb" if pair.ipynb.stat().st_mtime >= pair.text.stat().st_mtime else "text"
    return PairState(pair, False, newer, False, None, "modification times")


def ensure_in_sync(pair: Pair | None, project: Project, given: Path, *, sync: bool = False) -> None:
    """Before a run of ``given`` (either side of ``pair``): OutOfSync (exit 2, no kernel, no run)
    when the sides' inputs differ, naming the newer side and `cd4ml-nb sync`; with ``sync``, sync
    first (PairConflict, writing nothing, when both sides changed). A side not created yet is no
    conflict: the run executes the side that exists."""
    if pair is None:
        return
    state = compare(pair, project)
    if state.in_sync or state.missing:
        return
    if sync:
        sync_pair(pair, project)
        return
    name = project.relative(given)
    if state.conflict:
        what = f"both sides changed since {state.basis}"
    else:
        newer = pair.ipynb if state.newer == "ipynb" else pair.text
        what = f"{project.relative(newer)} is newer (compared with {state.basis})"
    raise OutOfSync(f"{name}: the two sides of its pair differ, {what}; run `cd4ml-nb sync {name}` "
                    "first, or pass --sync (nothing ran)")


def diff(pair: Pair) -> str:
    """Unified diff of the inputs, both rendered as the pair's text format."""
    ipynb_text = notebooks.text_of(notebooks.read(pair.ipynb).node, pair.text_format)
    text_text = notebooks.text_of(notebooks.read(pair.text).node, pair.text_format)
    return "".join(
        difflib.unified_diff(
            ipynb_text.splitlines(keepends=True),
            text_text.splitlines(keepends=True),
            fromfile=f"{pair.ipynb.name} (inputs as {pair.text_format})",
            tofile=pair.text.name,
        )
    )


# --- writing ----------------------------------------------------------------------------------


def _write(node: Any, path: Path, fmt: str) -> None:
    """Write one side as Jupytext would (``.ipynb``: valid for its nbformat version, final newline)."""
    import jupytext

    text = notebooks.ipynb_text(node) if fmt == "ipynb" else jupytext.writes(node, fmt=fmt)
    files.write_atomic(path, text)


def _canonicalize_text(node: Any, pair: Pair) -> None:
    """Rewrite a hand-edited text side in the form Jupytext writes (``%%html`` becomes
    ``# %% language="html"``, …), as `jupytext --sync` does; only when that keeps its inputs."""
    import jupytext

    canonical = jupytext.writes(node, fmt=pair.text_format)
    if canonical == pair.text.read_text(encoding="utf-8"):
        return
    back = jupytext.reads(canonical, fmt=pair.text_format)
    if notebooks.inputs_digest(back) == notebooks.inputs_digest(node):
        files.write_atomic(pair.text, canonical)


def _check_round_trip(node: Any, pair: Pair, project: Project, source: Path) -> None:
    """Refuse (PairConflict, exit 1, nothing written) a notebook whose inputs the text format cannot
    hold: ``check`` would otherwise report the pair out of sync for ever."""
    import jupytext

    back = jupytext.reads(jupytext.writes(node, fmt=pair.text_format), fmt=pair.text_format)
    if notebooks.inputs_digest(back) == notebooks.inputs_digest(node):
        return
    detail = "".join(difflib.unified_diff(
        [f"{c.cell_type}: {c.source!r}\n" for c in node.cells],
        [f"{c.cell_type}: {c.source!r}\n" for c in back.cells],
        fromfile=f"{source.name} (cells)", tofile=f"{pair.text.name} read back (cells)",
    ))
    raise PairConflict(  # the difference is in the message: `pair` prints the message only
        f"{project.relative(source)} does not round-trip through {pair.text_format}: its cells would "
        f"change when read back from {project.relative(pair.text)}; nothing was written\n{detail}"
    )


def _with_formats(node: Any, pair: Pair) -> Any:
    """``node`` with the pair's formats in its metadata, unless a config file pairs it."""
    if pair.formats_source in ("default", "cd4ml_nb config", "notebook metadata"):
        meta = node.metadata.setdefault("jupytext", {})
        meta["formats"] = pair.formats
        if meta.get("notebook_metadata_filter") == "-all":  # a header-less script: give it a header
            del meta["notebook_metadata_filter"]
    return node


def pair_notebook(path: Path, project: Project) -> tuple[Pair, str]:
    """Pair a notebook, creating the missing side. Returns the pair and what was done."""
    import jupytext

    source = notebooks.read(path)
    pair = find_pair(source.path, project, default=True, node=source.node)
    if pair is None:
        raise BadInput(f"{path}: the configured formats do not pair {path.suffix} files")
    other = pair.text if source.is_ipynb else pair.ipynb
    if other.exists():
        state = compare(pair, project)
        if not state.in_sync:
            raise PairConflict(
                f"{project.relative(other)} already exists and its inputs differ from "
                f"{project.relative(source.path)}; run `cd4ml-nb sync` to reconcile them",
                diff(pair),
            )
        if pair.formats_source != "jupytext config" and not source.node.metadata.get("jupytext", {}).get("formats"):
            _write(_with_formats(source.node, pair), source.path, "ipynb" if source.is_ipynb else pair.text_format)
            _write(_with_formats(notebooks.read(other).node, pair), other,
                   pair.text_format if source.is_ipynb else "ipynb")
        _save_record(project, pair, notebooks.inputs_digest(source.node))
        return pair, "already paired, in sync"
    node = _with_formats(source.node, pair)
    if source.is_ipynb:
        _check_round_trip(node, pair, project, source.path)
    if not source.is_ipynb and not node.metadata.get("kernelspec"):
        node.metadata["kernelspec"] = kernels.default_kernelspec()
    if pair.formats_source != "jupytext config":  # record the pairing in the source's metadata
        _write(node, source.path, "ipynb" if source.is_ipynb else pair.text_format)
    _write(node, other, "ipynb" if other.suffix == ".ipynb" else pair.text_format)
    _save_record(project, pair, notebooks.inputs_digest(jupytext.read(other)))
    return pair, f"created {project.relative(other)}"


def sync_pair(pair: Pair, project: Project, keep: Literal["ipynb", "text"] | None = None) -> str:
    """Bring one pair in sync; raise PairConflict (writing nothing) when both sides changed.

    ``keep`` (``"ipynb"`` or ``"text"``) writes the other side from that one whichever changed,
    which is how a conflict is settled on purpose (the ``.ipynb`` keeps its outputs either way).
    """
    from jupytext.combine import combine_inputs_with_outputs

    if keep not in (None, "ipynb", "text"):
        raise BadInput(f"keep must be 'ipynb' or 'text', not {keep!r}")
    state = compare(pair, project)
    if state.missing:
        if keep == state.missing:
            missing = pair.ipynb if keep == "ipynb" else pair.text
            raise BadInput(f"cannot keep {project.relative(missing)}: it does not exist")
        _, done = pair_notebook(pair.text if state.missing == "ipynb" else pair.ipynb, project)
        return done
    if state.in_sync:
        _save_record(project, pair, notebooks.inputs_digest(notebooks.read(pair.ipynb).node))
        return "in sync"
    if state.conflict and keep is None:
        raise PairConflict(
            f"{project.relative(pair.ipynb)} and {project.relative(pair.text)} both changed since "
            f"{state.basis}; nothing was written. Edit one side to match the other (diff below), then sync",
            diff(pair),
        )
    ipynb = notebooks.read(pair.ipynb).node
    text = notebooks.read(pair.text).node
    if (keep or state.newer) == "text":
        combined = combine_inputs_with_outputs(text, ipynb, fmt=pair.text_format)
        _write(combined, pair.ipynb, "ipynb")
        _canonicalize_text(combined, pair)
        digest, done = notebooks.inputs_digest(combined), f"updated {project.relative(pair.ipynb)} from {pair.text.name}"
    else:
        _check_round_trip(ipynb, pair, project, pair.ipynb)  # else `check` would say "not in sync" for ever
        _write(ipynb, pair.text, pair.text_format)
        digest, done = notebooks.inputs_digest(ipynb), f"updated {project.relative(pair.text)} from {pair.ipynb.name}"
    _save_record(project, pair, digest)
    return f"{done} ({'kept as asked' if keep else state.basis})"
