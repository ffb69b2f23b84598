"""The pytest plugin (entry point ``pytest11``): ``pytest --cd4ml notebooks/``.

Each paired notebook (``.ipynb``; any ``.ipynb`` named on the command line) becomes one test item,
``notebooks/train.ipynb::regression``, that does what ``cd4ml-nb test`` does: run the notebook as a
tracked run tagged ``cd4ml.test=true`` and compare its metrics and the cells tagged ``regression``
with the baseline. A regression or a notebook that cannot be evaluated fails the item with the same
table; ``-k``, ``-x`` and the rest of pytest work as for any test.

pytest loads this module in every session of an environment where cd4ml_nb is installed, so it
imports nothing heavy and collects nothing unless ``--cd4ml`` is given.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cd4ml", "notebook regression tests (cd4ml-nb test)")
    group.addoption("--cd4ml", action="store_true", default=False,
                    help="collect paired notebooks as regression tests against their baselines")
    group.addoption("--cd4ml-seeds", type=int, metavar="K", default=None,
                    help="run K seeds and compare the mean with the baseline's mean ± its spread")
    group.addoption("--cd4ml-baseline", metavar="BRANCH|RUN|FOLDER", default=None,
                    help="default: the committed baseline file, else the base branch's latest FINISHED run")
    group.addoption("--cd4ml-rtol", type=float, metavar="R", default=None, help="relative tolerance")
    group.addoption("--cd4ml-atol", type=float, metavar="A", default=None, help="absolute tolerance")
    group.addoption("--cd4ml-tracking-uri", metavar="URI", default=None, help="MLflow tracking URI")


def _is_paired(path: Path) -> bool:
    """Whether ``path`` is one side of a pair (outside the project's generated folders); a notebook
    that cannot be read is collected, so that its item says why."""
    from . import pairing
    from .exceptions import Cd4mlError
    from .project import Project

    try:
        project = Project.discover(path)
        generated = (project.state_dir, project.lab_runs_dir)
        if any(folder == path.resolve() or folder in path.resolve().parents for folder in generated):
            return False
        return pairing.find_pair(path, project) is not None
    except Cd4mlError:
        return True


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not parent.config.getoption("cd4ml") or file_path.suffix != ".ipynb":
        return None
    if parent.session.isinitpath(file_path) or _is_paired(file_path):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    """A notebook: one regression item."""

    def collect(self):
        yield NotebookItem.from_parent(self, name="regression")


class NotebookRegression(Exception):
    """The notebook regressed or could not be evaluated; carries the outcome for the report."""

    def __init__(self, outcome: Any) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


class NotebookItem(pytest.Item):
    """Run the notebook and compare it with its baseline (``regression.check_notebook``)."""

    def runtest(self) -> None:
        from . import regression
        from .project import Project

        option = self.config.getoption
        project = Project.discover(self.path, tracking_uri=option("cd4ml_tracking_uri"))
        options = regression.CheckOptions(seeds=option("cd4ml_seeds"), rtol=option("cd4ml_rtol"),
                                          atol=option("cd4ml_atol"), baseline=option("cd4ml_baseline"), via="pytest")
        outcome = regression.check_notebook(project, self.path, options,
                                            warn=lambda message: warnings.warn(message, stacklevel=2))
        self.user_properties.append(("cd4ml", outcome.to_json()))
        if outcome.status != regression.PASS:
            raise NotebookRegression(outcome)  # repr_failure prints the table
        self.add_report_section("call", "cd4ml", regression.describe(outcome))  # shown with -rP

    def repr_failure(self, excinfo, style=None):
        from .exceptions import Cd4mlError

        if isinstance(excinfo.value, NotebookRegression):
            from . import regression

            return regression.describe(excinfo.value.outcome)
        if isinstance(excinfo.value, Cd4mlError):
            return f"cd4ml-nb: error: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::regression (cd4ml-nb test)"
