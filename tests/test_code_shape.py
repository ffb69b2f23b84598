"""The package keeps the shape issue #22 set (measured by bench/code_shape.py, which anyone can run):
no broad except that swallows the error, no module over 600 lines, no function over 8 parameters, no
private name used outside its module, no import circle, one module that runs git, a docstring on
every module and on most public functions."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cd4ml_nb

ROOT = Path(__file__).resolve().parent.parent


def shape():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "bench" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.measure(Path(cd4ml_nb.__file__).parent)


def test_the_package_keeps_its_shape():
    measured = shape()
    assert {name: count for name, count in measured.zeros().items() if count} == {}, measured
    assert measured.documented >= 0.6, f"{measured.documented_functions} of {measured.public_functions} documented"
