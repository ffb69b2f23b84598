"""Scheduled retraining: the schedules declared in git, when each is due, and the claim that makes
each fire slot run once.

- **Declared in git**: ``[tool.cd4ml_nb.schedules.NAME]`` of the project's ``pyproject.toml`` with
  ``notebook`` (or ``pipeline``), ``branch``, ``cron`` (5 fields, evaluated by ``cronsim``) and
  optional ``timezone`` (IANA, default UTC), ``parameters``, ``notify_url``, ``catch_up``.
- **Slots**: a cron time is a *slot*. A schedule seen for the first time starts counting from then
  (nothing fires for the past). Slots missed while nothing looked fire once (``catch_up =
  "latest"``: the latest of them) or not at all (``"none"``: only a slot at most ``GRACE`` seconds
  old, or one period for a faster cron, fires).
- **Exactly once**: a slot is claimed under a file lock (``.cd4ml/schedules/NAME.lock``) by writing
  it to the schedule's state file before anything runs, after asking the store (``seen``) whether a
  run already carries that slot; a second process, a restart mid-fire or Lab plus a system cron
  then find it claimed.
- **The clock is a parameter** (``now``): nothing here reads the time itself except as a default.

:mod:`.schedule_fire` runs a claimed slot; :mod:`.schedule_loop` looks for due slots in the server.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from . import files, gitinfo
from .config import is_web_url
from .exceptions import ConfigError
from .project import Project

KEYS = ("notebook", "pipeline", "branch", "cron", "timezone", "parameters", "notify_url", "catch_up")
CATCH_UP = ("latest", "none")
GRACE = 300.0  # seconds a slot may be late and still count as on time with catch_up = "none"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SCHEDULE_TAG = "cd4ml.schedule"
SLOT_TAG = "cd4ml.schedule.slot"


@dataclass(frozen=True)
class Schedule:
    """One declared schedule, checked."""

    name: str
    branch: str
    cron: str
    notebook: str | None = None
    pipeline: str | None = None
    timezone: str = "UTC"
    parameters: dict[str, Any] = field(default_factory=dict)
    notify_url: str | None = None
    catch_up: str = "latest"

    @property
    def target(self) -> str:
        """The notebook or pipeline file it runs."""
        return self.notebook or self.pipeline or ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def where(project: Project, name: str) -> str:
    """How messages name a schedule: the file and its table."""
    return f"{project.root / 'pyproject.toml'}: [tool.cd4ml_nb.schedules.{name}]"


def _zone(name: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"timezone {name!r} is not a known IANA time zone ({type(e).__name__})") from None


def check_cron(expr: str) -> None:
    """Refuse anything but a valid 5-field cron expression (ValueError saying why)."""
    from cronsim import CronSim, CronSimError

    if len(expr.split()) != 5:
        raise ValueError(f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as e:
        raise ValueError(f"cron {expr!r}: {e}") from None


def _text(table: dict, key: str, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ValueError(f"'{key}' is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string")
    return value.strip()


def parse(name: str, table: Any) -> Schedule:
    """A schedule from its table; ValueError naming the problem (without the file)."""
    if not NAME_PATTERN.match(name):
        raise ValueError("the name must be letters, digits, '.', '_' or '-' (at most 100)")
    if not isinstance(table, dict):
        raise ValueError("must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(KEYS)})")
    notebook, pipeline = _text(table, "notebook"), _text(table, "pipeline")
    if (notebook is None) == (pipeline is None):
        raise ValueError("give exactly one of 'notebook' and 'pipeline'")
    cron = _text(table, "cron", required=True)
    check_cron(cron)
    zone = _text(table, "timezone") or "UTC"
    _zone(zone)
    parameters = table.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ValueError("'parameters' must be a table of name = value")
    url = _text(table, "notify_url")
    if url is not None and not is_web_url(url):
        raise ValueError(f"notify_url {url!r} must be an http:// or https:// URL")
    catch_up = table.get("catch_up", "latest")
    if catch_up not in CATCH_UP:
        raise ValueError(f"catch_up {catch_up!r}: use \"latest\" or \"none\"")
    return Schedule(name, _text(table, "branch", required=True), cron, notebook, pipeline, zone, dict(parameters),
                    url, catch_up)


def check_git(project: Project, schedule: Schedule) -> None:
    """The branch exists and holds the notebook or pipeline file at its HEAD (ValueError otherwise)."""
    if not project.in_git:
        raise ValueError(f"{project.root} is not a git repository")
    commit = gitinfo.output(project.root, "rev-parse", "--verify", "--quiet", f"refs/heads/{schedule.branch}^{{commit}}")
    if not commit:
        raise ValueError(f"branch {schedule.branch!r} does not exist")
    if not gitinfo.has_file(project.root, commit.strip(), schedule.target):
        what = "notebook" if schedule.notebook else "pipeline"
        raise ValueError(f"{what} {schedule.target!r} is not in branch {schedule.branch!r} at its HEAD")


def load(project: Project, *, git: bool = True) -> tuple[list[Schedule], list[str]]:
    """The project's valid schedules, and one line per invalid one (naming the file and schedule)."""
    found, problems = [], []
    for name, table in sorted(project.config.schedules.items()):
        try:
            schedule = parse(name, table)
            if git:
                check_git(project, schedule)
        except ValueError as e:
            problems.append(f"{where(project, name)}: {e}")
            continue
        found.append(schedule)
    return found, problems


def load_valid(project: Project) -> list[Schedule]:
    """Every schedule, or ConfigError (exit 2) for the first invalid one: nothing starts then."""
    found, problems = load(project)
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
    return found


# --- time ---------------------------------------------------------------------------------------


def utc(moment: datetime | None) -> datetime:
    """``moment`` (default: now) as an aware UTC time; a naive one is taken as UTC."""
    moment = moment or datetime.now(timezone.utc)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def latest_slots(schedule: Schedule, now: datetime, count: int = 2) -> list[datetime]:
    """The last ``count`` slots at or before ``now`` (UTC), newest first."""
    from cronsim import CronSim

    local = utc(now).astimezone(_zone(schedule.timezone))
    slots = CronSim(schedule.cron, local + timedelta(seconds=1), reverse=True)
    found: list[datetime] = []
    for slot in slots:
        if slot <= local:
            found.append(utc(slot))
            if len(found) == count:
                break
    return found


def next_slot(schedule: Schedule, now: datetime) -> datetime:
    """The first slot after ``now`` (UTC)."""
    from cronsim import CronSim

    return utc(next(CronSim(schedule.cron, utc(now).astimezone(_zone(schedule.timezone)))))


def due_slot(schedule: Schedule, after: datetime, now: datetime) -> tuple[datetime | None, datetime | None]:
    """``(slot to fire, latest slot passed)`` for slots in (``after``, ``now``]: the latest one with
    ``catch_up = "latest"``; with ``"none"`` only when it is on time (else it is passed, unfired)."""
    slots = [s for s in latest_slots(schedule, now) if s > after]
    if not slots:
        return None, None
    latest = slots[0]
    if schedule.catch_up == "latest":
        return latest, latest
    period = (next_slot(schedule, latest) - latest).total_seconds()
    on_time = (utc(now) - latest).total_seconds() <= min(GRACE, period)
    return (latest if on_time else None), latest


# --- state and claims ---------------------------------------------------------------------------


def state_dir(project: Project) -> Path:
    """``.cd4ml/schedules``: one state file and one lock file per schedule."""
    folder = project.ensure_state_dir() / "schedules"
    folder.mkdir(exist_ok=True)
    return folder


def read_state(project: Project, name: str) -> dict[str, Any]:
    """What is recorded of a schedule: since, slot, fired_at, run_id, status, verdict, ... ({} when new)."""
    path = project.state_dir / "schedules" / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(project: Project, name: str, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the schedule's state file (atomically); the new state."""
    state = {**read_state(project, name), **changes}
    files.write_atomic(state_dir(project) / f"{name}.json", json.dumps(state, indent=2, default=str))
    return state


def locked(project: Project, name: str):
    """The schedule's file lock, held by one process (and one thread) at a time."""
    return files.locked(state_dir(project) / f"{name}.lock")


def _pending(project: Project, schedule: Schedule, now: datetime) -> tuple[datetime | None, dict[str, Any]]:
    """Under the lock: the slot to fire now, if any; first sight and passed slots are recorded."""
    state = read_state(project, schedule.name)
    after = state.get("slot") or state.get("since")
    if after is None:
        write_state(project, schedule.name, since=utc(now).isoformat())
        return None, state
    slot, passed = due_slot(schedule, datetime.fromisoformat(after), now)
    if slot is None and passed is not None:
        state = write_state(project, schedule.name, slot=passed.isoformat(), status="SKIPPED", run_id=None,
                            verdict="missed (catch_up = none)", fired_at=None)
    return slot, state


def any_due(project: Project, schedules: list[Schedule], now: datetime | None = None) -> list[str]:
    """The names of the schedules with a slot to fire at ``now`` (records first sights)."""
    due = []
    for schedule in schedules:
        with locked(project, schedule.name):
            if _pending(project, schedule, utc(now))[0] is not None:
                due.append(schedule.name)
    return due


def claim(project: Project, schedule: Schedule, now: datetime | None = None,
          seen: Callable[[Schedule, datetime], bool] | None = None) -> datetime | None:
    """Claim the slot due at ``now``: the slot, recorded as fired before anything runs, or None when
    nothing is due or another process (or an earlier run, per ``seen``: the store) has it."""
    with locked(project, schedule.name):
        slot, _ = _pending(project, schedule, utc(now))
        if slot is None:
            return None
        if seen is not None and seen(schedule, slot):
            write_state(project, schedule.name, slot=slot.isoformat())
            return None
        write_state(project, schedule.name, slot=slot.isoformat(), status="RUNNING", run_id=None, verdict=None,
                    fired_at=utc(now).isoformat(), notified=None, error=None,
                    claimed_by=f"{socket.gethostname()}:{os.getpid()}")
        return slot


@dataclass(frozen=True)
class Listing:
    """A schedule as ``schedule list`` shows it: its next fire and its last result."""

    schedule: Schedule
    next_fire: datetime
    state: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        last = {k: self.state.get(k) for k in ("slot", "fired_at", "status", "verdict", "run_id", "notified", "error")}
        return {**self.schedule.to_json(), "next_fire": self.next_fire.isoformat(), "last": last}


def listing(project: Project, now: datetime | None = None) -> tuple[list[Listing], list[str]]:
    """Every valid schedule with its next fire and last result, and the problems of the others."""
    found, problems = load(project)
    return [Listing(s, next_slot(s, utc(now)), read_state(project, s.name)) for s in found], problems
