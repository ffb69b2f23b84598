"""Branches over time: list branch experiments, sync their state from git, restore an archived one."""
from __future__ import annotations

import argparse
import json
from datetime import datetime

from . import project_at, say, table


def cmd_branches(args: argparse.Namespace) -> int:
    from .. import branches

    project = project_at(".", args.tracking_uri)
    if args.action == "sync":
        changes = branches.sync(project, branches.SyncOptions(archive_after=args.archive_after, base=args.base))
        if args.json:
            say(json.dumps([c.__dict__ for c in changes], indent=2))
        elif not changes:
            say("branches in sync: nothing changed")
        for c in [] if args.json else changes:
            say(f"{c.experiment}: {c.key} {c.old or '-'} -> {c.new}")
        return 0
    if args.action == "restore":
        if not args.name:
            from ..exceptions import BadInput

            raise BadInput("branches restore: name the branch or experiment to restore")
        say(f"restored experiment '{branches.restore(project, args.name)}'")
        return 0
    found = branches.rows(project)
    if args.json:
        say(json.dumps([r.to_json() for r in found], indent=2))
        return 0
    if not found:
        say("no branch experiments yet")
        return 0

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.6g}"

    table(["BRANCH", "STATE", "RUNS", "METRIC", "LATEST", "BEST", "MERGE COMMIT", "LAST RUN", "EXPERIMENT"],
          [(r.branch, r.state + (" (archived)" if r.archived else ""), r.runs, r.metric or "-", num(r.latest),
            num(r.best), (r.merge_commit or "-")[:10],
            datetime.fromtimestamp(r.last_run).strftime("%Y-%m-%d %H:%M") if r.last_run else "-", r.experiment)
           for r in found])
    return 0


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("branches", cmd_branches, "list branch experiments with their state (active, merged, squash-merged, "
            "deleted); `branches sync` records it from git, `branches restore NAME` brings an archived one back")
    p.add_argument("action", nargs="?", choices=["list", "sync", "restore"], default="list")
    p.add_argument("name", nargs="?", metavar="NAME", help="restore: the branch or experiment")
    p.add_argument("--archive-after", type=float, default=30.0, metavar="DAYS",
                   help="sync: archive a branch deleted unmerged this many days after a sync first saw it "
                   "gone (0: now; default 30)")
    p.add_argument("--base", metavar="BRANCH", help="sync: the branch merges go to (default: the base branch)")
    p.add_argument("--tracking-uri", metavar="URI")
    p.add_argument("--json", action="store_true", help="machine-readable output")
