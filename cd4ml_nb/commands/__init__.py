"""The CLI's commands, one module per group (each declares its subcommands in ``register(add)``),
and what they share: output, the project of the current folder, parameter texts."""
from __future__ import annotations

import sys
from pathlib import Path


def say(message: str = "") -> None:
    """A line of the command's output (stdout)."""
    print(message, flush=True)


def warn(message: str) -> None:
    """A warning on stderr."""
    print(f"cd4ml-nb: warning: {message}", file=sys.stderr, flush=True)


def project_at(start: Path | str = ".", tracking_uri: str | None = None):
    """The project holding ``start`` (its configuration, store and git repository)."""
    from ..project import Project

    return Project.discover(start, tracking_uri=tracking_uri)


def parameter_texts(pairs: list[list[str]] | None) -> dict[str, str]:
    """``-p NAME VALUE`` pairs as a mapping."""
    return {name: value for name, value in (pairs or [])}


def table(header: list[str], rows: list[tuple]) -> None:
    """Print rows as columns under a header."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            say("  ".join("-" * w for w in widths))
