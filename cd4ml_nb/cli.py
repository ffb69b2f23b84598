"""Command-line adapter: ``cd4ml-nb`` (argparse over the core; ``main(argv) -> exit code``); the
commands live in :mod:`.commands`, one module per group.

Exit codes: 0 success, 1 a check or run failed, 2 bad input or usage, 130 interrupted (``ci`` adds
3–7 for the step that failed).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from . import __version__
from .commands import assess, branches, ci, pairs, pipeline, runs, schedule, serve
from .exceptions import Cd4mlError, PairConflict
from .team_server import access_denied

EPILOG = """\
exit codes: 0 ok, 1 a check or run failed, 2 bad input, 130 interrupted; `ci` names the step that
failed: 3 pairs out of sync, 4 a smoke run failed, 5 a regression (or nbval), 6 the gate failed,
7 the regression test or the gate cannot be evaluated.
Runs go to MLflow, one experiment per git branch; the embedded store is .cd4ml/mlflow.db.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``cd4ml-nb`` parser: every command group registers its subcommands."""
    parser = argparse.ArgumentParser(
        prog="cd4ml-nb",
        description="Pair, run and track notebooks per git branch (Continuous Delivery for ML).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cd4ml-nb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    for group in (pairs, runs, pipeline, assess, ci, serve, branches, schedule):
        group.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(e.code or 0)
    try:
        return args.func(args)
    except Cd4mlError as e:
        e = access_denied(e) or e  # a 401/403 wrapped in a TrackingError is still the credentials
        print(f"cd4ml-nb: error: {e}", file=sys.stderr)
        if isinstance(e, PairConflict) and e.diff:
            print(e.diff, file=sys.stderr)
        return e.exit_code
    except Exception as e:  # MLflow's 401/403 from a team server: one line, exit 2; anything else raises
        denied = access_denied(e)
        if denied is None:
            raise
        print(f"cd4ml-nb: error: {denied}", file=sys.stderr)
        return denied.exit_code
    except KeyboardInterrupt:
        print("cd4ml-nb: interrupted", file=sys.stderr)
        return 130


def main_entry() -> None:
    """Console script: exit without tearing down the heavy modules (about a second)."""
    from .notebooks import skip_iri_grammar

    skip_iri_grammar()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_entry()
