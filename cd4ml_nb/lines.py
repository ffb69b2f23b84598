"""Which experiment a branch's runs go to: its template name while that experiment is live, else
``NAME@<short fork commit>`` (see :mod:`.branches`). The one place this is decided; it reads the
store only through the client it is given (or ``connect`` makes), so that it imports no tracking.
"""
from __future__ import annotations

from typing import Any, Callable

from . import gitinfo
from .exceptions import BadInput
from .project import Project

BRANCH = "cd4ml.branch"
FORK = "cd4ml.branch.fork"
STATE = "cd4ml.branch.state"
MERGED_INTO = "cd4ml.merged_into"
MERGE_COMMIT = "cd4ml.merge_commit"
DELETED_AT = "cd4ml.branch.deleted_at"  # when a sync first saw the branch gone unmerged
RESTORED = "cd4ml.branch.restored"  # restored by hand: sync archives it no more

ACTIVE, MERGED, SQUASHED, DELETED = "active", "merged", "squash-merged", "deleted"
DONE = (MERGED, SQUASHED)
DAY = 86400.0
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"


def template_name(project: Project, branch: str) -> str:
    """The experiment ``experiment_template`` names for ``branch``."""
    try:
        return project.config.experiment_template.format(branch=branch, project=project.root.name)
    except (KeyError, IndexError, ValueError) as e:
        raise BadInput(f"experiment_template {project.config.experiment_template!r}: {e!r}; "
                       "use the fields {branch} and {project}") from None


def current(project: Project) -> str:
    """The checked-out branch (``detached``, ``no-git`` when there is none)."""
    return (gitinfo.current_branch(project.root) or "detached") if project.in_git else "no-git"


def live(project: Project, found, branch: str) -> bool:
    """Whether experiment ``found`` still takes ``branch``'s runs."""
    tags = found.tags or {}
    if found.lifecycle_stage != "active" or tags.get(STATE, ACTIVE) != ACTIVE:
        return False
    fork = tags.get(FORK)
    return not fork or gitinfo.is_ancestor(project.root, fork, f"refs/heads/{branch}")


def experiment_for(project: Project, branch: str | None = None, c=None, *, writing: bool = False,
                   connect: Callable[[], Any] | None = None) -> str:
    """The experiment of ``branch`` (default: the checked-out one): its template name while that is
    live, else ``NAME@<short fork commit>`` — for a read, only once that exists (until the new line
    runs, its branch name still reads the old line's runs). A branch not in git (deleted, or named
    by CI only) and the base branch always get the template name; ``BRANCH@`` names the template
    name's experiment (a branch's first line) whatever line the branch is on now. The store is read
    through ``c``, else the client ``connect`` returns (None: there is no store)."""
    branch = branch or current(project)
    if branch.endswith("@"):
        return template_name(project, branch[:-1])
    name = template_name(project, branch)
    if not project.in_git or branch == project.base_branch or not gitinfo.branch_exists(project.root, branch):
        return name
    c = c if c is not None else connect() if connect is not None else None
    if c is None:  # no store yet
        return name
    found = c.get_experiment_by_name(name)
    if found is None or live(project, found, branch):
        return name
    fork = gitinfo.fork_point(project.root, f"refs/heads/{branch}", project.base_branch) \
        or gitinfo.commit_of(project.root, f"refs/heads/{branch}") or ""
    fresh = f"{name}@{fork[:7]}"
    return fresh if writing or c.get_experiment_by_name(fresh) is not None else name


def writer(c):
    """The client that writes experiment tags and lifecycles (MLflow's, behind the light one)."""
    return c.mlflow() if hasattr(c, "mlflow") else c


def tag_created(c, project: Project, name: str, experiment_id: str, branch: str | None = None) -> None:
    """Record branch and fork on an experiment just created for ``branch`` (default: the checked-out one)."""
    if not project.in_git:
        return
    branch = branch or gitinfo.current_branch(project.root)
    if not branch or name not in (template_name(project, branch), experiment_for(project, branch, c, writing=True)):
        return
    w = writer(c)
    w.set_experiment_tag(experiment_id, BRANCH, branch)
    ref = f"refs/heads/{branch}" if gitinfo.branch_exists(project.root, branch) else "HEAD"  # CI: a detached HEAD
    fork = gitinfo.fork_point(project.root, ref, project.base_branch) if branch != project.base_branch else None
    if fork:
        w.set_experiment_tag(experiment_id, FORK, fork)


