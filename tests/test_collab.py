"""Pairs under real-time collaboration (#28): a real Jupyter server with jupyter-collaboration and
Jupytext, headless Yjs clients (pycrdt + jupyter_ydoc), and pulls written to disk while they edit.

Runs only where jupyter-collaboration is installed (`pip install cd4ml-nb[collab]`)."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("jupyter_server_ydoc", reason="jupyter-collaboration is not installed (pip install cd4ml-nb[collab])")

from collab_client import Server, client, edit_cell, sources, until  # noqa: E402
from nbfactory import commit_all, init_repo, percent, wait_until, write_ipynb  # noqa: E402

CELLS = ("a = 1", "b = 2", "c = 3")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("collab-root")
    started = Server(root)
    yield started
    started.stop()


@pytest.fixture
def pair(server, request):
    """A committed pair ``<test>/nb.ipynb`` + ``nb.py`` under the server's root; returns (folder, relative path)."""
    from cd4ml_nb import pairing
    from cd4ml_nb.project import Project

    folder = init_repo(server.root / request.node.name.replace("[", "_").replace("]", "_"))
    write_ipynb(folder / "nb.ipynb", percent(*CELLS))
    pairing.pair_notebook(folder / "nb.ipynb", Project.discover(folder))
    commit_all(folder, "paired")
    return folder, f"{folder.name}/nb.ipynb"


def py_with(folder: Path, *cells: str) -> str:
    """The .py as it is, with its code cells replaced by ``cells`` (the header kept)."""
    import jupytext

    nb = jupytext.read(folder / "nb.py")
    for cell, text in zip(nb.cells, cells):
        cell.source = text
    return jupytext.writes(nb, fmt="py:percent")


def ipynb_sources(folder: Path) -> list[str]:
    """The .ipynb's cell sources ([] while the server is writing it: Jupyter writes in place)."""
    try:
        return ["".join(c["source"]) for c in json.loads((folder / "nb.ipynb").read_text())["cells"]]
    except ValueError:
        return []


def in_both_files(folder: Path, *texts: str) -> bool:
    """Whether both files hold every one of ``texts`` (False while the server writes them)."""
    py, ipynb = (folder / "nb.py").read_text(), "\n".join(ipynb_sources(folder))
    return all(t in py and t in ipynb for t in texts)


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario, 180))


def test_an_edit_by_a_client_reaches_both_files(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as nb:
            edit_cell(nb, 0, "a = 10")
            await until(lambda: in_both_files(folder, "a = 10"), "the edit saved into both files")
    run(scenario())


def test_a_py_pulled_while_idle_reaches_every_client_and_the_ipynb(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as one, client(server, path) as two:
            (folder / "nb.py").write_text(py_with(folder, "a = 1", "b = 20", "c = 3"))
            for nb in (one, two):
                await until(lambda nb=nb: sources(nb)[1] == "b = 20", "the pull reaching a client")
            await until(lambda: ipynb_sources(folder)[1:2] == ["b = 20"], "the pull reaching the .ipynb, no edit made")
    run(scenario())


def test_a_py_pulled_50ms_after_an_unsaved_edit_keeps_both(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as nb:
            edit_cell(nb, 0, "a = 100")
            await asyncio.sleep(0.05)  # the scenario: the pull lands while the edit is not saved yet
            (folder / "nb.py").write_text(py_with(folder, "a = 1", "b = 2", "c = 300"))
            await until(lambda: sources(nb) == ["a = 100", "b = 2", "c = 300"], "both changes in the document")
            await until(lambda: in_both_files(folder, "a = 100", "c = 300"), "both changes in both files")
            assert sources(nb) == ["a = 100", "b = 2", "c = 300"]
    run(scenario())


def test_a_py_replaced_with_an_older_mtime_is_picked_up(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as nb:
            before = (folder / "nb.py").stat().st_mtime
            (folder / "nb.py").write_text(py_with(folder, "a = 1", "b = 2", "c = 33"))
            os.utime(folder / "nb.py", (before - 3600, before - 3600))  # `cp -p`, `rsync -t`, `tar x`
            await until(lambda: sources(nb)[2] == "c = 33", "the older .py reaching the client")
            await until(lambda: ipynb_sources(folder)[2:3] == ["c = 33"], "the older .py reaching the .ipynb")
    run(scenario())


def test_an_ipynb_only_change_of_outputs_is_kept(server, pair):
    folder, path = pair
    output = {"output_type": "stream", "name": "stdout", "text": "from git\n"}

    async def scenario():
        async with client(server, path) as nb:
            data = json.loads((folder / "nb.ipynb").read_text())
            data["cells"][1]["outputs"] = [output]
            (folder / "nb.ipynb").write_text(json.dumps(data, indent=1) + "\n")
            await until(lambda: nb.get()["cells"][1]["outputs"], "the outputs reaching the client")
            edit_cell(nb, 0, "a = 5")
            await until(lambda: in_both_files(folder, "a = 5"), "a later edit saved")
            saved = json.loads((folder / "nb.ipynb").read_text())["cells"][1]["outputs"]
            assert ["".join(o.get("text")) for o in saved] == ["from git\n"]
    run(scenario())


def test_two_clients_on_different_cells_keep_both(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as one, client(server, path) as two:
            edit_cell(one, 0, "a = 7")
            edit_cell(two, 2, "c = 9")
            for nb in (one, two):
                await until(lambda nb=nb: sources(nb) == ["a = 7", "b = 2", "c = 9"], "both edits in each client")
            await until(lambda: in_both_files(folder, "a = 7", "c = 9"), "both edits in both files")
    run(scenario())


def test_a_conflicting_edit_on_both_sides_leaves_both_texts_visible(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as nb:
            edit_cell(nb, 1, "b = 'typed'")
            await asyncio.sleep(0.05)  # the scenario: the pull lands while the edit is not saved yet
            (folder / "nb.py").write_text(py_with(folder, "a = 1", "b = 'pulled'", "c = 3"))
            await until(lambda: "'typed'" in sources(nb)[1] and "'pulled'" in sources(nb)[1],
                        "both texts in the conflicting cell")
            await until(lambda: in_both_files(folder, "'typed'", "'pulled'"), "both texts in both files")
    run(scenario())


def test_collaborative_saves_leave_the_py_header_alone_and_the_pair_in_sync(server, pair):
    import jupytext

    folder, path = pair
    nb = jupytext.read(folder / "nb.ipynb")
    del nb.metadata["kernelspec"]  # as many notebooks in the wild: the document would add an empty one
    jupytext.write(nb, folder / "nb.ipynb")
    jupytext.write(nb, folder / "nb.py", fmt="py:percent")
    commit_all(folder, "no kernelspec")
    header = (folder / "nb.py").read_text().split("# %%")[0]
    assert "kernelspec" not in header
    metadata = json.loads((folder / "nb.ipynb").read_text())["metadata"]

    async def scenario():
        async with client(server, path) as nb:
            edit_cell(nb, 0, "a = 42")
            await until(lambda: in_both_files(folder, "a = 42"), "the edit saved")
            (folder / "nb.py").write_text(py_with(folder, "a = 42", "b = 43", "c = 3"))
            await until(lambda: in_both_files(folder, "b = 43"), "the pull saved into the .ipynb")
    run(scenario())
    wait_until(lambda: in_both_files(folder, "a = 42", "b = 43", "c = 3"), what="both files whole")
    assert (folder / "nb.py").read_text().split("# %%")[0] == header
    assert json.loads((folder / "nb.ipynb").read_text())["metadata"] == metadata
    code, state = server.request("GET", f"cd4ml-nb/pairing?path={path}")
    assert code == 200 and state["in_sync"] is True and state["conflict"] is False, state


def test_sync_and_keep_go_through_the_live_document(server, pair):
    folder, path = pair

    async def scenario():
        async with client(server, path) as nb:
            edit_cell(nb, 0, "a = 'unsaved'")  # a collaborator's edit, not saved yet
            data = json.loads((folder / "nb.ipynb").read_text())
            data["cells"][2]["source"] = "c = 'from ipynb'"
            (folder / "nb.ipynb").write_text(json.dumps(data, indent=1) + "\n")
            code, state = await asyncio.to_thread(server.request, "POST", "cd4ml-nb/pairing/sync",
                                                  {"path": path, "keep": "ipynb"})
            assert code == 200, state
            assert "live document" in state["done"], state
            await until(lambda: sources(nb) == ["a = 'unsaved'", "b = 2", "c = 'from ipynb'"], "both in the document")
            await until(lambda: in_both_files(folder, "a = 'unsaved'", "c = 'from ipynb'"), "both in both files")
            code, state = await asyncio.to_thread(server.request, "POST", "cd4ml-nb/pairing/sync", {"path": path})
            assert code == 200 and state["in_sync"] is True, state
    run(scenario())


def test_an_unknown_version_keeps_jupyter_collaborations_behaviour_with_one_warning(monkeypatch, caplog):
    from cd4ml_nb import collab
    from jupyter_server_ydoc.rooms import DocumentRoom

    monkeypatch.setattr(collab, "installed", {})
    monkeypatch.setitem(collab.KNOWN, "jupyter_server_ydoc", ("0.1.",))
    before = DocumentRoom._on_outofband_change
    with caplog.at_level("WARNING"):
        assert collab.install() is False
    assert DocumentRoom._on_outofband_change is before
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "not a version cd4ml_nb knows" in warnings[0], warnings
