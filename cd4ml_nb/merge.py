"""A git merge driver for ``.ipynb`` files: merge paired notebooks through their text side.

``cd4ml-nb merge-driver install`` registers the driver (``merge.cd4ml-nb.*`` in the git config and
``*.ipynb merge=cd4ml-nb`` in ``.gitattributes``); git then calls
``cd4ml-nb merge-driver run %O %A %B %L %P`` whenever both sides of a merge changed a notebook.

How a paired notebook is merged (:func:`merge_notebook`):

1. The three versions of the ``.ipynb`` (base ``%O``, ours ``%A``, theirs ``%B``) are rendered
   with Jupytext in the pair's text format (e.g. ``py:percent``): these are the three ``.py``
   texts. They are taken from the notebooks, not from the index stages of the ``.py``, because
   git's merge machinery (``ort``) writes the index only after every file was merged: while the
   driver runs, the ``.py`` stages are not there to read. Rendering the notebooks also works the
   same for ``merge``, ``rebase``, ``cherry-pick`` and ``stash apply``. For a pair committed in
   sync (what ``cd4ml-nb check`` enforces), the rendered texts are the committed ``.py`` files, so
   git's own merge of the ``.py`` and this one agree.
2. ``git merge-file`` merges the texts. A conflict leaves ``%A`` (our notebook) as it was and
   exits 1, so git reports the conflict; git's own merge of the ``.py`` holds the conflict markers.
3. Otherwise the merged text is read back as a notebook; every cell whose type and source are
   unchanged since the base keeps its outputs, execution count, id and metadata — from ours, else
   (when ours has none there) from theirs. A cell edited, added or re-ordered into a new source
   on either branch has no outputs: they would be stale. Notebook metadata and filtered cell
   metadata are restored the way Jupytext's own sync does (``combine_inputs_with_outputs``).
4. The result is validated for our notebook's nbformat version (cell ids from 4.5 on, none
   before) and written to ``%A``, ending with a newline.

A notebook that is not paired, or any version that is not a readable notebook, is merged the way
git merges by default: ``git merge-file`` on the JSON text, its exit code passed through.
"""
from __future__ import annotations

import logging
import copy
import difflib
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import files, gitinfo
from .exceptions import BadInput

log = logging.getLogger(__name__)

DRIVER = "cd4ml-nb"
ATTRIBUTE_LINE = f"*.ipynb merge={DRIVER}"
DRIVER_NAME = "cd4ml-nb: merge paired notebooks through their text side"


@dataclass(frozen=True)
class MergeResult:
    """What the driver did with one file."""

    exit_code: int  # 0 merged; non-zero: conflict (git marks the file conflicted)
    how: str  # "notebook", "notebook conflict" or "text"
    message: str


# --- installing -------------------------------------------------------------------------------


def driver_command() -> str:
    """The command git runs: ``cd4ml-nb`` when on PATH, else this Python's ``-m cd4ml_nb.cli``."""
    if shutil.which("cd4ml-nb"):
        program = "cd4ml-nb"
    else:
        program = f"{shlex.quote(sys.executable)} -m cd4ml_nb.cli"
    return f"{program} merge-driver run %O %A %B %L %P"


def _global_attributes_file(cwd: Path) -> Path:
    """``core.attributesFile`` when set, else ``$XDG_CONFIG_HOME/git/attributes`` (git's default)."""
    configured = gitinfo.run(cwd, "config", "--global", "--path", "--get", "core.attributesFile")
    if configured.returncode == 0 and configured.stdout.strip():
        return Path(os.path.expanduser(configured.stdout.strip()))
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(xdg) / "git" / "attributes"


def _ensure_attribute(path: Path) -> bool:
    """Append ``*.ipynb merge=cd4ml-nb`` to an attributes file unless already there. True if written."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if any(line.split() == ATTRIBUTE_LINE.split() for line in text.splitlines()):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + ATTRIBUTE_LINE + "\n", encoding="utf-8")
    return True


def install(cwd: Path, *, global_: bool = False) -> list[str]:
    """Register the driver; idempotent. Returns what changed (empty when nothing did).

    Per repository: ``merge.cd4ml-nb.name``/``driver`` in ``.git/config`` and the attribute line
    in ``.gitattributes`` at the top of the work tree (commit it: the team shares it, and a clone
    without the driver configured falls back to git's ordinary merge). With ``global_``: the
    same in ``~/.gitconfig`` and the global attributes file.
    """
    cwd = Path(cwd).resolve()
    scope = ["--global"] if global_ else ["--local"]
    if global_:
        attributes = _global_attributes_file(cwd)
    else:
        top = gitinfo.run(cwd, "rev-parse", "--show-toplevel")
        if top.returncode != 0:
            raise BadInput(f"{cwd}: not in a git work tree (use --global to install for every repository)")
        attributes = Path(top.stdout.strip()) / ".gitattributes"
    changed = []
    for key, value in (("name", DRIVER_NAME), ("driver", driver_command())):
        current = gitinfo.run(cwd, "config", *scope, "--get", f"merge.{DRIVER}.{key}").stdout.rstrip("\n")
        if current != value:
            gitinfo.run(cwd, "config", *scope, f"merge.{DRIVER}.{key}", value, check=True)
            changed.append(f"git config {scope[0]} merge.{DRIVER}.{key}")
    if _ensure_attribute(attributes):
        changed.append(str(attributes))
    return changed


# --- merging ----------------------------------------------------------------------------------


def merge_text(base: Path, ours: Path, theirs: Path, marker_size: int = 7) -> int:
    """Git's default merge: ``git merge-file`` writing into ``ours``; returns its exit code."""
    done = gitinfo.run(None, "merge-file", f"--marker-size={marker_size}", "-L", "ours", "-L", "base", "-L",
                       "theirs", str(ours), str(base), str(theirs))
    if done.returncode < 0 or done.returncode > 127:
        print(done.stderr, file=sys.stderr, end="")
    return done.returncode


def _merge_strings(base: str, ours: str, theirs: str, marker_size: int) -> tuple[str, int]:
    """``git merge-file -p`` on three strings: the merged text and the number of conflicts."""
    with tempfile.TemporaryDirectory(prefix="cd4ml-nb-merge-") as folder:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(folder) / name
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        done = gitinfo.run(None, "merge-file", "-p", f"--marker-size={marker_size}", "-L", "ours", "-L", "base",
                           "-L", "theirs", *paths)
    if done.returncode < 0 or done.returncode > 127:
        raise BadInput(f"git merge-file failed: {done.problem()}")
    return done.stdout, done.returncode


def _read_ipynb(path: Path) -> Any | None:
    """The notebook in ``path``, or None when it is not a readable nbformat-4 notebook."""
    import json

    import jupytext

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("nbformat") != 4 or not isinstance(data.get("cells"), list):
            return None
        return jupytext.reads(text, fmt="ipynb")
    except Exception as e:  # any unreadable version: the driver falls back to git's text merge
        log.debug("%s is not a readable notebook (%s): text merge", path, e)
        return None


def _key(cell: Any) -> tuple[str, str]:
    return cell.cell_type, cell.source


def _matches(merged: list, other: list) -> dict[int, int]:
    """Merged cell index -> index of the identical cell (type and source) in ``other``, in order."""
    matcher = difflib.SequenceMatcher(None, [_key(c) for c in merged], [_key(c) for c in other], autojunk=False)
    found = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            found[block.a + k] = block.b + k
    return found


def _has_outputs(cell: Any) -> bool:
    return bool(cell.get("outputs")) or cell.get("execution_count") is not None


def _donor_cells(merged: Any, base: Any, ours: Any, theirs: Any) -> list:
    """For each merged cell: the cell whose outputs and metadata it keeps, else a bare copy."""
    in_base, in_ours, in_theirs = (_matches(merged.cells, nb.cells) for nb in (base, ours, theirs))
    donors = []
    for i, cell in enumerate(merged.cells):
        donor = None
        if i in in_base:  # unchanged since the base: its outputs are not stale
            mine = ours.cells[in_ours[i]] if i in in_ours else None
            other = theirs.cells[in_theirs[i]] if i in in_theirs else None
            if mine is not None and (_has_outputs(mine) or other is None or not _has_outputs(other)):
                donor = mine
            else:
                donor = other
        if donor is not None:
            donor = copy.deepcopy(donor)
        else:
            donor = copy.deepcopy(cell)
            donor.metadata = {}
            if donor.cell_type == "code":
                donor.outputs, donor.execution_count = [], None
        donors.append(donor)
    return donors


def _fix_ids(nb: Any) -> None:
    """Cell ids as nbformat wants them: unique ones from 4.5 on, none before."""
    import uuid

    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        for cell in nb.cells:
            cell.pop("id", None)
        return
    seen = set()
    for cell in nb.cells:
        if not cell.get("id") or cell["id"] in seen:
            cell["id"] = uuid.uuid4().hex[:8]
        seen.add(cell["id"])


def combine(merged_text: str, fmt: str, base: Any, ours: Any, theirs: Any) -> Any:
    """The merged notebook: inputs from ``merged_text``, outputs of unchanged cells kept."""
    import jupytext
    import nbformat
    from jupytext.combine import combine_inputs_with_outputs

    merged = jupytext.reads(merged_text, fmt=fmt)
    donor = nbformat.NotebookNode(
        cells=_donor_cells(merged, base, ours, theirs), metadata=copy.deepcopy(ours.metadata),
        nbformat=ours.nbformat, nbformat_minor=ours.nbformat_minor,
    )
    # The donor has one cell per merged cell with the same source, in order: Jupytext's matching
    # pairs them one to one, so only outputs chosen above survive.
    result = combine_inputs_with_outputs(merged, donor, fmt=fmt)
    _fix_ids(result)
    nbformat.validate(result)
    return result


def merge_notebook(base: Path, ours: Path, theirs: Path, fmt: str, marker_size: int = 7,
                   nodes: tuple[Any, Any, Any] | None = None) -> MergeResult:
    """Merge a paired notebook through its text format ``fmt``; write the result into ``ours``."""
    import jupytext

    from . import notebooks

    base_nb, ours_nb, theirs_nb = nodes or tuple(_read_ipynb(p) for p in (base, ours, theirs))
    texts = [jupytext.writes(nb, fmt=fmt) for nb in (base_nb, ours_nb, theirs_nb)]
    merged_text, conflicts = _merge_strings(*texts, marker_size=marker_size)
    if conflicts:
        return MergeResult(1, "notebook conflict",
                           f"{conflicts} conflict(s) in the {fmt} text; the .ipynb is left as ours")
    result = combine(merged_text, fmt, base_nb, ours_nb, theirs_nb)
    files.write_atomic(ours, notebooks.ipynb_text(result))
    return MergeResult(0, "notebook", f"merged through {fmt}")


def _pair_format(path: Path, ours_nb: Any) -> str | None:
    """The text format of the pair ``path`` belongs to (judged by our version), or None."""
    from . import pairing
    from .project import Project

    try:
        project = Project.discover(Path.cwd())
        pair = pairing.find_pair(path, project, node=ours_nb)
    except Exception as e:  # unknown formats, a path outside the project...: merge as text
        log.debug("%s: no pair found (%s): text merge", path, e)
        return None
    if pair is None or not pair.text.exists():
        return None
    return pair.text_format


def run(base: Path, ours: Path, theirs: Path, path: str, marker_size: int = 7,
        warn: Callable[[str], None] | None = None) -> MergeResult:
    """The driver: what git calls with ``%O %A %B %L %P`` (from the top of the work tree)."""
    nodes = tuple(_read_ipynb(Path(p)) for p in (base, ours, theirs))
    fmt = None
    if all(nb is not None for nb in nodes):
        fmt = _pair_format(Path.cwd() / path, nodes[1])
    if fmt is None:
        code = merge_text(Path(base), Path(ours), Path(theirs), marker_size)
        return MergeResult(code, "text", "not a paired notebook: merged as text")
    result = merge_notebook(Path(base), Path(ours), Path(theirs), fmt, marker_size, nodes)
    if warn and result.exit_code:
        warn(f"{path}: {result.message}; resolve the .py, then `cd4ml-nb sync` and `git add` both sides")
    return result
