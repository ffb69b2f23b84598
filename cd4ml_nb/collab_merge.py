"""Three-way merge of notebook cells (dicts as ``YNotebook.get`` returns them), for collaboration.

Pure functions: no Jupyter import. ``merge_cells`` takes the content the room last read or wrote
(``base``), the live document (``doc``) and the disk (``disk``) and returns the target cells, each
with the index of the document cell it updates (None: a new cell).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

FIELDS = ("outputs", "execution_count", "metadata", "attachments")


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def source_of(cell: dict) -> str:
    """A cell's source as one string."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def merge_text(base: str, ours: str, theirs: str) -> str:
    """Three-way text merge through the merge driver's ``git merge-file``; a conflict keeps both
    texts between markers."""
    from .merge import merge_text as merge_files

    if theirs == base or ours == theirs:
        return ours
    if ours == base:
        return theirs
    end = "" if all(t.endswith("\n") for t in (base, ours, theirs)) else "\n"
    with tempfile.TemporaryDirectory(prefix="cd4ml-nb-collab-") as folder:
        paths = {name: Path(folder) / name for name in ("base", "ours", "theirs")}
        for name, text in (("base", base), ("ours", ours), ("theirs", theirs)):
            paths[name].write_text(text + end, encoding="utf-8")
        merge_files(paths["base"], paths["ours"], paths["theirs"])
        merged = paths["ours"].read_text(encoding="utf-8")
    return merged[: -len(end)] if end and merged.endswith(end) else merged


def _match(base: list[dict], other: list[dict]) -> dict[int, int]:
    """Base index → other index: by cell id, then by type and source, then by position and type."""
    found: dict[int, int] = {}
    ids = {c.get("id"): j for j, c in enumerate(other) if c.get("id")}
    for i, cell in enumerate(base):
        j = ids.get(cell.get("id"))
        if cell.get("id") and j is not None:
            found[i] = j
    taken = set(found.values())
    for i, cell in enumerate(base):
        if i in found:
            continue
        j = next((j for j, c in enumerate(other) if j not in taken and c.get("cell_type") == cell.get("cell_type")
                  and source_of(c) == source_of(cell)), None)
        if j is not None:
            found[i], taken = j, taken | {j}
    for i, cell in enumerate(base):
        if i not in found and i < len(other) and i not in taken and other[i].get("cell_type") == cell.get("cell_type"):
            found[i], taken = i, taken | {i}
    return found


def merge_cell(base: dict, doc: dict, disk: dict) -> dict:
    """One cell: the source merged three-way; other fields from disk where only disk changed them."""
    merged = dict(doc)
    merged["source"] = merge_text(source_of(base), source_of(doc), source_of(disk))
    for field in FIELDS:
        if field in disk and not _same(disk.get(field), base.get(field)):
            merged[field] = disk[field]
    return merged


def merge_cells(base: list[dict], doc: list[dict], disk: list[dict]) -> list[tuple[dict, int | None]]:
    """The merged cells in document order, with disk-only cells inserted after their disk neighbour."""
    to_doc, to_disk = _match(base, doc), _match(base, disk)
    from_doc = {j: i for i, j in to_doc.items()}
    result: list[tuple[dict, int | None, int | None]] = []  # (cell, doc index, disk index)
    for j, cell in enumerate(doc):
        i = from_doc.get(j)
        if i is None:
            result.append((cell, j, None))
        elif i in to_disk:
            k = to_disk[i]
            result.append((merge_cell(base[i], cell, disk[k]), j, k))
        elif not _same(source_of(cell), source_of(base[i])):  # deleted on disk, edited here: keep
            result.append((cell, j, None))
    placed = {k for _, _, k in result if k is not None}
    fresh = [k for k in range(len(disk)) if k not in placed and not _deleted_here(k, base, to_doc, to_disk, disk)]
    for k in fresh:
        at = 0
        for back in range(k - 1, -1, -1):
            hit = next((n for n, (_, _, kk) in enumerate(result) if kk == back), None)
            if hit is not None:
                at = hit + 1
                break
        while at < len(result) and result[at][1] is None and result[at][2] is not None:
            at += 1
        result.insert(at, (disk[k], None, k))
    return [(cell, j) for cell, j, _ in result]


def _deleted_here(k: int, base: list[dict], to_doc: dict, to_disk: dict, disk: list[dict]) -> bool:
    """A disk cell of the base that the document deleted (and disk left unchanged)."""
    i = next((i for i, kk in to_disk.items() if kk == k), None)
    if i is None or i in to_doc:
        return False
    return _same(source_of(disk[k]), source_of(base[i]))


def merge_metadata(base: dict, doc: dict, disk: dict) -> dict:
    """Notebook metadata, key by key: disk's value where only disk changed it."""
    merged = dict(doc)
    for key in set(base) | set(disk):
        if not _same(base.get(key), disk.get(key)):
            if key in disk:
                merged[key] = disk[key]
            else:
                merged.pop(key, None)
    return merged
