"""Pairing commands: pair, sync, check, the git merge driver, and a notebook's parameters."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..exceptions import BadInput, PairConflict
from . import project_at, say, table, warn

def cmd_pair(args: argparse.Namespace) -> int:
    from .. import pairing

    status = 0
    for raw in args.paths:
        path = Path(raw)
        project = project_at(path)
        try:
            pair, done = pairing.pair_notebook(path.resolve(), project)
        except PairConflict as e:
            print(f"cd4ml-nb: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        say(f"{project.relative(pair.ipynb)} <-> {project.relative(pair.text)} ({pair.formats}): {done}")
    return status


def cmd_sync(args: argparse.Namespace) -> int:
    from .. import pairing

    status = 0
    for raw in args.paths:
        path = Path(raw).resolve()
        project = project_at(path)
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
            say(f"{project.relative(pair.ipynb)} <-> {project.relative(pair.text)}: {done}")
    return status


def cmd_check(args: argparse.Namespace) -> int:
    from .. import pairing

    project = project_at(args.paths[0] if args.paths else ".")
    roots = [Path(p) for p in args.paths] or [project.root]
    states = [pairing.compare(pair, project) for pair in pairing.discover_pairs(roots, project)]
    bad = [s for s in states if not s.in_sync]
    if args.json:
        say(json.dumps({"pairs": [s.to_json(project) for s in states], "out_of_sync": len(bad)}, indent=2))
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
        say(f"OUT OF SYNC  {ipynb} <-> {text}: {what}")
    if bad:
        say(f"{len(bad)} of {len(states)} pair(s) out of sync; run `cd4ml-nb sync PATH` to reconcile")
        return 1
    say(f"{len(states)} pair(s) in sync")
    return 0


def cmd_merge_driver(args: argparse.Namespace) -> int:
    from .. import merge

    if args.action == "install":
        if args.files:
            raise BadInput("merge-driver install takes no file arguments")
        changed = merge.install(Path.cwd(), global_=args.global_)
        where = "globally" if args.global_ else "in this repository"
        say(f"merge driver for *.ipynb installed {where}: " + (", ".join(changed) if changed else "already installed"))
        return 0
    if args.global_ or len(args.files) not in (4, 5):
        raise BadInput("merge-driver run takes BASE OURS THEIRS [MARKER_SIZE] PATH (git passes %O %A %B %L %P)")
    base, ours, theirs, *rest = args.files
    marker_size = int(rest[0]) if len(rest) == 2 and rest[0].isdigit() else 7
    result = merge.run(Path(base), Path(ours), Path(theirs), rest[-1], marker_size, warn=warn)
    return result.exit_code


def cmd_params(args: argparse.Namespace) -> int:
    from .. import notebooks, params

    nb = notebooks.read(args.notebook)
    contract = params.read_contract(nb.node, nb.path)
    if args.json:
        say(json.dumps(contract.to_json(), indent=2, default=str))
        return 0
    if contract.cell_index is None:
        say(f"{args.notebook}: no cell tagged 'parameters' (the notebook takes no parameters)")
        return 0
    rows = [(p.name, p.type + (" | None" if p.nullable and p.type != "any" else ""),
             p.expression if p.expression is not None else repr(p.default), p.help) for p in contract.parameters]
    table(["name", "type", "default", "help"], rows)
    for note in contract.notes:
        warn(f"{args.notebook}: parameters cell (cell {contract.cell_index}), {note}; the other lines are used")
    return 0


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("pair", cmd_pair, "pair notebooks with .py percent scripts, creating the missing side")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("sync", cmd_sync, "bring pairs in sync; refuse with a diff when both sides changed")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("check", cmd_check, "report pairs whose inputs differ (exit 1); writes nothing")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the repository)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("merge-driver", cmd_merge_driver, "git merge driver for paired .ipynb: `install` once per clone "
            "(--global: for every repository); git calls `run`")
    p.add_argument("action", choices=["install", "run"])
    p.add_argument("files", nargs="*", metavar="FILE", help="run: %%O %%A %%B %%L %%P, as git passes them")
    p.add_argument("--global", dest="global_", action="store_true", help="install: ~/.gitconfig and the "
                   "global attributes file")

    p = add("params", cmd_params, "show a notebook's parameter contract (cell tagged 'parameters')")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--json", action="store_true", help="machine-readable output")

