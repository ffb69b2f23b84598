"""Scheduled retraining: ``schedule list`` (next fire, last result) and ``schedule run-due`` (fire
what is due once, for a system cron or CI)."""
from __future__ import annotations

import argparse
import json
import sys

from . import project_at, say, table, warn


def cmd_schedule_list(args: argparse.Namespace) -> int:
    from .. import schedules

    project = project_at(".", args.tracking_uri)
    found, problems = schedules.listing(project)
    if args.json:
        say(json.dumps({"schedules": [item.to_json() for item in found], "problems": problems}, indent=2))
        return 2 if problems else 0
    rows = []
    for item in found:
        s, last = item.schedule, item.state
        result = f"{last.get('status')} {last.get('verdict') or ''}".strip() if last.get("status") else "never fired"
        rows.append((s.name, s.branch, s.target, f"{s.cron} ({s.timezone})", item.next_fire.isoformat(timespec="minutes"),
                     result, (last.get("run_id") or "-")[:12]))
    if rows:
        table(["schedule", "branch", "runs", "cron", "next fire (UTC)", "last result", "run"], rows)
    elif not problems:
        say("no schedules: declare them in [tool.cd4ml_nb.schedules.NAME] of pyproject.toml")
    for problem in problems:
        print(f"cd4ml-nb: error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def cmd_schedule_run_due(args: argparse.Namespace) -> int:
    from .. import schedule_fire

    project = project_at(".", args.tracking_uri)
    results = schedule_fire.run_due(project, warn=warn)
    if args.json:
        say(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for r in results:
            say(f"{r.schedule}: slot {r.slot}: run {(r.run_id or '-')[:12]} {r.status}, {r.verdict}"
                f"{': ' + r.detail if r.detail else ''} (commit {(r.commit or '-')[:12]}; notification: {r.notified})")
        if not results:
            say("no schedule due")
    return 0 if all(r.passed for r in results) else 1


def register(add) -> None:
    """Declare this module's subcommands."""
    p = add("schedule", lambda args: args.schedule_func(args),
            "scheduled retraining: [tool.cd4ml_nb.schedules.NAME] run a branch's HEAD on a cron")
    sub = p.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    listed = sub.add_parser("list", help="each schedule's next fire and last result",
                            description="Each schedule's next fire and last result; exit 2 when one is invalid.")
    listed.set_defaults(schedule_func=cmd_schedule_list)
    due = sub.add_parser("run-due", help="fire the due schedules once (for a system cron or CI)",
                         description="Fire each schedule with a due slot once: the branch's HEAD in a temporary "
                         "git work tree, tracked as cd4ml.kind=schedule in the branch's experiment, gated against the "
                         "previous fire; exit 1 when a fire FAILED or regressed, 2 when a schedule is invalid.")
    due.set_defaults(schedule_func=cmd_schedule_run_due)
    for q in (listed, due):
        q.add_argument("--tracking-uri", metavar="URI")
        q.add_argument("--json", action="store_true", help="machine-readable output")
