"""Command-line adapter: ``cd4ml-nb`` (argparse over the core; ``main(argv) -> exit code``).

Exit codes: 0 success, 1 a check or run failed, 2 bad input or usage, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .exceptions import BadInput, Cd4mlError, PairConflict

EPILOG = """\
exit codes: 0 ok, 1 a check or run failed, 2 bad input, 130 interrupted.
Runs go to MLflow, one experiment per git branch; the embedded store is .cd4ml/mlflow.db.
"""


def _say(message: str = "") -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(f"cd4ml-nb: warning: {message}", file=sys.stderr, flush=True)


def _project(start: Path | str = ".", tracking_uri: str | None = None):
    from .project import Project

    return Project.discover(start, tracking_uri=tracking_uri)


# --- pairing ----------------------------------------------------------------------------------


def cmd_pair(args: argparse.Namespace) -> int:
    from . import pairing

    status = 0
    for raw in args.paths:
        path = Path(raw)
        project = _project(path)
        try:
            pair, done = pairing.pair_notebook(path.resolve(), project)
        except PairConflict as e:
            print(f"cd4ml-nb: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        _say(f"{project.relative(pair.ipynb)} <-> {project.relative(pair.text)} ({pair.formats}): {done}")
    return status


def cmd_sync(args: argparse.Namespace) -> int:
    from . import pairing

    status = 0
    for raw in args.paths:
        path = Path(raw).resolve()
        project = _project(path)
        pairs = pairing.discover_pairs([path], project)
        if path.is_file() and not pairs:
            raise BadInput(f"{raw}: not paired; pair it first with `cd4ml-nb pair {raw}`")
        for pair in pairs:
            try:
                done = pairing.sync_pair(pair, project)
            except PairConflict as e:
                print(f"cd4ml-nb: {e}\n{e.diff}", file=sys.stderr)
                status = 1
                continue
            _say(f"{project.relative(pair.ipynb)} <-> {project.relative(pair.text)}: {done}")
    return status


def cmd_check(args: argparse.Namespace) -> int:
    from . import pairing

    project = _project(args.paths[0] if args.paths else ".")
    roots = [Path(p) for p in args.paths] or [project.root]
    states = [pairing.compare(pair, project) for pair in pairing.discover_pairs(roots, project)]
    bad = [s for s in states if not s.in_sync]
    if args.json:
        _say(json.dumps({"pairs": [s.to_json(project) for s in states], "out_of_sync": len(bad)}, indent=2))
        return 1 if bad else 0
    for s in bad:
        ipynb, text = project.relative(s.pair.ipynb), project.relative(s.pair.text)
        if s.missing:
            what = f"{ipynb if s.missing == 'ipynb' else text} is missing"
        elif s.conflict:
            what = f"both sides changed since {s.basis}"
        else:
            newer = ipynb if s.newer == "ipynb" else text
            what = f"inputs differ; {newer} looks newer (compared with {s.basis})"
        _say(f"OUT OF SYNC  {ipynb} <-> {text}: {what}")
    if bad:
        _say(f"{len(bad)} of {len(states)} pair(s) out of sync; run `cd4ml-nb sync PATH` to reconcile")
        return 1
    _say(f"{len(states)} pair(s) in sync")
    return 0


# --- parameters and runs ----------------------------------------------------------------------


def cmd_params(args: argparse.Namespace) -> int:
    from . import notebooks, params

    nb = notebooks.read(Path(args.notebook))
    contract = params.read_contract(nb.node, nb.path)
    if args.json:
        _say(json.dumps(contract.to_json(), indent=2, default=str))
        return 0
    if contract.cell_index is None:
        _say(f"{args.notebook}: no cell tagged 'parameters' (the notebook takes no parameters)")
        return 0
    rows = [(p.name, p.type + (" | None" if p.nullable and p.type != "any" else ""),
             p.expression if p.expression is not None else repr(p.default), p.help) for p in contract.parameters]
    _table(["name", "type", "default", "help"], rows)
    return 0


def _collect_texts(pairs: list[list[str]] | None) -> dict[str, str]:
    return {name: value for name, value in (pairs or [])}


def cmd_run(args: argparse.Namespace) -> int:
    from . import params as params_mod
    from .runner import run_notebook

    values = params_mod.load_values_file(Path(args.file)) if args.file else None
    result = run_notebook(
        args.notebook,
        values,
        parameter_texts=_collect_texts(args.param),
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        timeout=args.timeout,
        html=False if args.no_html else None,
        progress=not args.quiet,
        warn=_warn,
    )
    if args.json:
        _say(json.dumps(result.to_json(), indent=2, default=str))
        return result.exit_code
    mark = {"FINISHED": "finished", "FAILED": "FAILED", "KILLED": "KILLED"}[result.status]
    _say(f"run {result.run_id} {mark} in experiment '{result.experiment}' ({result.tracking_uri})")
    if result.error:
        _say(f"reason: {result.reason}: {result.error}")
    if result.metrics:
        _say("metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.metrics.items())))
    else:
        _say("metrics: none logged (call mlflow.log_metric(...) in the notebook)")
    if result.parameters:
        _say("parameters: " + ", ".join(f"{k}={v!r}" for k, v in result.parameters.items()))
    if result.executed:
        _say(f"executed notebook: {result.executed}")
    if result.html:
        _say(f"html: {result.html}")
    _say("next: `cd4ml-nb runs` lists this branch's runs; `cd4ml-nb ui` opens the MLflow UI")
    return result.exit_code


def cmd_runs(args: argparse.Namespace) -> int:
    from . import tracking

    project = _project(".", args.tracking_uri)
    experiment = tracking.branch_experiment(project, args.branch)
    notebook = project.relative(Path(args.notebook)) if args.notebook else None
    tracking.reconcile_orphans(project, experiment)
    runs = tracking.runs_page(project, experiment, notebook, args.limit).runs
    if args.json:
        from dataclasses import asdict

        _say(json.dumps({"experiment": experiment, "runs": [asdict(r) for r in runs]}, indent=2))
        return 0
    if not runs:
        _say(f"no runs in experiment '{experiment}' yet; start one with `cd4ml-nb run NOTEBOOK`")
        return 0
    _say(f"experiment '{experiment}' ({project.tracking_uri}), newest first:")
    rows = []
    for r in runs:
        started = datetime.fromtimestamp(r.start_time).strftime("%Y-%m-%d %H:%M:%S") if r.start_time else "-"
        rows.append((started, r.status, r.run_id[:12], r.notebook or "-",
                     " ".join(f"{k}={v}" for k, v in sorted(r.params.items())),
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items()))))
    _table(["started", "status", "run", "notebook", "params", "metrics"], rows)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess
    import webbrowser

    project = _project(".", args.tracking_uri)
    if not project.tracking_uri.startswith("sqlite:"):
        _say(f"the tracking server has its own UI: {project.mlflow_ui_url or project.tracking_uri}")
        return 0
    from . import tracking

    tracking.client(project)  # create the store first, under the lock
    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", project.tracking_uri,
               "--default-artifact-root", project.artifact_root.as_uri(), "--host", "127.0.0.1",
               "--port", str(args.port)]
    _say(f"MLflow UI on {project.tracking_uri}: {url} (Ctrl-C to stop)")
    server = subprocess.Popen(command)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
        return 0


# --- plumbing ---------------------------------------------------------------------------------


def _table(header: list[str], rows: list[tuple]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        _say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            _say("  ".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
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

    p = add("pair", cmd_pair, "pair notebooks with .py percent scripts, creating the missing side")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("sync", cmd_sync, "bring pairs in sync; refuse with a diff when both sides changed")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("check", cmd_check, "report pairs whose inputs differ (exit 1); writes nothing")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the repository)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("params", cmd_params, "show a notebook's parameter contract (cell tagged 'parameters')")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("run", cmd_run, "execute a notebook with Papermill as a tracked MLflow run")
    p.add_argument("notebook", metavar="NOTEBOOK", help=".ipynb or its paired .py")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter value, coerced to the declared type (repeatable)")
    p.add_argument("-f", "--file", metavar="PARAMS.yaml", help="parameter values from a YAML/JSON file")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: embedded store)")
    p.add_argument("--experiment", metavar="NAME", help="experiment name (default: the git branch)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="seconds each cell may run")
    p.add_argument("--no-html", action="store_true", help="do not render and log an HTML copy")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("runs", cmd_runs, "list this branch's runs, newest first")
    p.add_argument("--branch", metavar="B", help="another branch's experiment")
    p.add_argument("--notebook", metavar="PATH", help="only runs of this notebook")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("ui", cmd_ui, "open the MLflow UI on the project's store (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--tracking-uri", metavar="URI")
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
        print(f"cd4ml-nb: error: {e}", file=sys.stderr)
        if isinstance(e, PairConflict) and e.diff:
            print(e.diff, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cd4ml-nb: interrupted", file=sys.stderr)
        return 130


def main_entry() -> None:
    """Console script: exit without tearing down the heavy modules (about a second)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_entry()
