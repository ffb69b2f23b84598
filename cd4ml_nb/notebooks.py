"""Reading notebooks from either side of a pair, with one-line errors for bad files (written whole by
:func:`.files.write_atomic`)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import BadInput, NotebookError, NotFound

NOTEBOOK_SUFFIXES = (".ipynb", ".py")  # the suffixes ``run``/``params`` look for; ``read`` takes any Jupytext one
TEXT_FORMAT = "py:percent"


def skip_iri_grammar() -> None:
    """Spare this process the IRI grammar jsonschema builds when it is imported (``rfc3987-syntax``
    compiles a Lark parser: 0.7 s of CPU, more than the rest of papermill's import). Notebook
    validation never checks IRIs. For processes cd4ml-nb owns (the CLI, Lab job processes): call
    before anything imports jsonschema; afterwards it changes nothing."""
    import sys

    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "not installed"


def _text_suffixes() -> tuple[str, ...]:
    """Every extension Jupytext reads as a text notebook (``.py``, ``.md``, ``.R``, …)."""
    from jupytext.formats import NOTEBOOK_EXTENSIONS

    return tuple(ext for ext in NOTEBOOK_EXTENSIONS if ext != ".ipynb")


@dataclass(frozen=True)
class Notebook:
    """A notebook read from disk: its path and its nbformat node."""

    path: Path
    node: Any  # nbformat.NotebookNode

    @property
    def is_ipynb(self) -> bool:
        return self.path.suffix == ".ipynb"


def first_line(error: BaseException) -> str:
    """An exception's message in one line (its type name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _check_ipynb_json(path: Path, raw: bytes) -> None:
    """Raise a one-line NotebookError unless ``raw`` is plausible nbformat-4 JSON."""
    if not raw.strip():
        raise NotebookError(f"{path}: empty file, not a notebook")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotebookError(f"{path}: not UTF-8 text (byte {e.start}), not a notebook") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookError(f"{path}: invalid notebook JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise NotebookError(f"{path}: not a notebook (top-level JSON is not an object)")
    if not isinstance(data.get("cells"), list):
        raise NotebookError(f"{path}: not a notebook (no 'cells' list)")
    if data.get("nbformat") != 4:
        raise NotebookError(f"{path}: unsupported nbformat {data.get('nbformat')!r} (expected 4)")


def refuse_remote(text: str | os.PathLike) -> None:
    """BadInput for a URL (``s3://``, ``gs://``, ``https://`` …): notebooks are local files here."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", os.fspath(text))
    if match:
        raise BadInput(f"{os.fspath(text)}: remote notebooks ({match.group(1)}://) are not supported; copy it into "
                       "the repository first, so that the run records the code it ran")


def read(path: Path) -> Notebook:
    """Read a ``.ipynb`` or a Jupytext ``.py`` notebook; raise NotebookError with one line."""
    refuse_remote(path)
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if path.is_dir():
        raise NotebookError(f"{path}: is a folder, not a notebook")
    if path.suffix not in NOTEBOOK_SUFFIXES and path.suffix not in _text_suffixes():
        raise NotebookError(f"{path}: not a notebook (expected a .ipynb file or a Jupytext text notebook)")
    raw = path.read_bytes()
    if path.suffix == ".ipynb":
        _check_ipynb_json(path, raw)
    else:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NotebookError(f"{path}: not UTF-8 text (byte {e.start}), not a notebook script") from None
    import jupytext
    import nbformat

    try:
        node = jupytext.read(path)
    except Exception as e:  # jupytext/nbformat/yaml raise many types for bad files
        what = "notebook header" if path.suffix == ".py" else "notebook"
        raise NotebookError(f"{path}: cannot read {what}: {first_line(e)}") from None
    if path.suffix == ".ipynb":
        try:
            nbformat.validate(node)
        except nbformat.ValidationError as e:
            raise NotebookError(f"{path}: invalid notebook: {first_line(e)}") from None
    return Notebook(path=path, node=node)


def text_of(node: Any, fmt: str = TEXT_FORMAT) -> str:
    """The inputs of a notebook rendered as Jupytext text (what a paired .py holds)."""
    import jupytext

    return jupytext.writes(node, fmt)


def ipynb_text(node: Any) -> str:
    """``node`` as ``.ipynb`` JSON, exactly as Jupytext writes it, valid for its nbformat version.

    Cell ``id``s are required from nbformat 4.5 on and invalid before it: cells created from a
    text notebook carry one, so they are dropped for a 4.0–4.4 notebook (Jupytext keeps them and
    writes an invalid file) and added where a 4.5 notebook lacks them. Ends with a newline, as
    ``nbformat.write`` and Jupytext's files do.
    """
    import copy

    import jupytext
    from nbformat.corpus.words import generate_corpus_id as random_cell_id

    node = copy.deepcopy(node)
    with_ids = (node.nbformat, node.nbformat_minor) >= (4, 5)
    seen: set[str] = set()
    for cell in node.cells:
        if not with_ids:
            cell.pop("id", None)
            continue
        if not cell.get("id") or cell["id"] in seen:
            cell["id"] = random_cell_id()
        seen.add(cell["id"])
    text = jupytext.writes(node, fmt="ipynb")
    return text if text.endswith("\n") else text + "\n"


def inputs_digest(node: Any) -> str:
    """SHA-256 of a notebook's inputs (cell types, sources, tags): equal for a pair in sync."""
    cells = [
        [cell.cell_type, cell.source.rstrip("\n"), sorted(cell.get("metadata", {}).get("tags", []))]
        for cell in node.cells
    ]
    return hashlib.sha256(json.dumps(cells).encode("utf-8")).hexdigest()
