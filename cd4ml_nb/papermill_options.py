"""papermill's own options, with papermill's meanings, as ``cd4ml-nb run`` takes them (``OUT``, ``-r``,
``-y``, ``-b``, ``-f``, ``-k``, ``--cwd``, ``--inject-paths``, ...); :mod:`papermill_door` and
:mod:`runner` apply them."""
from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files, params
from .exceptions import BadInput


@dataclass(frozen=True)
class PapermillOptions:
    """papermill's own options, with papermill's meanings, for ``cd4ml-nb run``."""

    output_path: str | None = None  # OUT: the executed copy is also written here ("-": standard output)
    kernel: str | None = None  # -k
    cwd: str | None = None  # the kernel's working directory
    log_output: bool = False
    stdout_file: Any = None  # an open file the cells' standard output is also written to
    stderr_file: Any = None
    report_mode: bool = False  # input cells hidden
    start_timeout: float | None = None  # seconds the kernel may take to start (default: kernel_start_timeout)
    autosave_cell_every: int = 30
    inject_input_path: bool = False  # PAPERMILL_INPUT_PATH as a parameter
    inject_output_path: bool = False  # PAPERMILL_OUTPUT_PATH as a parameter

    def builtin_parameters(self, input_path: str, output_path: str) -> dict[str, str]:
        """The parameters ``--inject-*-path`` add, outside the notebook's contract (as papermill does)."""
        found = {}
        if self.inject_input_path:
            found["PAPERMILL_INPUT_PATH"] = input_path
        if self.inject_output_path:
            found["PAPERMILL_OUTPUT_PATH"] = output_path
        return found

    def engine_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``papermill.execute_notebook`` these options set."""
        return {"log_output": self.log_output, "stdout_file": self.stdout_file, "stderr_file": self.stderr_file,
                "report_mode": self.report_mode, "autosave_cell_every": self.autosave_cell_every}

    def write_output(self, executed: Path) -> None:
        """Copy the executed notebook (kept in the run's folder) to OUT."""
        if not self.output_path or not executed.exists():
            return
        text = executed.read_text(encoding="utf-8")
        if self.output_path == "-":
            sys.stdout.write(text)
        else:
            files.write_atomic(Path(self.output_path), text)


def _yaml(text: str | bytes, where: str) -> dict[str, Any]:
    """A YAML mapping as papermill reads it (dates stay text)."""
    import yaml

    try:
        from papermill.cli import NoDatesSafeLoader as loader
    except ImportError:  # an older papermill: the plain safe loader
        loader = yaml.SafeLoader
    try:
        value = yaml.load(text, Loader=loader) or {}
    except yaml.YAMLError as e:
        raise BadInput(f"{where}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise BadInput(f"{where}: expected a mapping of parameter names to values")
    return value


def given_values(file: str | None, yamls: list[str] | None, base64s: list[str] | None,
                 raws: list[list[str]] | None) -> dict[str, Any] | None:
    """Typed values from papermill's ``-f``, ``-y``, ``-b`` and ``-r`` (a raw value stays text), in
    papermill's order; None when none is given."""
    values: dict[str, Any] = {}
    for text in base64s or []:
        try:
            decoded = base64.b64decode(text, validate=True)
        except ValueError:
            raise BadInput(f"-b {text[:40]!r}: not base64") from None
        values.update(_yaml(decoded, "-b"))
    if file:
        values.update(params.load_values_file(Path(file)))
    for text in yamls or []:
        values.update(_yaml(text, "-y"))
    for name, text in raws or []:
        values[name] = text
    return values or None
