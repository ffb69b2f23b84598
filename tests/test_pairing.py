"""Pairing: pair, check (by content, writes nothing) and sync (refuses when both sides changed)."""
from __future__ import annotations

import json
import os
import time

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, digest_tree, init_repo, percent, write_ipynb


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = init_repo(tmp_path / "repo")
    write_ipynb(repo / "nb.ipynb", percent("x = 1", "print(x)"))
    monkeypatch.chdir(repo)
    assert main(["pair", "nb.ipynb"]) == 0
    commit_all(repo, "paired")
    return repo


def edit_py(repo, old="print(x)", new="print(x + 1)"):
    path = repo / "nb.py"
    path.write_text(path.read_text().replace(old, new))


def edit_ipynb(repo, new="print(x * 2)"):
    path = repo / "nb.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][1]["source"] = new
    path.write_text(json.dumps(nb, indent=1))


def test_pair_creates_the_missing_side(repo, capsys):
    text = (repo / "nb.py").read_text()
    assert "formats: ipynb,py:percent" in text and "# %%\nprint(x)" in text
    assert main(["check"]) == 0
    assert "1 pair(s) in sync" in capsys.readouterr().out


def test_pair_from_a_script_creates_the_notebook(tmp_path, monkeypatch):
    repo = init_repo(tmp_path / "r2")
    (repo / "s.py").write_text(percent("y = 2"))
    monkeypatch.chdir(repo)
    assert main(["pair", "s.py"]) == 0
    nb = json.loads((repo / "s.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("side", ["py", "ipynb"])
def test_check_detects_edits_by_content_and_writes_nothing(repo, capsys, side):
    (edit_py if side == "py" else edit_ipynb)(repo)
    before = digest_tree(repo)
    state_before = sorted(p.name for p in (repo / ".cd4ml").iterdir())
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert f"nb.{side} looks newer" in out
    assert digest_tree(repo) == before
    assert sorted(p.name for p in (repo / ".cd4ml").iterdir()) == state_before


def test_check_ignores_modification_times(repo, capsys):
    future = time.time() + 3600
    os.utime(repo / "nb.ipynb", (future, future))
    assert main(["check"]) == 0


def test_check_json(repo, capsys):
    edit_py(repo)
    capsys.readouterr()
    assert main(["check", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["out_of_sync"] == 1 and data["pairs"][0]["newer"] == "text"


def test_check_without_sync_record_uses_git_head(repo, capsys):
    import shutil

    shutil.rmtree(repo / ".cd4ml")  # a fresh clone has no sync record
    edit_ipynb(repo)
    assert main(["check"]) == 1
    assert "nb.ipynb looks newer (compared with git HEAD)" in capsys.readouterr().out
    assert not (repo / ".cd4ml").exists()


def test_sync_takes_inputs_from_the_newer_side_and_keeps_outputs(repo):
    nb = json.loads((repo / "nb.ipynb").read_text())
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "kept\n"}]
    nb["cells"][0]["execution_count"] = 1
    (repo / "nb.ipynb").write_text(json.dumps(nb))
    assert main(["sync", "nb.ipynb"]) == 0  # inputs equal: nothing to do but record
    edit_py(repo)
    assert main(["sync", "nb.py"]) == 0
    nb = json.loads((repo / "nb.ipynb").read_text())
    assert "".join(nb["cells"][1]["source"]) == "print(x + 1)"
    assert "".join(nb["cells"][0]["outputs"][0]["text"]) == "kept\n"
    assert main(["check"]) == 0
    edit_ipynb(repo)
    assert main(["sync", "."]) == 0
    assert "print(x * 2)" in (repo / "nb.py").read_text()


def test_sync_refuses_with_a_diff_when_both_sides_changed(repo, capsys):
    edit_py(repo)
    edit_ipynb(repo)
    before = digest_tree(repo)
    assert main(["sync", "nb.ipynb"]) == 1
    err = capsys.readouterr().err
    assert "both changed since the last cd4ml-nb sync; nothing was written" in err
    assert "-print(x * 2)" in err and "+print(x + 1)" in err
    assert digest_tree(repo) == before
    assert main(["check"]) == 1
    assert "both sides changed" in capsys.readouterr().out


def test_pair_refuses_to_overwrite_a_differing_side(tmp_path, monkeypatch, capsys):
    repo = init_repo(tmp_path / "r3")
    write_ipynb(repo / "a.ipynb", percent("a = 1"))
    (repo / "a.py").write_text(percent("a = 2"))
    before = digest_tree(repo)
    monkeypatch.chdir(repo)
    assert main(["pair", "a.ipynb"]) == 1
    assert "a.py already exists and its inputs differ" in capsys.readouterr().err
    assert digest_tree(repo) == before


def test_jupytext_toml_formats_are_used(tmp_path, monkeypatch):
    repo = init_repo(tmp_path / "r4")
    (repo / "jupytext.toml").write_text('formats = "ipynb,py:percent"\n')
    write_ipynb(repo / "b.ipynb", percent("b = 1"))
    monkeypatch.chdir(repo)
    assert main(["pair", "b.ipynb"]) == 0
    assert (repo / "b.py").exists()
    assert main(["check"]) == 0


# --- sync with an explicit side kept (the Lab panel's "keep .py" / "keep .ipynb") -------------


def _both_changed(repo):
    """Both sides edited since the last sync, the .ipynb with an output to keep."""
    edit_py(repo)
    edit_ipynb(repo)
    nb = json.loads((repo / "nb.ipynb").read_text())
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "kept\n"}]
    nb["cells"][0]["execution_count"] = 1
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1))


def _pair_of(repo):
    from cd4ml_nb import pairing
    from cd4ml_nb.project import Project

    project = Project.discover(repo)
    return pairing, pairing.find_pair(repo / "nb.ipynb", project), project


def test_keep_text_settles_a_conflict_from_the_py(repo, capsys):
    _both_changed(repo)
    pairing, pair, project = _pair_of(repo)
    assert pairing.compare(pair, project).conflict
    done = pairing.sync_pair(pair, project, keep="text")
    assert done.startswith("updated nb.ipynb from nb.py") and "kept as asked" in done
    nb = json.loads((repo / "nb.ipynb").read_text())
    assert "".join(nb["cells"][1]["source"]) == "print(x + 1)"
    assert "".join(nb["cells"][0]["outputs"][0]["text"]) == "kept\n", "the notebook's outputs are kept"
    assert "print(x + 1)" in (repo / "nb.py").read_text()
    assert main(["check"]) == 0


def test_keep_ipynb_settles_a_conflict_from_the_notebook(repo, capsys):
    _both_changed(repo)
    pairing, pair, project = _pair_of(repo)
    done = pairing.sync_pair(pair, project, keep="ipynb")
    assert done.startswith("updated nb.py from nb.ipynb")
    text = (repo / "nb.py").read_text()
    assert "print(x * 2)" in text and "print(x + 1)" not in text
    assert "formats: ipynb,py:percent" in text
    assert main(["check"]) == 0


def test_keep_overrides_the_newer_side_and_without_it_nothing_changes(repo, capsys):
    from cd4ml_nb.exceptions import BadInput, PairConflict

    _both_changed(repo)
    pairing, pair, project = _pair_of(repo)
    before = digest_tree(repo)
    with pytest.raises(PairConflict):
        pairing.sync_pair(pair, project)
    with pytest.raises(BadInput):
        pairing.sync_pair(pair, project, keep="py")
    assert digest_tree(repo) == before
    # Only the .py changed: keeping the .ipynb writes the .py back from it.
    commit_all(repo, "both")
    assert main(["sync", "nb.ipynb"]) == 1  # still a conflict against the last sync record
    pairing.sync_pair(pair, project, keep="ipynb")
    edit_py(repo, old="print(x * 2)", new="print(x * 3)")
    assert pairing.compare(pair, project).newer == "text"
    pairing.sync_pair(pair, project, keep="ipynb")
    assert "print(x * 2)" in (repo / "nb.py").read_text()
    assert main(["check"]) == 0
