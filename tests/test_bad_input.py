"""Bad input: exit 2 with one line naming the file and the problem; no kernel, no run, no writes."""
from __future__ import annotations

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, digest_tree, init_repo, percent, write_ipynb


@pytest.fixture
def repo(tmp_path):
    repo = init_repo(tmp_path / "repo")
    write_ipynb(repo / "typed.ipynb", percent("print(alpha, name)", parameters='alpha: float = 0.5\nname: str = "x"'))
    write_ipynb(repo / "plain.ipynb", percent("print(1)"))
    (repo / "truncated.ipynb").write_text('{"cells": [{"cell_type": "code", "sou')
    (repo / "data.csv").write_text("a,b\n1,2\n")
    (repo / "notjson.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (repo / "broken.py").write_text("# ---\n# jupyter:\n#   jupytext:\n#     formats: [ipynb,py:percent\n# ---\n\n# %%\nx = 1\n")
    (repo / "two.py").write_text('# %% tags=["parameters"]\na = 1\n\n# %% tags=["parameters"]\nb = 2\n')
    commit_all(repo)
    return repo


CASES = [
    (["run", "missing.ipynb"], "missing.ipynb: no such file"),
    (["run", "data.csv"], "data.csv: not a notebook"),
    (["run", "truncated.ipynb"], "truncated.ipynb: invalid notebook JSON"),
    (["run", "notjson.ipynb"], "notjson.ipynb: not UTF-8 text"),
    (["run", "broken.py"], "broken.py: cannot read notebook header"),
    (["run", "two.py"], "two.py: 2 cells are tagged 'parameters'"),
    (["run", "typed.ipynb", "-p", "alpha", "abc"], "alpha='abc' does not fit float"),
    (["run", "typed.ipynb", "-p", "nope", "1"], "unknown parameter 'nope'"),
    (["run", "typed.ipynb", "-p", "x=1\nimport os", "1"], "unknown parameter"),
    (["run", "plain.ipynb", "-p", "a", "1"], "has no cell tagged 'parameters'"),
    (["params", "truncated.ipynb"], "truncated.ipynb: invalid notebook JSON"),
    (["pair", "broken.py"], "broken.py: cannot read notebook header"),
    (["run", "typed.ipynb", "-f", "nofile.yaml"], "nofile.yaml: no such parameters file"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(repo, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(repo)
    before = digest_tree(repo)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert fragment in err
    assert digest_tree(repo) == before
    # nothing tracked: no store, no run folder (so no kernel either: the run folder comes first)
    assert not (repo / ".cd4ml").exists()


def test_declared_parameters_are_listed(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["run", "typed.ipynb", "-p", "beta", "1"]) == 2
    assert "Declared parameters: alpha (float, default 0.5), name (str, default 'x')" in capsys.readouterr().err


def test_usage_error_is_exit_2(capsys):
    assert main(["run"]) == 2
    assert main(["frobnicate"]) == 2


def test_unknown_config_key_is_exit_2(repo, monkeypatch, capsys):
    (repo / "pyproject.toml").write_text("[tool.cd4ml_nb]\nformat = 'ipynb,py'\n")
    monkeypatch.chdir(repo)
    assert main(["run", "plain.ipynb"]) == 2
    err = capsys.readouterr().err
    assert "pyproject.toml: unknown key(s) in [tool.cd4ml_nb]: format" in err and "formats" in err


def test_unknown_kernel_is_exit_2(repo, monkeypatch, capsys):
    import json

    nb = json.loads((repo / "plain.ipynb").read_text())
    nb["metadata"]["kernelspec"]["name"] = "no-such-kernel"
    (repo / "k.ipynb").write_text(json.dumps(nb))
    monkeypatch.chdir(repo)
    assert main(["run", "k.ipynb"]) == 2
    assert "kernel 'no-such-kernel' is not installed" in capsys.readouterr().err
