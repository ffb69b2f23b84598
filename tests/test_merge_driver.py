"""The .ipynb merge driver, with real `git merge` in temporary repositories.

"Executing" a notebook writes outputs into its JSON as a kernel would (a stream output and an
execution count per code cell): what matters here is which outputs survive the merge.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, git, init_repo, percent, write_ipynb

CELLS = ("x = 1", "y = 2", "print(x + y)")


def fake_execute(path, when="2026-01-01T00:00:00"):
    """Give every code cell an execution count, an output naming its source, and the time it ran
    in its metadata (as papermill and JupyterLab's "record timing" do)."""
    nb = json.loads(path.read_text())
    count = 0
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            count += 1
            cell["execution_count"] = count
            cell["metadata"]["execution"] = {"shell.execute_reply": f"{when}.{count:06d}Z"}
            text = f"ran {''.join(cell['source'])}\n"
            cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": [text]}]
    path.write_text(json.dumps(nb, indent=1) + "\n")


def edit_cell(repo, old, new):
    """Edit a cell in both files, as Jupyter with Jupytext's contents manager saves a pair."""
    py = repo / "nb.py"
    assert old in py.read_text()
    py.write_text(py.read_text().replace(old, new))
    nb = json.loads((repo / "nb.ipynb").read_text())
    for cell in nb["cells"]:
        if "".join(cell["source"]) == old:
            cell["source"] = new
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1) + "\n")


def edit_pair(repo, old, new):
    """Edit a cell, re-execute the notebook, commit."""
    edit_cell(repo, old, new)
    day = 2 if git(repo, "branch", "--show-current") == "master" else 3  # each branch ran at its own time
    fake_execute(repo / "nb.ipynb", when=f"2026-01-0{day}T00:00:00")
    return commit_all(repo, f"{old} -> {new}")


def merge(repo, branch="other"):
    return subprocess.run(["git", "merge", "--no-edit", branch], cwd=repo, capture_output=True, text=True)


def code_cells(repo):
    """The code cells of nb.ipynb, sources and output texts joined into strings."""
    cells = [c for c in json.loads((repo / "nb.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    for c in cells:
        c["source"] = "".join(c["source"])
        for out in c["outputs"]:
            out["text"] = "".join(out.get("text", ""))
    return cells


@pytest.fixture(params=[5, 4], ids=["nbformat4.5", "nbformat4.4"])
def repo(request, tmp_path, monkeypatch):
    """A paired, executed notebook (nbformat 4.5 with cell ids, or 4.4 without) on master."""
    repo = init_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text(".cd4ml/\n")
    write_ipynb(repo / "nb.ipynb", percent(*CELLS))
    nb = json.loads((repo / "nb.ipynb").read_text())
    nb["nbformat_minor"] = request.param
    for cell in nb["cells"]:
        if request.param < 5:
            cell.pop("id", None)
        else:
            assert cell["id"]
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    monkeypatch.chdir(repo)
    assert main(["pair", "nb.ipynb"]) == 0
    fake_execute(repo / "nb.ipynb")
    commit_all(repo, "paired, executed")
    return repo


def install_and_commit(repo):
    assert main(["merge-driver", "install"]) == 0
    commit_all(repo, "merge driver")


def diverge(repo):
    """`other` edits the first cell, master the second; both re-executed."""
    git(repo, "checkout", "-q", "-b", "other")
    edit_pair(repo, "x = 1", "x = 10")
    git(repo, "checkout", "-q", "master")
    edit_pair(repo, "y = 2", "y = 20")


def test_without_the_driver_git_conflicts_on_the_notebook(repo):
    diverge(repo)
    done = merge(repo)
    assert done.returncode != 0
    assert "CONFLICT (content): Merge conflict in nb.ipynb" in done.stdout
    assert "Merge conflict in nb.py" not in done.stdout  # the text side merges cleanly by itself


def test_the_driver_merges_edits_of_different_cells(repo, capsys):
    install_and_commit(repo)
    diverge(repo)
    done = merge(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    capsys.readouterr()
    assert main(["check"]) == 0, capsys.readouterr().out
    cells = code_cells(repo)
    assert [c["source"] for c in cells] == ["x = 10", "y = 20", "print(x + y)"]
    # edited on either branch: no (stale) outputs; untouched: outputs and count kept from ours
    assert [c["outputs"] for c in cells[:2]] == [[], []]
    assert [c["execution_count"] for c in cells[:2]] == [None, None]
    assert cells[2]["outputs"][0]["text"] == "ran print(x + y)\n" and cells[2]["execution_count"] == 3
    raw = (repo / "nb.ipynb").read_text()
    assert raw.endswith("}\n")
    import nbformat

    merged = nbformat.reads(raw, as_version=4)
    nbformat.validate(merged)
    minor = json.loads(git(repo, "show", "HEAD~1:nb.ipynb"))["nbformat_minor"]
    assert merged.nbformat_minor == minor
    ids = [c.get("id") for c in merged.cells]
    assert ids == [None] * 3 if minor < 5 else len(set(ids)) == 3 and None not in ids
    assert git(repo, "status", "--porcelain") == ""


def test_outputs_of_an_unchanged_cell_come_from_theirs_when_ours_has_none(repo):
    install_and_commit(repo)
    git(repo, "checkout", "-q", "-b", "other")
    edit_pair(repo, "x = 1", "x = 10")
    git(repo, "checkout", "-q", "master")
    edit_cell(repo, "y = 2", "y = 20")
    nb = json.loads((repo / "nb.ipynb").read_text())
    for cell in nb["cells"]:
        cell["outputs"], cell["execution_count"] = [], None  # ours cleared its outputs
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    commit_all(repo, "y = 20, outputs cleared")
    assert merge(repo).returncode == 0
    cells = code_cells(repo)
    assert cells[2]["outputs"][0]["text"] == "ran print(x + y)\n"  # theirs' output of the untouched cell
    assert cells[0]["outputs"] == [] and cells[1]["outputs"] == []


def test_a_real_conflict_leaves_markers_in_the_py_and_ours_in_the_ipynb(repo, capsys):
    install_and_commit(repo)
    git(repo, "checkout", "-q", "-b", "other")
    edit_pair(repo, "y = 2", "y = 3")
    git(repo, "checkout", "-q", "master")
    edit_pair(repo, "y = 2", "y = 4")
    ours = (repo / "nb.ipynb").read_bytes()
    done = merge(repo)
    assert done.returncode != 0
    assert "CONFLICT (content): Merge conflict in nb.ipynb" in done.stdout
    py = (repo / "nb.py").read_text()
    assert "<<<<<<<" in py and "=======" in py and ">>>>>>>" in py and "y = 3" in py and "y = 4" in py
    assert (repo / "nb.ipynb").read_bytes() == ours
    # the documented resolution: edit the .py, sync, add both
    py = (repo / "nb.py").read_text()
    start, end = py.index("<<<<<<<"), py.index(">>>>>>>")
    py = py[:start] + "y = 7\n" + py[py.index("\n", end) + 1:]
    (repo / "nb.py").write_text(py)
    capsys.readouterr()
    assert main(["sync", "nb.py"]) == 0, capsys.readouterr()
    git(repo, "add", "nb.py", "nb.ipynb")
    assert main(["check"]) == 0
    assert [c["source"] for c in code_cells(repo)] == ["x = 1", "y = 7", "print(x + y)"]


def test_the_driver_works_for_rebase_too(repo):
    install_and_commit(repo)
    diverge(repo)
    git(repo, "checkout", "-q", "other")
    done = subprocess.run(["git", "rebase", "master"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [c["source"] for c in code_cells(repo)] == ["x = 10", "y = 20", "print(x + y)"]
    assert main(["check"]) == 0


def test_usage_errors(repo, tmp_path, monkeypatch):
    assert main(["merge-driver", "run", "a", "b"]) == 2
    assert main(["merge-driver", "install", "extra"]) == 2
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert main(["merge-driver", "install"]) == 2


def test_install_is_idempotent(repo, capsys):
    assert main(["merge-driver", "install"]) == 0
    config, attributes = (repo / ".git" / "config").read_text(), (repo / ".gitattributes").read_text()
    assert attributes == "*.ipynb merge=cd4ml-nb\n"
    assert "merge-driver run %O %A %B %L %P" in git(repo, "config", "merge.cd4ml-nb.driver")
    capsys.readouterr()
    assert main(["merge-driver", "install"]) == 0
    assert "already installed" in capsys.readouterr().out
    assert (repo / ".git" / "config").read_text() == config
    assert (repo / ".gitattributes").read_text() == attributes


def test_install_keeps_other_attributes(repo):
    (repo / ".gitattributes").write_text("*.csv -diff")  # no final newline
    assert main(["merge-driver", "install"]) == 0
    assert (repo / ".gitattributes").read_text() == "*.csv -diff\n*.ipynb merge=cd4ml-nb\n"


def test_install_global(repo, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    for _ in range(2):
        assert main(["merge-driver", "install", "--global"]) == 0
    assert (home / ".config" / "git" / "attributes").read_text() == "*.ipynb merge=cd4ml-nb\n"
    assert "merge-driver run %O %A %B %L %P" in git(repo, "config", "--global", "merge.cd4ml-nb.driver")
    assert not (repo / ".gitattributes").exists()


def _unpaired_merge(tmp_path, name, with_driver, ours_edit, theirs_edit):
    """Merge two edits of an unpaired notebook's JSON; return (exit code, merged bytes)."""
    repo = init_repo(tmp_path / name)
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [f"line {i}"]} for i in range(12)],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    (repo / "raw.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    if with_driver:
        subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "merge-driver", "install"], cwd=repo, check=True)
    commit_all(repo, "base")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "raw.ipynb").write_text((repo / "raw.ipynb").read_text().replace(*theirs_edit))
    commit_all(repo, "theirs")
    git(repo, "checkout", "-q", "master")
    (repo / "raw.ipynb").write_text((repo / "raw.ipynb").read_text().replace(*ours_edit))
    commit_all(repo, "ours")
    done = merge(repo)
    return done.returncode, (repo / "raw.ipynb").read_bytes()


@pytest.mark.parametrize("theirs_edit", [("line 10", "line ten"), ("line 1\"", "line one\"")],
                         ids=["clean", "conflict"])
def test_an_unpaired_notebook_merges_like_git_default(tmp_path, theirs_edit):
    ours_edit = ("line 1\"", "line uno\"")
    plain = _unpaired_merge(tmp_path, "plain", False, ours_edit, theirs_edit)
    driven = _unpaired_merge(tmp_path, "driven", True, ours_edit, theirs_edit)
    assert (driven[0] == 0) == (plain[0] == 0)
    if plain[0] == 0:
        assert driven[1] == plain[1] and b"line ten" in driven[1] and b"line uno" in driven[1]
    else:
        assert b"<<<<<<< ours" in driven[1] and b">>>>>>> theirs" in driven[1]
        strip = [line for line in plain[1].splitlines() if not line.startswith((b"<<<<<<<", b">>>>>>>"))]
        assert [line for line in driven[1].splitlines() if not line.startswith((b"<<<<<<<", b">>>>>>>"))] == strip


def kernel_execute(path):
    """Execute the notebook in place with a real python3 kernel (nbclient records cell timings)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    nbformat.write(nb, path)


def test_really_executed_branches_merge(tmp_path, monkeypatch, capsys):
    """Both branches edit a different cell (one adds a cell too) and execute the notebook for real."""
    repo = init_repo(tmp_path / "real")
    (repo / ".gitignore").write_text(".cd4ml/\n")
    write_ipynb(repo / "nb.ipynb", "# %% [markdown]\n# A title\n\n" + percent(*CELLS))
    monkeypatch.chdir(repo)
    assert main(["pair", "nb.ipynb"]) == 0
    install_and_commit(repo)
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "nb.py").write_text((repo / "nb.py").read_text() + "\n# %%\nprint('added')\n")
    assert main(["sync", "nb.py"]) == 0
    edit_cell(repo, "x = 1", "x = 10")
    kernel_execute(repo / "nb.ipynb")
    commit_all(repo, "x = 10, a cell added, executed")
    git(repo, "checkout", "-q", "master")
    edit_cell(repo, "y = 2", "y = 20")
    kernel_execute(repo / "nb.ipynb")
    commit_all(repo, "y = 20, executed")
    ours = {"".join(c["source"]): c for c in json.loads((repo / "nb.ipynb").read_text())["cells"]}
    done = merge(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    capsys.readouterr()
    assert main(["check"]) == 0, capsys.readouterr().out
    cells = json.loads((repo / "nb.ipynb").read_text())["cells"]
    assert [(c["cell_type"], "".join(c["source"])) for c in cells] == [
        ("markdown", "A title"), ("code", "x = 10"), ("code", "y = 20"), ("code", "print(x + y)"),
        ("code", "print('added')")]
    assert [c["outputs"] for c in cells[1:3] + cells[4:]] == [[], [], []]
    kept = cells[3]
    assert kept["outputs"] == ours["print(x + y)"]["outputs"] and "".join(kept["outputs"][0]["text"]) == "21\n"
    assert kept["metadata"]["execution"] == ours["print(x + y)"]["metadata"]["execution"]
    assert kept["id"] == ours["print(x + y)"]["id"]
