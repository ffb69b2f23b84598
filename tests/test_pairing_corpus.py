"""Pairing against notebooks written by others, with Jupytext's own behaviour as the reference.

Corpus: papermill's test notebooks (read from the installed package) and a subset of Jupytext's
(``tests/corpus/jupytext/``, MIT). Each goes through ``pair``, ``check``, an edit on each side,
``sync`` and ``check``; every file written must be byte-identical to what Jupytext writes for the
same step (Jupytext run in-process on a copy), except that cell ``id``s are never written into a
notebook older than nbformat 4.5 (Jupytext does so, and the result is invalid).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, digest_tree, git, init_repo

HERE = Path(__file__).parent


def _corpus() -> list:
    import papermill

    papermill_dir = Path(papermill.__file__).parent / "tests" / "notebooks"
    found = [pytest.param(p, id=f"papermill/{p.name}") for p in sorted(papermill_dir.glob("*.ipynb"))]
    found += [pytest.param(p, id=f"jupytext/{p.name}") for p in sorted((HERE / "corpus" / "jupytext").glob("*.ipynb"))]
    return found


def jupytext_cli(*args: str) -> None:
    from jupytext.cli import jupytext

    assert not jupytext(["--quiet", *args])


def touch_newer(newer: Path, older: Path) -> None:
    """Make ``newer`` look newer than ``older`` for Jupytext's mtime-based ``--sync`` (no sleeps)."""
    t = older.stat().st_mtime
    os.utime(newer, (t + 10, t + 10))


def assert_valid(path: Path) -> dict:
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n"), f"{path.name}: no final newline"
    nb = nbformat.reads(raw, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)  # for its own version: ids only from 4.5 on
    return json.loads(raw)


def without_new_ids(data: dict, original: dict) -> dict:
    """A notebook without the ids of cells that are not in ``original`` (new ids are random; Jupytext
    also puts them, wrongly, on new cells of a pre-4.5 notebook)."""
    data = copy.deepcopy(data)
    kept = {cell.get("id") for cell in original["cells"]} - {None}
    for cell in data["cells"]:
        if cell.get("id") not in kept:
            cell.pop("id", None)
    return data


# Cell metadata Jupytext itself owns and may add or rewrite to keep the text form round-tripping.
JUPYTEXT_CELL_KEYS = {"lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker"}
# Notebook metadata nbformat drops on every write (transient).
TRANSIENT_KEYS = {"orig_nbformat", "jupytext"}


def user_metadata(meta: dict, ignore: set) -> dict:
    return {k: v for k, v in meta.items() if k not in ignore}


def round_trips(path: Path) -> bool:
    import jupytext

    from cd4ml_nb.notebooks import inputs_digest

    nb = jupytext.read(path)
    back = jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent")
    return inputs_digest(back) == inputs_digest(nb)


def edit_ipynb_cell(path: Path) -> None:
    """Edit the first code cell the way an editor would (nbformat's own writer)."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.source += "\nedited_in_ipynb = 1"
    nbformat.write(nb, path)


ADDED_CELL = "\n# %%\nadded_in_py = 1\n"


@pytest.mark.parametrize("source", _corpus())
def test_corpus_notebook_pair_edit_sync(source, tmp_path, monkeypatch, capsys):
    repo = init_repo(tmp_path / "repo")
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copyfile(source, repo / "nb.ipynb")
    shutil.copyfile(source, ref / "nb.ipynb")
    original = json.loads(source.read_text(encoding="utf-8"))
    commit_all(repo, "original")
    monkeypatch.chdir(repo)

    if not round_trips(source):  # lossy in py:percent: refused with the difference, nothing written
        before = digest_tree(repo)
        assert main(["pair", "nb.ipynb"]) == 1
        assert "does not round-trip" in capsys.readouterr().err
        assert digest_tree(repo) == before
        return

    # pair: both files exactly as `jupytext --set-formats ipynb,py:percent` writes them
    assert main(["pair", "nb.ipynb"]) == 0
    jupytext_cli("--set-formats", "ipynb,py:percent", str(ref / "nb.ipynb"))
    assert (repo / "nb.py").read_bytes() == (ref / "nb.py").read_bytes()
    assert (repo / "nb.ipynb").read_bytes() == (ref / "nb.ipynb").read_bytes()
    assert_valid(repo / "nb.ipynb")
    assert main(["check"]) == 0

    # a cell added to the .py
    for folder in (repo, ref):
        with (folder / "nb.py").open("a", encoding="utf-8") as f:
            f.write(ADDED_CELL)
        touch_newer(folder / "nb.py", folder / "nb.ipynb")
    assert main(["sync", "nb.py"]) == 0
    jupytext_cli("--sync", str(ref / "nb.ipynb"))
    ours = assert_valid(repo / "nb.ipynb")
    theirs = json.loads((ref / "nb.ipynb").read_text(encoding="utf-8"))
    assert without_new_ids(ours, original) == without_new_ids(theirs, original)
    assert (repo / "nb.py").read_bytes() == (ref / "nb.py").read_bytes()
    assert "".join(ours["cells"][-1]["source"]) == "added_in_py = 1"
    for before, after in zip(original["cells"], ours["cells"]):  # outputs and metadata untouched
        assert after.get("outputs") == before.get("outputs")
        assert after.get("execution_count") == before.get("execution_count")
        assert user_metadata(after["metadata"], JUPYTEXT_CELL_KEYS) == user_metadata(before["metadata"], JUPYTEXT_CELL_KEYS)
        assert after.get("id") == before.get("id")
    assert user_metadata(ours["metadata"], TRANSIENT_KEYS) == user_metadata(original["metadata"], TRANSIENT_KEYS)
    assert main(["check"]) == 0
    assert main(["pair", "nb.ipynb"]) == 0  # already paired: readable by every command

    # a cell edited in the .ipynb
    shutil.copyfile(repo / "nb.ipynb", ref / "nb.ipynb")  # the reference starts from our (valid) notebook
    for folder in (repo, ref):
        edit_ipynb_cell(folder / "nb.ipynb")
        touch_newer(folder / "nb.ipynb", folder / "nb.py")
    ipynb_before = (repo / "nb.ipynb").read_bytes()
    assert main(["sync", "."]) == 0
    jupytext_cli("--sync", str(ref / "nb.ipynb"))
    assert (repo / "nb.py").read_bytes() == (ref / "nb.py").read_bytes()
    assert "edited_in_ipynb = 1" in (repo / "nb.py").read_text(encoding="utf-8")
    assert (repo / "nb.ipynb").read_bytes() == ipynb_before
    assert main(["check"]) == 0
    # Jupytext reads back what we wrote, and agrees it is in sync
    jupytext_cli("--sync", str(repo / "nb.ipynb"))
    assert (repo / "nb.ipynb").read_bytes() == ipynb_before


def assert_jupytext_sync_changes_nothing(repo: Path, newer: Path, older: Path) -> None:
    before = digest_tree(repo)
    touch_newer(newer, older)
    jupytext_cli("--sync", str(newer))
    assert digest_tree(repo) == before


def test_magic_cells_stay_canonical(tmp_path, monkeypatch):
    """``%%html`` and other magics: what sync leaves is what `jupytext --sync` would leave alone."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    repo = init_repo(tmp_path / "repo")
    nb = new_notebook(cells=[
        new_code_cell("%%html\n<b>bold</b>"), new_markdown_cell("# Title"), new_code_cell("%matplotlib inline\nx = 1"),
        new_code_cell("%%time\ny = 2"), new_code_cell("!ls"),
    ])
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    nbformat.write(nb, repo / "m.ipynb")
    monkeypatch.chdir(repo)
    assert main(["pair", "m.ipynb"]) == 0
    assert_jupytext_sync_changes_nothing(repo, repo / "m.ipynb", repo / "m.py")
    with (repo / "m.py").open("a") as f:  # a magic typed by hand, as in a notebook
        f.write("\n# %%\n%%html\n<i>new</i>\n")
    assert main(["sync", "m.py"]) == 0
    assert '# %% language="html"\n# <i>new</i>\n' in (repo / "m.py").read_text()
    assert_valid(repo / "m.ipynb")
    assert_jupytext_sync_changes_nothing(repo, repo / "m.py", repo / "m.ipynb")
    edit_ipynb_cell(repo / "m.ipynb")
    assert main(["sync", "m.ipynb"]) == 0
    assert_jupytext_sync_changes_nothing(repo, repo / "m.ipynb", repo / "m.py")
    assert main(["check"]) == 0


def test_branch_switch_does_not_make_sync_refuse(tmp_path, monkeypatch, capsys):
    """The sync record is one per work tree: a side equal to HEAD has not changed, whatever it says."""
    from nbfactory import percent, write_ipynb

    repo = init_repo(tmp_path / "repo")
    write_ipynb(repo / "nb.ipynb", percent("x = 1", "print(x)"))
    monkeypatch.chdir(repo)
    assert main(["pair", "nb.ipynb"]) == 0
    commit_all(repo, "paired")
    git(repo, "checkout", "-q", "-b", "experiment")
    py = repo / "nb.py"
    py.write_text(py.read_text().replace("x = 1", "x = 2"))
    assert main(["sync", "nb.py"]) == 0  # the record now holds the experiment's inputs
    commit_all(repo, "x = 2")
    git(repo, "checkout", "-q", "master")
    py.write_text(py.read_text().replace("print(x)", "print(x + 1)"))  # only the .py edited
    assert main(["check"]) == 1
    assert "nb.py looks newer (compared with git HEAD)" in capsys.readouterr().out
    assert main(["sync", "."]) == 0
    nb = json.loads((repo / "nb.ipynb").read_text())
    assert ["".join(c["source"]) for c in nb["cells"]] == ["x = 1", "print(x + 1)"]
    assert main(["check"]) == 0


def test_pairs_in_other_text_formats_work_with_every_command(tmp_path, monkeypatch, capsys):
    """A notebook paired to ``.md`` is checked and synced; it does not break the other pairs."""
    from nbfactory import percent, write_ipynb

    repo = init_repo(tmp_path / "repo")
    write_ipynb(repo / "a.ipynb", percent("a = 1"))
    write_ipynb(repo / "b.ipynb", percent("b = 1"))
    nb = json.loads((repo / "b.ipynb").read_text())
    nb["metadata"]["jupytext"] = {"formats": "ipynb,md"}
    (repo / "b.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    monkeypatch.chdir(repo)
    assert main(["pair", "a.ipynb", "b.ipynb"]) == 0
    assert (repo / "b.md").exists()
    assert main(["check"]) == 0
    assert "2 pair(s) in sync" in capsys.readouterr().out
    md = repo / "b.md"
    md.write_text(md.read_text().replace("b = 1", "b = 2"))
    assert main(["check"]) == 1
    assert main(["sync", "."]) == 0
    assert "".join(json.loads((repo / "b.ipynb").read_text())["cells"][0]["source"]) == "b = 2"
    assert main(["check"]) == 0


def test_pair_refuses_a_notebook_that_does_not_round_trip(tmp_path, monkeypatch, capsys):
    """``pair`` verifies the round trip and reports the difference (exit 1), writing nothing."""
    from nbformat.v4 import new_code_cell, new_notebook

    repo = init_repo(tmp_path / "repo")
    # a code cell holding a line that reads as a percent cell marker: it comes back as two cells
    nb = new_notebook(cells=[new_code_cell("x = 1\n# %%\ny = 2"), new_code_cell("z = 3")])
    nbformat.write(nb, repo / "lossy.ipynb")
    monkeypatch.chdir(repo)
    import jupytext

    from cd4ml_nb.notebooks import inputs_digest

    back = jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent")
    assert inputs_digest(back) != inputs_digest(nb)  # the premise: Jupytext loses it
    before = digest_tree(repo)
    assert main(["pair", "lossy.ipynb"]) == 1
    err = capsys.readouterr().err
    assert "lossy.ipynb does not round-trip through py:percent" in err
    assert "-code: 'x = 1\\n# %%\\ny = 2'" in err and "+code: 'x = 1'" in err
    assert digest_tree(repo) == before
    assert not (repo / "lossy.py").exists() and not (repo / ".cd4ml").exists()
