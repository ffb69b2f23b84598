"""What each route of the Lab extension does, without tornado: the core calls the handlers run on
the extension's thread pools (:class:`Extension`), with user paths resolved by :class:`.ServerRoot`."""
from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import __version__, gitinfo
from .config import Cd4mlConfig
from .exceptions import BadInput, Cd4mlError, NotFound, TooLarge, TrackingError
from .project import Project
from .server_root import ServerRoot, shown

NAMESPACE = "cd4ml-nb"
AUTH_RESOURCE = "cd4ml-nb"
WORKERS = 4  # threads for the expensive routes (listings, comparisons, renders, pairing, submissions)
CONTROL_WORKERS = 3  # threads for the cheap ones (status, cancel, a job's or a pair's state): never behind a listing
MAX_DIFF_CHARS = 200_000  # a pair's diff shown in the panel
MLFLOW_PATH = "mlflow"  # the proxied MLflow UI: /cd4ml-nb/mlflow/


@dataclass(frozen=True)
class Status:
    version: str
    branch: str | None
    base_branch: str
    tracking_uri: str
    mlflow_ui_url: str | None
    mlflow_ui_proxy: str | None  # path under the server's base URL of the proxied UI of a SQLite store


def project_status(project: Project) -> Status:
    """What the frontend shows: the branch and where runs go."""
    from . import store

    return Status(
        version=__version__,
        branch=gitinfo.current_branch(project.root) if project.in_git else None,
        base_branch=project.base_branch,
        tracking_uri=project.tracking_uri,
        mlflow_ui_url=project.mlflow_ui_url,
        mlflow_ui_proxy=f"{NAMESPACE}/{MLFLOW_PATH}/" if store.is_sqlite(project.tracking_uri) else None,
    )


class Extension:
    """What the server extension owns: the root, two thread pools, the job managers, request limits.

    Blocking work runs on ``executor`` (the expensive routes) or ``control`` (the cheap ones), so a
    flood of listings never delays ``status`` or a cancel. Within its pool a route holds at most all
    threads but one at a time (:meth:`lane`): a flood of one route slows that route only.
    """

    def __init__(self, server_app, mlflow_url: str) -> None:
        self.root = ServerRoot(server_app)
        self.limits = Cd4mlConfig(parent=server_app)  # server-wide: c.Cd4mlConfig.max_request_bytes
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="cd4ml-nb")
        self.control = ThreadPoolExecutor(CONTROL_WORKERS, thread_name_prefix="cd4ml-nb-control")
        self.log = server_app.log
        from .mlflow_ui import MlflowUi

        self.mlflow_ui = MlflowUi(mlflow_url)
        self._managers: dict[Path, Any] = {}
        self._lock = threading.Lock()
        self._lanes: dict[str, asyncio.Semaphore] = {}

    def lane(self, route: str, control: bool = False) -> tuple[ThreadPoolExecutor, asyncio.Semaphore]:
        """The pool ``route`` runs on and the semaphore that keeps it to all of that pool's threads but one
        (used on the event loop only)."""
        pool, size = (self.control, CONTROL_WORKERS) if control else (self.executor, WORKERS)
        key = f"{'control' if control else 'work'}:{route}"
        if key not in self._lanes:
            self._lanes[key] = asyncio.Semaphore(max(1, size - 1))
        return pool, self._lanes[key]

    def jobs(self, project: Project):
        """The job manager of ``project`` (one per project, made on first use)."""
        from .jobs import JobManager

        with self._lock:
            if project.root not in self._managers:
                self._managers[project.root] = JobManager(project, root=self.root.path)
            return self._managers[project.root]

    def all_jobs(self) -> list:
        """The root project's job manager first, then those of other projects met since start."""
        first = self.jobs(self.root.project())
        with self._lock:
            return [first, *(m for m in self._managers.values() if m is not first)]

    def start(self) -> None:
        """At server start: runs left RUNNING by dead job processes become FAILED, queued jobs start."""
        try:
            from . import tracking

            project = self.root.project()
            fixed = tracking.reconcile_orphans(project)
            if fixed:
                self.log.info("cd4ml_nb: marked %d orphaned run(s) FAILED", len(fixed))
            self.jobs(project).resume()
        except Exception as e:  # never break the server start
            self.log.warning("cd4ml_nb: start-up (orphaned runs, queued jobs): %s", self.root.scrub(str(e)))


def check_parameters(values: Any, limit: int) -> dict[str, Any]:
    """The ``parameters`` of a request: an object whose values' JSON is at most ``limit`` bytes each."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BadInput("'parameters' must be an object of name: value")
    for name, value in values.items():
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > limit:
            raise TooLarge(f"parameter {shown(name)}: its value is {size} bytes of JSON, over the limit of "
                           f"{limit} bytes (max_parameter_bytes)")
    return values


def status_of(root: ServerRoot) -> dict[str, Any]:
    return asdict(project_status(root.project()))


def _pairing_state(root: ServerRoot, project: Project, real: Path) -> dict[str, Any]:
    from . import pairing

    rel = root.inside(real)
    pair = pairing.find_pair(real, project)
    if pair is None:
        return {"path": rel, "paired": False, "ipynb": None, "text": None, "formats": None, "in_sync": None,
                "newer": None, "conflict": False, "missing": None, "basis": None, "diff": None}
    compared = pairing.compare(pair, project)
    state = compared.to_json(project)
    state.update(ipynb=root.inside(pair.ipynb, "paired file"), text=root.inside(pair.text, "paired file"))
    diff = None
    if not compared.in_sync and compared.missing is None:  # what a sync would settle, for the panel
        diff = root.scrub(pairing.diff(pair))
        if len(diff) > MAX_DIFF_CHARS:
            diff = diff[:MAX_DIFF_CHARS] + f"\n… (cut at {MAX_DIFF_CHARS} characters)\n"
    return {"path": rel, "paired": True, **state, "diff": diff}


def read_pairing(root: ServerRoot, text: Any) -> dict[str, Any]:
    real = root.file(text)
    return _pairing_state(root, root.project(real), real)


def pair(root: ServerRoot, text: Any) -> dict[str, Any]:
    from . import pairing

    real = root.file(text)
    project = root.project(real)
    pair = pairing.find_pair(real, project, default=True)
    if pair is not None:  # both sides must be inside the root before anything is written
        root.inside(pair.ipynb, "paired file")
        root.inside(pair.text, "paired file")
    pairing.pair_notebook(real, project)
    return _pairing_state(root, project, real)


def sync(root: ServerRoot, text: Any, keep: Any) -> dict[str, Any]:
    """Sync the pair of ``text``: from the side that changed, or from ``keep`` (settles a conflict)."""
    from . import pairing

    if keep not in (None, "ipynb", "text"):
        raise BadInput("'keep' must be \"ipynb\", \"text\" or absent")
    real = root.file(text)
    project = root.project(real)
    pair = pairing.find_pair(real, project)
    if pair is None:
        raise BadInput(f"{shown(root.inside(real))} is not paired: pair it first")
    root.inside(pair.ipynb, "paired file")  # both sides inside the root before anything is written
    root.inside(pair.text, "paired file")
    done = pairing.sync_pair(pair, project, keep=keep)
    return {**_pairing_state(root, project, real), "done": root.scrub(done)}


def contract(root: ServerRoot, text: Any) -> dict[str, Any]:
    from . import notebooks, params

    real = root.file(text)
    contract = params.read_contract(notebooks.read(real).node, root.inside(real))
    return {**contract.to_json(), "schema": params.json_schema(contract)}


def check_values(root: ServerRoot, text: Any, texts: Any) -> dict[str, Any]:
    """The form's texts checked against the notebook's contract: typed values and a reason per misfit."""
    from . import notebooks, params

    real = root.file(text)
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise BadInput("'texts' must be an object of name: text")
    contract = params.read_contract(notebooks.read(real).node, root.inside(real))
    values, errors = params.check_texts(contract, texts)
    return {"values": values, "errors": errors}


def submit(ext: Extension, text: Any, values: Any) -> dict[str, Any]:
    real = ext.root.file(text)
    project = ext.root.project(real)
    values = check_parameters(values, project.config.max_parameter_bytes)
    job = ext.jobs(project).submit(ext.root.inside(real), values)
    return {"id": job.id}


def list_jobs(ext: Extension, limit: int, offset: int) -> dict[str, Any]:
    managers = ext.all_jobs()
    if len(managers) == 1:
        jobs, total = managers[0].list_page(limit, offset)
    else:  # several projects under the root: merge their newest-first pages
        jobs, total = [], 0
        for manager in managers:
            page, count = manager.list_page(offset + limit, 0)
            jobs += page
            total += count
        jobs = sorted(jobs, key=lambda j: j.created, reverse=True)[offset:offset + limit]
    return {"jobs": [job.to_json() for job in jobs], "total": total, "limit": limit, "offset": offset}


def _find_job(ext: Extension, job_id: str):
    """The manager that holds job ``job_id``, and the job."""
    from .jobs import JOB_ID

    if JOB_ID.match(job_id):
        for manager in ext.all_jobs():
            try:
                return manager, manager.get(job_id)
            except NotFound:
                continue
    raise NotFound(f"no job {shown(job_id, 40)}")


def job(ext: Extension, job_id: str) -> dict[str, Any]:
    return _find_job(ext, job_id)[1].to_json()


def cancel(ext: Extension, job_id: str) -> dict[str, Any]:
    manager, _ = _find_job(ext, job_id)
    job = manager.cancel(job_id)
    return {"id": job.id, "state": job.state}


def job_html(ext: Extension, job_id: str) -> bytes:
    manager, _ = _find_job(ext, job_id)
    path = manager.html_path(job_id)
    ext.root.inside(Path(path), "HTML render", hidden=True)
    try:
        return Path(path).read_bytes()
    except OSError:
        raise NotFound(f"job {job_id}: its HTML render is gone") from None


def runs_of(root: ServerRoot, branch: str | None, notebook: str | None, limit: int,
          page_token: str | None) -> dict[str, Any]:
    from . import pairing, tracking

    tag = None
    if notebook:
        real = root.file(notebook, "notebook")
        project = root.project(real)
        tag = pairing.notebook_id(project, real)  # one name for both sides of a pair
    else:
        project = root.project()
    experiment = tracking.branch_experiment(project, branch)
    try:
        if not page_token:  # heartbeats expire while Lab runs too: the first page shows them orphaned
            tracking.reconcile_orphans(project, experiment)
        page = tracking.runs_page(project, experiment, tag, limit, page_token)
    except Cd4mlError:
        raise
    except Exception as e:  # MLflow's own errors (a server that answers 5xx, a store it cannot read)
        from mlflow.exceptions import MlflowException

        if not isinstance(e, MlflowException):
            raise
        raise TrackingError(f"MLflow store {project.tracking_uri}: {str(e).splitlines()[0][:300]}") from None
    runs = []
    for run in page.runs:
        shown = asdict(run)
        shown["notebook"] = root.relative(project.root / run.notebook) if run.notebook else None
        runs.append(shown)
    return {"experiment": experiment, "runs": runs, "next_page_token": page.next_page_token}


def branches_of(root: ServerRoot) -> dict[str, Any]:
    """The root project's branch experiments with their state (:func:`branches.listing`)."""
    from . import branches

    return branches.listing(root.project())


MAX_COMPARED = 10  # runs one comparison takes


def _run_links(root: ServerRoot, project: Project, run) -> dict[str, Any]:
    """Where a run's executed notebook and HTML render are, relative to the root (None when gone or outside)."""
    from . import tracking

    out_dir, notebook = run.data.tags.get(tracking.OUTPUT_DIR), run.data.tags.get(tracking.NOTEBOOK)
    links: dict[str, Any] = {"executed": None, "html": None}
    if out_dir and notebook:
        executed = Path(out_dir) / f"{PurePosixPath(notebook).stem}.ipynb"
        for key, path in (("executed", executed), ("html", executed.with_suffix(".html"))):
            if path.is_file():
                links[key] = root.relative(path)
    return links


def _run_summary(root: ServerRoot, project: Project, run) -> dict[str, Any]:
    from . import tracking

    shown = asdict(tracking.summarize(run))
    shown["branch"] = run.data.tags.get(tracking.GIT_BRANCH)
    shown["notebook"] = root.relative(project.root / shown["notebook"]) if shown["notebook"] else None
    return {**shown, **_run_links(root, project, run)}


def _gate_verdict(project: Project, run, metric: str, tolerance: str) -> dict[str, Any]:
    """What ``cd4ml-nb gate`` says of the run's branch against the base, for one metric."""
    from . import compare, tracking

    branch = run.data.tags.get(tracking.GIT_BRANCH)
    notebook = run.data.tags.get(tracking.NOTEBOOK)
    verdict: dict[str, Any] = {"branch": branch, "base": project.base_branch, "metric": metric,
                               "max_regression": tolerance, "passed": None, "checks": [], "message": None}
    if not branch:
        verdict["message"] = "the run records no git branch: nothing to gate"
        return verdict
    value, relative = compare.parse_tolerance(tolerance)
    try:
        result = compare.gate(project, [compare.GateSpec(metric, "", value, relative)], branch=branch,
                              notebooks=[notebook] if notebook and (project.root / notebook).is_file() else [])
    except compare.CannotEvaluate as e:
        verdict["message"] = str(e)
        return verdict
    verdict.update(passed=result.passed, checks=[c.describe() for c in result.checks],
                   message="; ".join(s.describe() for s in result.skipped) or None)
    return verdict


def compare_runs(root: ServerRoot, data: dict[str, Any]) -> dict[str, Any]:
    """Two or more runs against the first: ``cd4ml-nb diff`` per pair, metric deltas with each
    metric's goal, and ``cd4ml-nb gate`` of the last run's branch against the base."""
    from . import compare, repro, tracking

    ids = data.get("run_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not 2 <= len(ids) <= MAX_COMPARED:
        raise BadInput(f"'run_ids' must be a list of 2 to {MAX_COMPARED} run ids")
    metric, tolerance = data.get("metric"), data.get("max_regression", "0")
    if metric is not None and not isinstance(metric, str) or not isinstance(tolerance, str):
        raise BadInput("'metric' and 'max_regression' must be strings")
    project = root.project()
    c = tracking.client(project, create=False)
    ids = list(dict.fromkeys(tracking.resolve_run_id(c, i) for i in ids))
    if len(ids) < 2:
        raise BadInput("give two different runs to compare")
    runs = [c.get_run(i) for i in ids]
    reference, others = runs[0], runs[1:]
    diffs = [repro.diff_runs(project, ids[0], run.info.run_id).to_json() for run in others]
    names = sorted({m for run in runs for m in run.data.metrics})
    deltas = [
        {"run_id": run.info.run_id, **compare.MetricDelta(m, compare.goal_of(m), reference.data.metrics.get(m),
                                                          run.data.metrics.get(m)).to_json()}
        for run in others for m in names
    ]
    metric = metric or (names[0] if names else None)
    return {
        "reference": ids[0],
        "runs": [_run_summary(root, project, run) for run in runs],
        "goals": {m: compare.goal_of(m) for m in names},
        "deltas": deltas,
        "diffs": diffs,
        "gate": _gate_verdict(project, runs[-1], metric, tolerance) if metric else None,
    }


def run_html(root: ServerRoot, run_id: str) -> bytes:
    from . import tracking

    project = root.project()
    c = tracking.client(project, create=False)
    run = c.get_run(tracking.resolve_run_id(c, run_id))
    html = _run_links(root, project, run)["html"]
    if html is None:
        raise NotFound(f"run {run_id[:12]}: no HTML render under the server root")
    path = root.path / html
    root.inside(path, "HTML render", hidden=True)
    return path.read_bytes()
