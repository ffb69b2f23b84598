"""Fire a claimed schedule slot: the branch's HEAD of that moment, in a temporary git work tree
(``git worktree add --detach``, removed afterwards even on failure; never the user's work tree),
tracked in the branch's experiment as ``cd4ml.kind=schedule``; then gate it against the previous
fire of the same schedule and, on a FAILED run or a regression, POST one JSON message to
``notify_url``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from . import gitinfo, history, schedules, tracking
from .compare import MetricDelta, goal_of, parse_tolerance
from .config import load_config
from .exceptions import Cd4mlError
from .project import Project
from .schedules import SCHEDULE_TAG, SLOT_TAG, Schedule

NOTIFY_TIMEOUT = 10.0  # seconds the POST to notify_url may take
OK, REGRESSION, FAILED, NO_BASELINE = "ok", "regression", "failed", "no-baseline"
Warn = Callable[[str], None]


@dataclass(frozen=True)
class FireResult:
    """What one fire did: its run, status, gate verdict and notification."""

    schedule: str
    slot: str
    commit: str | None
    run_id: str | None
    experiment_id: str | None
    status: str  # FINISHED, FAILED or KILLED
    verdict: str  # ok, regression, failed, no-baseline
    detail: str = ""
    link: str | None = None
    notified: str | None = None  # "sent", "not needed", "no notify_url" or why the POST failed

    @property
    def passed(self) -> bool:
        return self.status == "FINISHED" and self.verdict != REGRESSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Ran:
    run_id: str | None
    experiment_id: str | None
    status: str
    error: str = ""


def tags_of(schedule: Schedule, slot: datetime) -> dict[str, str]:
    """The tags every run of a fire carries. A pipeline's parent run keeps its kind (``pipeline``: a
    schedule is what started it, as a command starts others), so it is assessed and listed as one."""
    kind = {} if schedule.pipeline else {history.KIND: history.SCHEDULE}
    return {**kind, SCHEDULE_TAG: schedule.name, SLOT_TAG: slot.isoformat(), tracking.GIT_BRANCH: schedule.branch}


def _filter(schedule: Schedule, more: str = "") -> str:
    return f"tags.`{SCHEDULE_TAG}` = '{schedule.name}'" + (f" and {more}" if more else "")


def _experiment_id(c, project: Project, schedule: Schedule) -> str | None:
    found = c.get_experiment_by_name(tracking.branch_experiment(project, schedule.branch))
    return found.experiment_id if found is not None else None


def in_store(project: Project, schedule: Schedule, slot: datetime) -> bool:
    """Whether a run of ``schedule`` already carries ``slot`` (a fire another host or process made)."""
    c = tracking.run_client(project)
    experiment_id = _experiment_id(c, project, schedule)
    if experiment_id is None:
        return False
    more = f"tags.`{SLOT_TAG}` = '{slot.isoformat()}'"
    return bool(c.search_runs([experiment_id], _filter(schedule, more), max_results=1))


def _tree_project(project: Project, tree: Path) -> Project:
    """The project of the temporary work tree: its own configuration (the branch's), the user's store."""
    config = load_config(tree, tracking_uri=project.tracking_uri, artifact_root=str(project.artifact_root),
                         store_writes=project.config.store_writes)
    return Project(root=tree, config=config, in_git=True)


def _run_notebook(project: Project, schedule: Schedule, slot: datetime, tree: Path, warn: Warn) -> _Ran:
    from .runner import Callbacks, RunOptions, run_notebook

    experiment = tracking.branch_experiment(project, schedule.branch)
    # created here, where the branch is known (the work tree's HEAD is detached), so it is tagged as the branch's
    tracking.ensure_experiment(tracking.run_client(project), project, experiment, schedule.branch)
    options = RunOptions(experiment=experiment, progress=False,
                         extra_tags=tags_of(schedule, slot), output_root=project.ensure_state_dir() / "runs")
    result = run_notebook(tree / schedule.notebook, dict(schedule.parameters), project=_tree_project(project, tree),
                          options=options, callbacks=Callbacks(warn=warn))
    return _Ran(result.run_id, result.experiment_id, result.status, result.error or "")


def _run_pipeline(project: Project, schedule: Schedule, slot: datetime, tree: Path, warn: Warn) -> _Ran:
    """A pipeline runs as ``cd4ml-nb pipeline run`` in the work tree (the branch named as CI names it),
    then its parent run gets the schedule's tags."""
    params = [a for name, value in schedule.parameters.items() for a in ("-p", str(name), str(value))]
    env = {k: v for k, v in os.environ.items() if k not in gitinfo.CI_BRANCH_VARIABLES}
    env[gitinfo.CI_BRANCH_VARIABLES[0]] = schedule.branch
    from .runner import signals_as_interrupts

    child = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "pipeline", "run", "--json", "-f",
                              str(tree / schedule.pipeline), "--tracking-uri", project.tracking_uri, *params],
                             cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with signals_as_interrupts():
            out, err = child.communicate()
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the pipeline ends its runs KILLED, then this fire ends
        child.terminate()
        out, err = child.communicate()
    try:
        result = json.loads(out)
    except ValueError:
        lines = err.strip().splitlines()
        return _Ran(None, None, "FAILED", lines[-1] if lines else f"exit code {child.returncode}")
    c = tracking.run_client(project)
    run_id = result["parent_run_id"]
    for key, value in tags_of(schedule, slot).items():
        c.set_tag(run_id, key, value)
    return _Ran(run_id, c.get_run(run_id).info.experiment_id, result["status"])


def _execute(project: Project, schedule: Schedule, slot: datetime, commit: str, warn: Warn) -> _Ran:
    """Run the target at ``commit`` in a temporary work tree, removed whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=f"cd4ml-schedule-{schedule.name}-"))
    tree = folder / project.root.name  # the same {project} in an experiment_template
    try:
        gitinfo.add_worktree(project.root, tree, commit)
        run = _run_notebook if schedule.notebook else _run_pipeline
        return run(project, schedule, slot, tree, warn)
    except Cd4mlError as e:  # bad parameters, a store that does not answer: the fire failed, nothing ran
        return _Ran(None, None, "FAILED", str(e).splitlines()[0] if str(e) else type(e).__name__)
    finally:
        gitinfo.remove_worktree(project.root, tree)
        shutil.rmtree(folder, ignore_errors=True)


def _rules(project: Project, names: set[str]) -> list[tuple[str, str, float, bool]]:
    """(metric, goal, tolerance, relative): the rules of ``ci_gate``, else the first shared metric."""
    rules = []
    for item in project.config.ci_gate:
        if "metric" in item:
            tolerance, relative = parse_tolerance(str(item.get("max_regression", "0")))
            rules.append((str(item["metric"]), str(item.get("goal", "")), tolerance, relative))
    if not rules and names:
        rules = [(sorted(names)[0], "", 0.0, False)]
    return [(m, goal_of(m, g or project.config.metric_goals.get(m, "")), t, r) for m, g, t, r in rules]


def gate(project: Project, schedule: Schedule, ran: _Ran) -> tuple[str, str]:
    """(verdict, detail) of a fire against the previous FINISHED fire of the same schedule."""
    if ran.status != "FINISHED" or ran.run_id is None:
        return FAILED, ran.error or f"the run ended {ran.status}"
    c = tracking.run_client(project)
    previous = [r for r in c.search_runs([ran.experiment_id], _filter(schedule, "attributes.status = 'FINISHED'"),
                                         max_results=5, order_by=["attributes.start_time DESC"])
                if r.info.run_id != ran.run_id]
    if not previous:
        return NO_BASELINE, "first fire of this schedule"
    before, now = previous[0].data.metrics, c.get_run(ran.run_id).data.metrics
    rules = _rules(project, set(before) & set(now))
    if not rules:
        return NO_BASELINE, f"no metric shared with the previous fire {previous[0].info.run_id[:12]}"
    worse = []
    for metric, goal, tolerance, relative in rules:
        delta = MetricDelta(metric, goal, before.get(metric), now.get(metric))
        allowed = tolerance * abs(delta.base or 0.0) if relative else tolerance
        if delta.regression is None or delta.regression > allowed:
            worse.append(f"{metric} {delta.base} -> {delta.branch} ({goal})")
    against = f"against {previous[0].info.run_id[:12]}"
    return (REGRESSION, f"{'; '.join(worse)} {against}") if worse else (OK, f"{rules[0][0]} held {against}")


def link(project: Project, experiment_id: str | None, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI, when the project knows the UI's URL."""
    ui = project.mlflow_ui_url
    if not ui or not run_id or not experiment_id:
        return None
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def notify(url: str, message: dict[str, Any], timeout: float = NOTIFY_TIMEOUT) -> str:
    """POST ``message`` as JSON to ``url``: "sent", or why not (a failed notification is reported, not fatal)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(message).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return "sent" if response.status < 300 else f"failed: HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return f"failed: HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"failed: {getattr(e, 'reason', e)}"


def fire(project: Project, schedule: Schedule, slot: datetime, warn: Warn) -> FireResult:
    """Run a claimed slot: the branch's HEAD now, in a temporary work tree; gate; notify; record."""
    commit = gitinfo.output(project.root, "rev-parse", "--verify", "--quiet", f"refs/heads/{schedule.branch}^{{commit}}")
    commit = commit.strip() if commit else None
    if commit is None:
        ran = _Ran(None, None, "FAILED", f"branch {schedule.branch!r} no longer exists")
    else:
        ran = _execute(project, schedule, slot, commit, warn)
    verdict, detail = gate(project, schedule, ran)
    url = link(project, ran.experiment_id, ran.run_id)
    notified = "not needed"
    if verdict in (FAILED, REGRESSION):
        notified = "no notify_url"
        if schedule.notify_url:
            notified = notify(schedule.notify_url, {
                "schedule": schedule.name, "run_id": ran.run_id, "status": ran.status, "verdict": verdict,
                "detail": detail, "mlflow_link": url, "branch": schedule.branch, "commit": commit,
                "slot": slot.isoformat()})
            if notified != "sent":
                warn(f"schedule {schedule.name}: the notification to {schedule.notify_url} {notified}")
    result = FireResult(schedule.name, slot.isoformat(), commit, ran.run_id, ran.experiment_id, ran.status, verdict,
                        detail, url, notified)
    schedules.write_state(project, schedule.name, run_id=ran.run_id, status=ran.status, verdict=verdict,
                          detail=detail, commit=commit, notified=notified, error=ran.error or None)
    return result


def run_due(project: Project, now: datetime | None = None, warn: Warn | None = None) -> list[FireResult]:
    """Fire every schedule with a slot due at ``now`` once (each claimed first); bad schedules are
    ConfigError before anything starts."""
    warn = warn or (lambda message: None)
    found = schedules.load_valid(project)
    results = []
    for schedule in found:
        slot = schedules.claim(project, schedule, now, seen=lambda s, t: in_store(project, s, t))
        if slot is not None:
            results.append(fire(project, schedule, slot, warn))
    return results

