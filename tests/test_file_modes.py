"""Files cd4ml-nb writes get the mode any editor would give them: 0666 less the umask when new, the
old mode when rewritten (mkstemp would make them 0600)."""
from __future__ import annotations

import os
import stat

import pytest

from cd4ml_nb import files, pairing
from cd4ml_nb.project import Project

from nbfactory import init_repo, percent, write_ipynb


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_pairing_creates_files_as_an_editor_would(tmp_path, umask):
    repo = init_repo(tmp_path / "repo")
    write_ipynb(repo / "nb.ipynb", percent("x = 1", "print(x)"))
    os.chmod(repo / "nb.ipynb", 0o640)
    project = Project.discover(repo)
    pair, done = pairing.pair_notebook(repo / "nb.ipynb", project)
    assert done == "created nb.py"
    assert mode(repo / "nb.py") == 0o666 & ~umask
    assert mode(repo / ".cd4ml" / "pairs.json") == 0o666 & ~umask
    assert mode(repo / "nb.ipynb") == 0o640  # rewritten (formats metadata): keeps its mode

    os.chmod(repo / "nb.py", 0o600)
    (repo / "nb.py").write_text((repo / "nb.py").read_text().replace("print(x)", "print(x + 1)"))
    assert pairing.sync_pair(pair, project).startswith("updated nb.ipynb")
    assert mode(repo / "nb.ipynb") == 0o640 and mode(repo / "nb.py") == 0o600
    assert sorted(p.name for p in repo.iterdir()) == [".cd4ml", ".git", "nb.ipynb", "nb.py"]  # no temporary left


def test_the_atomic_writer(tmp_path, umask):
    path = tmp_path / "new.txt"
    files.write_atomic(path, "one")
    assert path.read_text() == "one" and mode(path) == 0o666 & ~umask
    os.chmod(path, 0o604)
    files.write_atomic(path, "two")
    assert path.read_text() == "two" and mode(path) == 0o604
    assert [p.name for p in tmp_path.iterdir()] == ["new.txt"]
