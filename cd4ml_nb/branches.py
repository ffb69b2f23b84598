"""Branches over time: which experiment a branch's runs go to, and what became of each branch.

- **One experiment per branch line.** A branch's runs go to the experiment its name gives
  (``experiment_template``, ``{branch}`` by default) while that experiment is *live*: not archived,
  not recorded merged or deleted, and its recorded fork commit (``cd4ml.branch.fork``, the
  merge-base with the base branch when it was created) still an ancestor of the branch. Otherwise —
  a name reused after its experiment was archived or merged, or a branch recreated from another
  point — the runs go to ``NAME@<short fork commit>``. :func:`.lines.experiment_for` is the one place
  this is decided; runs, sweeps, pipelines, ``runs``, ``compare``, the gate and the Lab ask it.
- **Sync** (:func:`sync`) records on each branch experiment ``cd4ml.branch.state`` (``active``,
  ``merged``, ``squash-merged``, ``deleted``), ``cd4ml.merged_into`` and ``cd4ml.merge_commit``:
  merged when the last run's commit is reachable from the base; squash-merged when the patch id of
  the branch's whole change since its fork, or of every one of its commits, equals that of a base
  commit since the fork; deleted when its branch is gone (or now names another line) unmerged, and
  then archived (MLflow experiment deletion) once ``archive_after`` days have passed since a sync
  first saw it deleted. Setting a tag only when its value differs makes a second sync change nothing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from . import gitinfo
from .exceptions import BadInput, NoStore
from .lines import (ACTIVE, BRANCH, DAY, DELETED, DELETED_AT, DONE, FORK, GIT_BRANCH, GIT_COMMIT, MERGE_COMMIT,
                    MERGED, MERGED_INTO, RESTORED, SQUASHED, STATE, current, experiment_for, template_name)
from .project import Project

# --- what became of a branch ----------------------------------------------------------------------


def branch_of(project: Project, found) -> str | None:
    """The branch an experiment belongs to: its ``cd4ml.branch`` tag, else read back from the
    template (None for MLflow's ``Default`` and experiments the template does not name)."""
    tags = found.tags or {}
    if tags.get(BRANCH):
        return tags[BRANCH]
    if found.name == "Default" and str(found.experiment_id) == "0":
        return None
    prefix, _, suffix = template_name(project, "\0").partition("\0")
    name = found.name
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        return name[len(prefix): len(name) - len(suffix)]
    return None


def owned(found, branch: str, runs: list) -> bool:
    """Whether an experiment is ``branch``'s: tagged so, or holding a run recorded on that branch
    (an experiment named by hand, ``run --experiment NAME``, is not a branch's and sync leaves it)."""
    return bool((found.tags or {}).get(BRANCH)) or any(r.data.tags.get(GIT_BRANCH) == branch for r in runs)


def merge_commit(root, tip: str, base: str) -> str:
    """The base commit that brought ``tip`` in: the oldest first-parent commit of ``base`` that
    descends from it, or ``tip`` itself when it lies on that line (a fast-forward)."""
    line = (gitinfo.output(root, "rev-list", "--first-parent", "--ancestry-path", f"{tip}..{base}") or "").split()
    if not line:
        return tip
    parents = (gitinfo.output(root, "rev-list", "--parents", "-n", "1", line[-1]) or "").split()
    return tip if parents[1:2] == [tip] else line[-1]


def squash_commit(root, head: str, base: str) -> str | None:
    """The base commit carrying ``head``'s changes since its fork by patch identity: one commit with
    the patch id of the whole change (a squash merge), or, when every branch commit has its twin on
    the base (a rebase merge), the twin of the newest; None when neither."""
    start = gitinfo.fork_point(root, head, base)
    if not start or start == head:
        return None
    ours = dict(gitinfo.patch_ids(root, gitinfo.output(root, "log", "-p", "--no-merges", f"{start}..{head}") or ""))
    theirs = {pid: commit for pid, commit in
              gitinfo.patch_ids(root, gitinfo.output(root, "log", "-p", "--no-merges", f"{start}..{base}") or "")}
    whole = gitinfo.patch_ids(root, gitinfo.output(root, "diff", start, head) or "")
    if whole and whole[0][0] in theirs:
        return theirs[whole[0][0]]
    newest = next(iter(gitinfo.patch_ids(root, gitinfo.output(root, "log", "-p", "-1", head) or "")), None)
    if ours and all(pid in theirs for pid in ours) and newest:
        return theirs.get(newest[0])
    return None


def merged(project: Project, tags: dict, tip: str | None, head: str | None, base: str) -> tuple[str, str] | None:
    """(state, merge commit) when the branch reached ``base``; None while it has not. ``tip`` is the
    last run's commit, ``head`` the branch's commit (or ``tip`` when the branch is gone)."""
    root, fork = project.root, tags.get(FORK)
    if tip and tip != fork and gitinfo.is_ancestor(root, tip, base):
        return MERGED, merge_commit(root, tip, base)
    for commit in dict.fromkeys(c for c in (head, tip) if c):
        found = squash_commit(root, commit, base)
        if found:
            return SQUASHED, found
    return None


@dataclass(frozen=True)
class SyncOptions:
    archive_after: float = 30.0  # days
    base: str | None = None
    now: float | None = None  # seconds since the epoch (tests)


@dataclass(frozen=True)
class Change:
    experiment: str
    key: str
    old: str | None
    new: str | None


def all_experiments(c) -> list:
    """Every experiment, archived ones too."""
    from .sqlite_client import ViewType

    found: list = []
    token = None
    while True:
        page = c.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        found += list(page)
        token = (page.token.decode() if isinstance(page.token, bytes) else page.token) or None
        if token is None:
            return found


def all_runs(c, experiment_id: str) -> list:
    """An experiment's runs (archived ones too), newest first."""
    from .sqlite_client import ViewType

    runs: list = []
    token = None
    while True:
        page = c.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                             order_by=["attributes.start_time DESC"], page_token=token)
        runs += list(page)
        token = (page.token.decode() if isinstance(page.token, bytes) else page.token) or None
        if token is None:
            return runs


def sync(project: Project, options: SyncOptions = SyncOptions()) -> list[Change]:
    """Record each branch experiment's state; archive those deleted unmerged past the grace period.
    Returns what changed (nothing on a second sync)."""
    if not project.in_git:
        raise BadInput(f"{project.root}: not in a git repository: no branches to sync")
    base = options.base or project.base_branch
    if gitinfo.commit_of(project.root, base) is None:
        raise BadInput(f"{project.root}: base branch {base!r} does not exist")
    if options.archive_after < 0:
        raise BadInput(f"--archive-after {options.archive_after:g}: give 0 or more days")
    from . import tracking

    try:
        c = tracking.client(project, create=False)
    except NoStore:
        return []
    now = time.time() if options.now is None else options.now
    changes: list[Change] = []
    for found in all_experiments(c):
        branch = branch_of(project, found)
        if branch is not None and branch != base:
            changes += sync_one(c, project, found, branch, (base, options.archive_after, now))
    return changes


def sync_one(c, project: Project, found, branch: str, how: tuple[str, float, float]) -> list[Change]:
    base, days, now = how
    tags, changes = dict(found.tags or {}), []

    def put(key: str, value: str) -> None:
        if tags.get(key) != value:
            c.set_experiment_tag(found.experiment_id, key, value)
            changes.append(Change(found.name, key, tags.get(key), value))
            tags[key] = value

    runs = all_runs(c, found.experiment_id)
    if not owned(found, branch, runs):
        return changes
    put(BRANCH, branch)
    state = tags.get(STATE, ACTIVE)
    if state in DONE or found.lifecycle_stage != "active":
        return changes
    root = project.root
    tip = next((r.data.tags[GIT_COMMIT] for r in runs if r.data.tags.get(GIT_COMMIT)), None)
    here = gitinfo.branch_exists(root, branch) and experiment_for(project, branch, c) == found.name
    head = gitinfo.commit_of(root, f"refs/heads/{branch}") if here else tip
    done = merged(project, tags, tip, head, base) if state == ACTIVE else None
    if done:
        put(STATE, done[0])
        put(MERGED_INTO, base)
        put(MERGE_COMMIT, done[1])
        return changes
    if here:
        put(STATE, ACTIVE)
        return changes
    put(STATE, DELETED)
    put(DELETED_AT, tags.get(DELETED_AT) or stamp(now))
    since = seconds(tags[DELETED_AT]) or now
    if not tags.get(RESTORED) and now - since >= days * DAY:
        c.delete_experiment(found.experiment_id)
        changes.append(Change(found.name, "lifecycle", "active", "deleted"))
    return changes


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")


def seconds(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def restore(project: Project, name: str) -> str:
    """Bring back an archived branch experiment (named, or the newest archived one of branch
    ``name``); sync archives it no more. Returns its name."""
    from . import tracking

    c = tracking.client(project, create=False)
    found = c.get_experiment_by_name(name)
    if found is None or found.lifecycle_stage != "deleted":
        gone = [e for e in all_experiments(c) if e.lifecycle_stage == "deleted" and branch_of(project, e) == name]
        found = max(gone, key=lambda e: e.creation_time or 0) if gone else None
    if found is None:
        raise BadInput(f"{project.root}: no archived experiment of branch {name!r} "
                       "(`cd4ml-nb branches` lists them)")
    c.restore_experiment(found.experiment_id)
    c.set_experiment_tag(found.experiment_id, RESTORED, stamp(time.time()))
    return found.name


# --- the list -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchRow:
    """One branch experiment, as ``cd4ml-nb branches`` lists it."""

    branch: str
    experiment: str
    state: str
    archived: bool
    runs: int
    metric: str | None
    goal: str | None
    latest: float | None
    best: float | None
    merged_into: str | None
    merge_commit: str | None
    last_run: float | None  # start time, seconds since the epoch

    def to_json(self) -> dict:
        return asdict(self)


def default_metric(project: Project, runs: list) -> str | None:
    """The first gate rule's metric, else the first metric of the newest run that logged any."""
    for rule in project.config.ci_gate:
        if rule.get("metric"):
            return str(rule["metric"])
    return next((sorted(r.data.metrics)[0] for r in runs if r.data.metrics), None)


def row(project: Project, found, branch: str, runs: list) -> BranchRow:
    from .compare import goal_of

    tags = found.tags or {}
    metric = default_metric(project, runs)
    goal = goal_of(metric, project.config.metric_goals.get(metric, "")) if metric else None
    values = [r.data.metrics[metric] for r in runs if metric in r.data.metrics and r.info.status == "FINISHED"]
    best = (min(values) if goal == "minimize" else max(values)) if values else None
    return BranchRow(branch, found.name, tags.get(STATE, ACTIVE), found.lifecycle_stage == "deleted", len(runs),
                     metric, goal, values[0] if values else None, best, tags.get(MERGED_INTO),
                     tags.get(MERGE_COMMIT), runs[0].info.start_time / 1000 if runs and runs[0].info.start_time else None)


def rows(project: Project) -> list[BranchRow]:
    """Every branch experiment (archived ones too), by branch then newest first; reads only."""
    from . import tracking

    try:
        c = tracking.read_client(project)
    except NoStore:
        return []
    out = []
    for found in all_experiments(c):
        branch = branch_of(project, found)
        runs = all_runs(c, found.experiment_id) if branch is not None else []
        if branch is not None and owned(found, branch, runs):
            out.append(row(project, found, branch, runs))
    return sorted(out, key=lambda r: (r.branch, -(r.last_run or 0)))


def listing(project: Project) -> dict:
    """What the Lab's Branches view shows: every branch experiment, the base and current branch, and
    for each row the ``branch`` value that reads its runs (``/cd4ml-nb/runs?branch=``)."""
    from . import tracking

    found = rows(project)
    here = current(project)
    shown, now = [], {}
    for r in found:
        suffix = r.experiment[len(template_name(project, r.branch)):]
        if not suffix and r.branch not in now:
            now[r.branch] = tracking.branch_experiment(project, r.branch)
        query = r.branch + suffix if suffix.startswith("@") else r.branch if now[r.branch] == r.experiment \
            else r.branch + "@"
        shown.append({**r.to_json(), "query": query})
    return {"base": project.base_branch, "current": here, "experiment": tracking.branch_experiment(project, here),
            "branches": shown}
