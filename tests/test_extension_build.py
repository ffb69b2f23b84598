"""The installed package is whole: server extension enabled and the prebuilt labextension found.

These run the same checks as ``.ci/run`` and JupyterLab's own extension listing, against the
*installed* cd4ml_nb (``pip install .``), from a folder outside the source tree.
"""
from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

try:
    INSTALLED_VERSION = importlib.metadata.version("cd4ml_nb")
except importlib.metadata.PackageNotFoundError:
    pytestmark = pytest.mark.skip(
        reason="cd4ml_nb is not installed as a package (run `pip install .` first)"
    )
    INSTALLED_VERSION = None


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _run(module: str, *args: str, cwd: Path) -> str:
    """Output of ``python -m <module> <args>`` (stdout and stderr, colours removed).

    ``jupyter_server`` and ``jupyterlab.labextensions`` are what ``jupyter server`` and
    ``jupyter labextension`` run; calling them as modules pins this interpreter.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return ANSI_ESCAPE.sub("", done.stdout + done.stderr)


def test_server_extension_enabled_and_ok(tmp_path: Path) -> None:
    out = _run("jupyter_server", "extension", "list", cwd=tmp_path)
    assert re.search(r"cd4ml_nb\s+enabled", out), out
    assert re.search(r"cd4ml_nb\b.*\bOK\b", out), out


def test_labextension_enabled_and_ok(tmp_path: Path) -> None:
    out = _run("jupyterlab.labextensions", "list", cwd=tmp_path)
    assert re.search(r"cd4ml-nb\b.*\benabled\b.*\bOK\b", out), out


def test_labextension_is_prebuilt_in_the_data_files() -> None:
    from jupyter_core.paths import jupyter_path

    found = [Path(p) / "cd4ml-nb" for p in jupyter_path("labextensions")]
    found = [p for p in found if (p / "package.json").is_file()]
    assert found, "no cd4ml-nb/package.json under any Jupyter labextensions path"
    target = found[0]
    meta = json.loads((target / "package.json").read_text(encoding="utf-8"))
    assert meta["name"] == "cd4ml-nb"
    # hatch-nodejs-version makes the Python version the npm one: a mismatch means a stale build.
    assert Version(meta["version"]) == Version(INSTALLED_VERSION), (meta["version"], INSTALLED_VERSION)
    build = meta["jupyterlab"].get("_build")
    assert build, "labextension package.json has no jupyterlab._build: not a prebuilt extension"
    assert (target / build["load"]).is_file(), f"{build['load']} missing in {target}"
    assert (target / "static" / "style.js").is_file()
    assert (target / "install.json").is_file()
