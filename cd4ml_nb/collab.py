"""Pairs under jupyter-collaboration: the live document is the one writer of both files.

jupyter-collaboration has no public hook for changes made on disk: its room overwrites the
document with the disk content (losing unsaved edits), and its file loader detects changes by a
newer modification time only (Jupytext reports the text side's). For paired notebooks this module
replaces, on the versions listed in ``KNOWN``, four methods of its loader and room classes:

- ``FileLoader.load_content`` reads the pair itself (inputs from the side that changed, outputs
  from the ``.ipynb``) and records what it read (the basis) and a fingerprint of both files;
- ``FileLoader.maybe_notify`` detects a change by content (size and SHA-256 of both files);
- ``DocumentRoom._on_outofband_change`` merges the disk into the document, three-way against the
  basis, as Yjs edits in one transaction, then saves at once;
- ``FileLoader.maybe_save_content`` merges instead of saving over a change on disk, keeps the text
  header free of the empty kernelspec the document adds, and records each save as the pair's sync.

Any other file keeps jupyter-collaboration's behaviour. On an unknown version nothing is replaced
and the server log says so once.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import collab_merge, notebooks, pairing
from .exceptions import Cd4mlError
from .project import Project

log = logging.getLogger(__name__)

KNOWN = {"jupyter_server_ydoc": ("3.0.",), "jupyter_ydoc": ("4.",)}  # version prefixes known to work
EMPTY_METADATA = {"kernelspec": {"name": "", "display_name": ""}, "language_info": {"name": ""}}
STATE = "cd4ml_pair_state"  # attribute set on a FileLoader
installed: dict[str, Any] = {}


@dataclass
class PairState:
    """What a loader knows of its pair: the files, their fingerprint and the content last read or written."""

    pair: pairing.Pair
    project: Project
    path: str  # the loader's path when this was made
    fingerprint: tuple | None = None
    basis: dict | None = None
    pending: set = field(default_factory=set)


def fingerprint(pair: pairing.Pair) -> tuple:
    """Size and SHA-256 of both files (None for a missing file)."""
    def one(path: Path):
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return len(data), hashlib.sha256(data).hexdigest()
    return one(pair.ipynb), one(pair.text)


def plain(content: Any) -> dict:
    """A notebook as plain JSON data."""
    return json.loads(json.dumps(content, default=str))


def _versions_known() -> tuple[bool, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name, prefixes in KNOWN.items():
        try:
            have = version(name.replace("_", "-"))
        except PackageNotFoundError:
            return False, f"{name} is not installed"
        found.append(f"{name} {have}")
        if not have.startswith(prefixes):
            return False, f"{name} {have} is not a version cd4ml_nb knows ({', '.join(prefixes)}x)"
    return True, ", ".join(found)


def available() -> bool:
    """Whether jupyter-collaboration's server side is importable."""
    import importlib.util

    return importlib.util.find_spec("jupyter_server_ydoc") is not None


def install(server_log: logging.Logger | None = None) -> bool:
    """Replace the loader and room methods for pairs; False (and one warning) on an unknown version."""
    server_log = server_log or log
    if installed or not available():
        return bool(installed)
    ok, detail = _versions_known()
    if ok:
        try:
            from jupyter_server_ydoc.loaders import FileLoader
            from jupyter_server_ydoc.rooms import DocumentRoom
        except ImportError as e:
            ok, detail = False, f"cannot import its classes ({e})"
    if ok:
        names = (FileLoader, ("load_content", "maybe_notify", "maybe_save_content")), \
                (DocumentRoom, ("_on_outofband_change", "_save_to_disc"))
        missing = [f"{cls.__name__}.{n}" for cls, ns in names for n in ns if not callable(getattr(cls, n, None))]
        if missing:
            ok, detail = False, f"missing {', '.join(missing)}"
    if not ok:
        server_log.warning("cd4ml_nb: pairs are not merged under real-time collaboration: %s; a pair changed on "
                           "disk replaces unsaved edits (jupyter-collaboration's own behaviour)", detail)
        return False
    for cls, method, replacement in ((FileLoader, "load_content", _load_content),
                                     (FileLoader, "maybe_notify", _maybe_notify),
                                     (FileLoader, "maybe_save_content", _maybe_save_content),
                                     (DocumentRoom, "_on_outofband_change", _on_outofband_change)):
        installed[f"{cls.__name__}.{method}"] = getattr(cls, method)
        setattr(cls, method, replacement)
    server_log.info("cd4ml_nb: pairs merge changes on disk under real-time collaboration (%s)", detail)
    return True


def _original(name: str):
    return installed[name]


# --- which loaders hold a pair ----------------------------------------------------------------


def _contents_root(loader) -> Path:
    return Path(getattr(loader._contents_manager, "root_dir", "."))


def state_of(loader) -> PairState | None:
    """The pair state of a loader, or None when its file is not one side of a pair."""
    try:
        path = loader.path
    except RuntimeError:
        return None
    state = getattr(loader, STATE, None)
    if isinstance(state, PairState) and state.path == path:
        return state
    full = (_contents_root(loader) / path).resolve()
    try:
        stamp = (path, full.stat().st_mtime_ns, full.stat().st_size)
    except OSError:
        return None
    if state == stamp or full.suffix not in (".ipynb", ".py"):
        return None  # not a pair when last looked at, and not changed since
    try:
        project = Project.discover(full.parent)
        found = pairing.find_pair(full, project)
    except Cd4mlError as e:
        log.info("cd4ml_nb: %s is not merged as a pair: %s", path, e)
        found = None
    if found is None or not (found.ipynb.exists() and found.text.exists()):
        setattr(loader, STATE, stamp)  # looked at again when the file changes: it may be paired later
        return None
    state = PairState(found, project, path)
    setattr(loader, STATE, state)
    return state


# --- reading a pair ---------------------------------------------------------------------------


def read_pair(state: PairState) -> Any:
    """The notebook a pair holds: inputs from the side that changed since the basis (the text side
    when both or neither did), outputs from the ``.ipynb``."""
    from jupytext.combine import combine_inputs_with_outputs

    ipynb = notebooks.read(state.pair.ipynb).node
    text = notebooks.read(state.pair.text).node
    if state.basis is not None:
        base = notebooks.inputs_digest(_node(state.basis))
        if notebooks.inputs_digest(text) == base and notebooks.inputs_digest(ipynb) != base:
            return ipynb
    combined = combine_inputs_with_outputs(text, ipynb, fmt=state.pair.text_format)
    kept = combined.metadata.setdefault("jupytext", {})
    for key, value in ipynb.metadata.get("jupytext", {}).items():  # e.g. main_language: else a diff nobody made
        kept.setdefault(key, value)
    return combined


def _node(content: dict) -> Any:
    import nbformat

    return nbformat.from_dict(content)


async def _load_content(self, format: str, file_type: str) -> dict[str, Any]:
    state = state_of(self) if file_type == "notebook" else None
    if state is None:
        return await _original("FileLoader.load_content")(self, format, file_type)
    async with self._lock:
        state.fingerprint = await asyncio.to_thread(fingerprint, state.pair)
        node = await asyncio.to_thread(read_pair, state)
        model = await _model(self, self.path)
        model["content"] = node
        self.last_modified = model["last_modified"]
        state.basis = plain(node)
        return model


async def _model(loader, path: str) -> dict[str, Any]:
    from jupyter_server.utils import ensure_async

    return await ensure_async(loader._contents_manager.get(path, content=False))


async def _notify(loader) -> None:
    for callback in list(loader._subscriptions.values()):
        await callback()


async def _maybe_notify(self) -> None:
    state = state_of(self)
    if state is None:
        return await _original("FileLoader.maybe_notify")(self)
    self.last_modified = None  # the original then notifies of a new path only, not of a newer mtime
    await _original("FileLoader.maybe_notify")(self)
    async with self._lock:  # not while the room writes the files (Jupyter writes them in place)
        changed = state.fingerprint is not None and await asyncio.to_thread(fingerprint, state.pair) != state.fingerprint
    if changed:
        await _notify(self)


def _clean_header(content: dict, basis: dict | None) -> dict:
    """Drop the empty kernelspec and language_info the document adds when the disk had none."""
    meta = dict(content.get("metadata") or {})
    had = (basis or {}).get("metadata") or {}
    for key, empty in EMPTY_METADATA.items():
        if key not in had and meta.get(key) == empty:
            del meta[key]
    return {**content, "metadata": meta}


async def _maybe_save_content(self, model: dict[str, Any]) -> dict[str, Any] | None:
    state = state_of(self) if model.get("type") == "notebook" else None
    if state is None:
        return await _original("FileLoader.maybe_save_content")(self, model)
    if state.fingerprint is not None and await asyncio.to_thread(fingerprint, state.pair) != state.fingerprint:
        task = asyncio.create_task(_notify(self))  # merge the disk first; the merge saves
        state.pending.add(task)
        task.add_done_callback(state.pending.discard)
        return None
    content = _clean_header(plain(model["content"]), state.basis)
    self.last_modified = (await _model(self, self.path))["last_modified"]
    saved = await _original("FileLoader.maybe_save_content")(self, {**model, "content": content})
    if saved is not None:
        state.basis = content
        await asyncio.to_thread(_after_save, state, content)
    return saved


def _after_save(state: PairState, content: dict) -> None:
    """Take the files' fingerprint as the room's, unless they already hold something else (a pull
    landed right after the save: the next poll merges it); record the sync."""
    now = fingerprint(state.pair)
    try:
        on_disk = notebooks.inputs_digest(read_pair(state))
    except Cd4mlError:
        on_disk = None
    written = notebooks.inputs_digest(_node(content))
    state.fingerprint = now if on_disk == written else ("changed since the save",)
    if on_disk == written:
        _record(state, content)


def _record(state: PairState, content: dict) -> None:
    """Record a collaborative save as the pair's last sync (the panel then says "in sync")."""
    try:
        pairing.record_sync(state.pair, state.project, notebooks.inputs_digest(_node(content)))
    except Cd4mlError as e:
        log.warning("cd4ml_nb: the sync of %s was not recorded: %s", state.pair.ipynb, e)


# --- merging into the live document -----------------------------------------------------------


async def _on_outofband_change(self) -> None:
    state = state_of(self._file) if self.file_type == "notebook" else None
    if state is None:
        return await _original("DocumentRoom._on_outofband_change")(self)
    basis = state.basis
    try:
        disk = plain((await self._file.load_content(self._file_format, self._file_type))["content"])
    except (Cd4mlError, OSError) as e:
        self.log.error("cd4ml_nb: %s changed on disk but cannot be read: %s", self._file.path, e)
        return
    async with self._update_lock:
        apply_merge(self._document, basis, disk)
    self.log.info("cd4ml_nb: merged the changes on disk of %s into room %s", self._file.path, self.room_id)
    self._save_to_disc()


def apply_merge(document, basis: dict | None, disk: dict) -> None:
    """Merge ``disk`` into a live ``YNotebook`` three-way against ``basis``, in one transaction."""
    doc = document.get()
    base = basis if basis is not None else doc
    target = collab_merge.merge_cells(base.get("cells", []), doc.get("cells", []), disk.get("cells", []))
    metadata = collab_merge.merge_metadata(base.get("metadata", {}), doc.get("metadata", {}),
                                           disk.get("metadata", {}))
    with document.ydoc.transaction():
        _apply_cells(document, doc.get("cells", []), target)
        if json.dumps(metadata, sort_keys=True) != json.dumps(doc.get("metadata", {}), sort_keys=True):
            document._ymeta["metadata"] = _ymap(metadata)


def _apply_cells(document, current: list[dict], target: list[tuple[dict, int | None]]) -> None:
    ycells = document.ycells
    kept = {j for _, j in target if j is not None}
    for j in range(len(current) - 1, -1, -1):
        if j not in kept:
            del ycells[j]
    position = {j: n for n, j in enumerate(sorted(kept))}
    for at, (cell, j) in enumerate(target):
        if j is None:
            ycells.insert(at, document.create_ycell(copy.deepcopy(cell)))
            position = {k: (n + 1 if n >= at else n) for k, n in position.items()}
            continue
        _update_cell(document, ycells[position[j]], current[j], cell)


def _update_cell(document, ycell, old: dict, new: dict) -> None:
    before, after = collab_merge.source_of(old), collab_merge.source_of(new)
    if before != after:
        start = 0
        while start < min(len(before), len(after)) and before[start] == after[start]:
            start += 1
        end = 0
        while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
            end += 1
        ytext = ycell["source"]
        if len(before) - end > start:
            del ytext[start:len(before) - end]
        if len(after) - end > start:
            ytext.insert(start, after[start:len(after) - end])
    for key in collab_merge.FIELDS:
        if key in new and json.dumps(new[key], sort_keys=True) != json.dumps(old.get(key), sort_keys=True):
            _set_field(document, ycell, key, copy.deepcopy(new[key]))


def _set_field(document, ycell, key: str, value: Any) -> None:
    from jupyter_ydoc.utils import cast_all
    from pycrdt import Array, Map

    if key == "outputs":
        youtputs = document._create_youtputs(value)
        if isinstance(ycell.get("outputs"), Array):
            ycell["outputs"].clear()
            ycell["outputs"].extend(youtputs)
        else:
            ycell["outputs"] = Array(youtputs)
        return
    value = cast_all(value, int, float) if isinstance(value, (dict, list)) else value
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ycell[key] = Map(value) if key == "metadata" else value


def _ymap(value: dict):
    from jupyter_ydoc.utils import cast_all
    from pycrdt import Map

    return Map(cast_all(copy.deepcopy(value), int, float))


# --- the pairing routes with a room open ------------------------------------------------------


def live_rooms(serverapp) -> list:
    """The open notebook rooms of jupyter-collaboration in this server (none when not installed)."""
    if not installed:
        return []
    apps = serverapp.extension_manager.extension_apps.get("jupyter_server_ydoc", ())
    rooms = []
    for app in apps:
        server = getattr(app, "ywebsocket_server", None)
        rooms += [room for room in list(getattr(server, "rooms", {}).values())
                  if getattr(room, "file_type", None) == "notebook" and hasattr(room, "_file")]
    return rooms


def _room_of(serverapp, pair: pairing.Pair):
    for room in live_rooms(serverapp):
        state = state_of(room._file)
        if state is not None and state.pair.ipynb == pair.ipynb:
            return room, state
    return None, None


async def sync_live(serverapp, root, text: Any, keep: Any) -> dict[str, Any] | None:
    """`POST pairing/sync` while a room holds the pair: the chosen side (or the disk, without
    ``keep``) merges into the live document, which then saves both files. None without a room."""
    from . import lab

    if not installed or keep not in (None, "ipynb", "text"):
        return None
    real = await asyncio.to_thread(root.file, text)
    project = await asyncio.to_thread(root.project, real)
    pair = await asyncio.to_thread(pairing.find_pair, real, project)
    room, state = _room_of(serverapp, pair) if pair is not None else (None, None)
    if room is None:
        return None
    if keep is None:
        await room._on_outofband_change()
    else:
        now, side = await asyncio.to_thread(_side, state, keep)
        async with room._update_lock:
            apply_merge(room._document, state.basis, side)
            state.fingerprint, state.basis = now, side
        room._save_to_disc()
    if room._saving_document is not None:
        await asyncio.shield(room._saving_document)
    done = f"merged {'the disk' if keep is None else pair.ipynb.name if keep == 'ipynb' else pair.text.name} " \
           "into the live document, which saved both files"
    return {**await asyncio.to_thread(lab.read_pairing, root, text), "done": done}


def _side(state: PairState, keep: str) -> tuple[tuple, dict]:
    """The files' fingerprint, and one side of the pair as notebook content (the text side with the
    .ipynb's outputs)."""
    from jupytext.combine import combine_inputs_with_outputs

    now = fingerprint(state.pair)
    ipynb = notebooks.read(state.pair.ipynb).node
    if keep == "ipynb":
        return now, plain(ipynb)
    text = notebooks.read(state.pair.text).node
    return now, plain(combine_inputs_with_outputs(text, ipynb, fmt=state.pair.text_format))
