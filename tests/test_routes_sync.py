"""`POST /cd4ml-nb/pairing/sync`: the panel's Sync action. From the side that changed; when both
changed, 409 with the diff and nothing written unless `keep` names the side to keep; paths confined
to the Jupyter root like the pairing route. `GET /cd4ml-nb/pairing` carries the diff to show."""
from __future__ import annotations

import json

import pytest

from nbfactory import commit_all, digest_tree, init_repo, percent, write_ipynb
from test_routes import call


@pytest.fixture
def jp_root_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = init_repo(tmp_path / "served")
    write_ipynb(root / "nb.ipynb", percent("x = 1", "print(x)"))
    from cd4ml_nb import pairing
    from cd4ml_nb.project import Project

    pairing.pair_notebook(root / "nb.ipynb", Project.discover(root))
    commit_all(root, "paired")
    return root


def _edit_both(root):
    py = root / "nb.py"
    py.write_text(py.read_text().replace("print(x)", "print(x + 1)"))
    nb = json.loads((root / "nb.ipynb").read_text())
    nb["cells"][1]["source"] = "print(x * 2)"
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "kept\n"}]
    nb["cells"][0]["execution_count"] = 1
    (root / "nb.ipynb").write_text(json.dumps(nb, indent=1))


async def test_conflict_shows_the_diff_and_keep_settles_it(jp_fetch, jp_root_dir):
    _edit_both(jp_root_dir)
    code, state = await call(jp_fetch, "pairing", params={"path": "nb.ipynb"})
    assert code == 200 and state["conflict"] and state["in_sync"] is False
    assert "-print(x * 2)" in state["diff"] and "+print(x + 1)" in state["diff"]

    before = digest_tree(jp_root_dir)
    code, refused = await call(jp_fetch, "pairing", "sync", method="POST", body={"path": "nb.ipynb"})
    assert code == 409 and "both changed" in refused["message"] and "+print(x + 1)" in refused["diff"]
    code, bad = await call(jp_fetch, "pairing", "sync", method="POST", body={"path": "nb.ipynb", "keep": "py"})
    assert code == 400 and "keep" in bad["message"]
    assert digest_tree(jp_root_dir) == before, "a refused sync wrote something"

    code, state = await call(jp_fetch, "pairing", "sync", method="POST", body={"path": "nb.ipynb", "keep": "text"})
    assert code == 200, state
    assert state["in_sync"] is True and state["conflict"] is False and state["diff"] is None
    assert state["done"].startswith("updated nb.ipynb from nb.py")
    nb = json.loads((jp_root_dir / "nb.ipynb").read_text())
    assert "".join(nb["cells"][1]["source"]) == "print(x + 1)"
    assert "".join(nb["cells"][0]["outputs"][0]["text"]) == "kept\n"


async def test_keep_ipynb_and_a_plain_sync(jp_fetch, jp_root_dir):
    _edit_both(jp_root_dir)
    code, state = await call(jp_fetch, "pairing", "sync", method="POST", body={"path": "nb.py", "keep": "ipynb"})
    assert code == 200 and state["in_sync"] and state["path"] == "nb.py"
    assert "print(x * 2)" in (jp_root_dir / "nb.py").read_text()
    py = jp_root_dir / "nb.py"  # now only the .py changes: a sync without keep takes it
    py.write_text(py.read_text().replace("print(x * 2)", "print(x * 3)"))
    code, state = await call(jp_fetch, "pairing", params={"path": "nb.ipynb"})
    assert state["newer"] == "text" and not state["conflict"] and "+print(x * 3)" in state["diff"]
    code, state = await call(jp_fetch, "pairing", "sync", method="POST", body={"path": "nb.ipynb"})
    assert code == 200 and state["in_sync"], state
    assert "print(x * 3)" in "".join(json.loads((jp_root_dir / "nb.ipynb").read_text())["cells"][1]["source"])


async def test_sync_is_confined_to_the_root(jp_fetch, jp_root_dir, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text((jp_root_dir / "nb.py").read_text().replace("print(x)", "print('outside')"))
    (jp_root_dir / "nb.py").unlink()
    (jp_root_dir / "nb.py").symlink_to(outside)  # the pair's text side leads out of the root
    before = outside.read_text()
    for path, expected in (("../outside.py", 403), ("nb.ipynb", 403), ("/etc/passwd", 400), ("no.ipynb", 404)):
        code, reply = await call(jp_fetch, "pairing", "sync", method="POST", body={"path": path, "keep": "ipynb"})
        assert code == expected, (path, code, reply)
    assert outside.read_text() == before, "wrote outside the root"
