"""Background notebook jobs (for the JupyterLab extension): each run in its own process.

A job is a folder ``<state_dir>/jobs/<id>/``: ``spec.json`` (what to run, written on submit),
``launch.json`` (the process: pid and start time, written when it starts), ``status.json``
(progress and result, written by the job process), ``cancel`` (a request to stop). State lives
on disk, so a page reload or a server restart finds the jobs again, and :meth:`JobManager.resume`
starts the jobs that were left queued.

Paths a manager takes and returns are relative to its ``root`` (Jupyter's root folder, the
project root or a folder inside it); each job writes its executed notebook under
``<root>/<lab_runs_dir>/<id>/`` so that JupyterLab can open it.

At most ``max_jobs`` job processes live at once: a job counts from its start until its process
has exited and been reaped, even after its status says it finished (it may still be logging
artifacts). A process is known by its pid *and* its start time, so a pid the system has reused
for another process is never taken for a job's (nor signalled).

Ended jobs are pruned, with their run folders, beyond ``job_retention_count`` or after
``job_retention_days`` (when a job ends, on submit, and by ``cd4ml-nb gc``); the MLflow runs
and their artifacts stay. Reading (``get``, ``list``, ``list_page``, ``html_path``) writes
nothing. Run a job folder by hand with ``python -m cd4ml_nb.jobs JOB_DIR``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import files, kernels, notebooks, pairing, params
from .cleanup import Removed, check_retention, last_change, remove_tree, tree_bytes
from .exceptions import BadInput, Cd4mlError, Conflict, Forbidden, Interrupted, NotFound, TooLarge
from .processes import launched_process, process_start
from .project import Project, ignored_folder

log = logging.getLogger(__name__)

STATES = ("queued", "running", "finished", "failed", "killed")
TERMINAL = ("finished", "failed", "killed")
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
POLL_SECONDS = 0.3


@dataclass(frozen=True)
class Job:
    """A job as the frontend sees it."""

    id: str
    path: str
    parameters: dict[str, Any]
    state: str
    created: float
    done: int = 0
    total: int = 0
    run_id: str | None = None
    experiment: str | None = None
    error: str | None = None
    executed: str | None = None
    html: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    kind: str = "notebook"  # or "pipeline" (:mod:`.lab_pipelines`): ``path`` is then the pipeline file
    steps: tuple[dict, ...] = ()  # a pipeline job's steps that ended, in the order they ended

    def to_json(self) -> dict:
        return {
            "id": self.id, "path": self.path, "parameters": self.parameters, "state": self.state,
            "created": self.created, "progress": {"done": self.done, "total": self.total},
            "run_id": self.run_id, "experiment": self.experiment, "error": self.error,
            "executed": self.executed, "html": self.html, "metrics": self.metrics,
            "kind": self.kind, "steps": list(self.steps),
        }


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    files.write_atomic(path, json.dumps(data, default=str))


def _confine(root: Path, user_path: str, *, allow_hidden: bool = False) -> Path:
    """``user_path`` (relative to ``root``, or absolute inside it) resolved, refusing escapes."""
    if not isinstance(user_path, str) or not user_path:
        raise BadInput("a notebook path (relative to the server root) is required")
    if "\0" in user_path:
        raise Forbidden(f"{user_path!r}: path contains a NUL byte")
    real = Path(os.path.realpath(root / user_path))
    if real != root and root not in real.parents:
        raise Forbidden(f"{user_path}: outside the root {root}")
    if not allow_hidden and any(part.startswith(".") for part in real.relative_to(root).parts):
        raise Forbidden(f"{user_path}: hidden files and folders are not allowed")
    return real


def _relative(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` when inside it, else absolute (POSIX form)."""
    real = Path(os.path.realpath(path))
    try:
        return real.relative_to(root).as_posix()
    except ValueError:
        return real.as_posix()


class JobManager:
    """Submits, lists, cancels and prunes the notebook jobs of one project.

    Parameters
    ----------
    project : the project (git repository) whose state folder holds the jobs.
    root : Jupyter's root folder (default: the project root); paths are relative to it.
    limit : job processes at once (default: the ``max_jobs`` setting).

    Making a manager writes nothing; call :meth:`resume` to start the jobs left queued.
    """

    def __init__(self, project: Project, root: Path | str | None = None, *, limit: int | None = None) -> None:
        self.project = project
        self.root = Path(os.path.realpath(root if root is not None else project.root))
        self.limit = max(1, limit if limit is not None else project.config.max_jobs)
        self._procs: dict[str, subprocess.Popen] = {}  # job processes this manager started, until reaped
        self._lock = threading.RLock()
        self._depth = 0  # how deep this manager holds the folder lock (in the thread holding _lock)
        self._loop: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self.project.state_dir / "jobs"

    @property
    def runs_dir(self) -> Path:
        """Where this manager's jobs put their run folders (under the root, so Lab can open them)."""
        return Path(os.path.realpath(self.root / self.project.config.lab_runs_dir))

    # --- reading (writes nothing) ---------------------------------------------------------

    def _root_of(self, spec: dict) -> Path:
        return Path(spec.get("root") or os.path.realpath(self.project.root))

    def _dir(self, job_id: str) -> Path:
        """The folder of one of this root's jobs, else NotFound."""
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise NotFound(f"no job {job_id!r}")
        job_dir = self.folder / job_id
        spec = _read(job_dir / "spec.json")
        if not spec or self._root_of(spec) != self.root:
            raise NotFound(f"no job {job_id!r}")
        return job_dir

    def _alive(self, job_id: str, launch: dict) -> bool:
        """Whether the job's process still runs, or has exited but is not reaped yet."""
        proc = self._procs.get(job_id)
        if proc is not None:
            return proc.poll() is None  # our child: its pid cannot be reused before it is reaped
        return bool(launch) and launched_process(launch) is not None

    def _state(self, job_id: str, job_dir: Path, launch: dict, status: dict) -> tuple[str, str | None, dict]:
        state, error = status.get("state"), status.get("error")
        if state in TERMINAL:
            return state, error, status
        if not launch:
            return ("killed", "cancelled", status) if (job_dir / "cancel").exists() else ("queued", None, status)
        if self._alive(job_id, launch):
            return "running", error, status
        status = _read(job_dir / "status.json")  # it may have finished meanwhile
        state = status.get("state")
        if state in TERMINAL:
            return state, status.get("error"), status
        if (job_dir / "cancel").exists():
            return "killed", "cancelled", status
        return "failed", "the job process exited without a result", status

    def _job(self, job_id: str, job_dir: Path, spec: dict) -> Job:
        launch, status = _read(job_dir / "launch.json"), _read(job_dir / "status.json")
        state, error, status = self._state(job_id, job_dir, launch, status)
        return Job(
            id=job_id, path=spec.get("path", ""), parameters=spec.get("parameters", {}), state=state,
            created=spec.get("created", 0.0), done=status.get("done", 0), total=status.get("total", 0),
            run_id=status.get("run_id"), experiment=status.get("experiment"), error=error,
            executed=status.get("executed"), html=status.get("html"), metrics=status.get("metrics", {}),
            kind=spec.get("kind", "notebook"), steps=tuple(status.get("steps") or ()),
        )

    def get(self, job_id: str) -> Job:
        job_dir = self._dir(job_id)
        spec = _read(job_dir / "spec.json")
        if not spec:
            raise NotFound(f"no job {job_id!r}")
        return self._job(job_id, job_dir, spec)

    def _specs(self, *, all_roots: bool = False) -> list[tuple[str, dict]]:
        """(id, spec) of the jobs on disk, newest first: this root's, or every root's."""
        if not self.folder.is_dir():
            return []
        found = []
        for child in self.folder.iterdir():
            if JOB_ID.match(child.name):
                spec = _read(child / "spec.json")
                if spec and (all_roots or self._root_of(spec) == self.root):
                    found.append((child.name, spec))
        return sorted(found, key=lambda item: (item[1].get("created", 0.0), item[0]), reverse=True)

    def list_page(self, limit: int, offset: int = 0) -> tuple[list[Job], int]:
        """Up to ``limit`` jobs from ``offset`` on, newest first, and how many jobs there are."""
        if not isinstance(limit, int) or not isinstance(offset, int) or limit < 0 or offset < 0:
            raise BadInput("limit and offset must be integers, 0 or more")
        specs = self._specs()
        jobs = []
        for job_id, spec in specs[offset: offset + limit]:
            jobs.append(self._job(job_id, self.folder / job_id, spec))
        return jobs, len(specs)

    def list(self) -> list[Job]:
        """Every job of this root, newest first."""
        return [self._job(job_id, self.folder / job_id, spec) for job_id, spec in self._specs()]

    def html_path(self, job_id: str) -> Path:
        """The job's HTML render: an absolute path inside the root."""
        html = self.get(job_id).html
        if not html:
            raise NotFound(f"job {job_id} has no HTML render (yet)")
        path = _confine(self.root, html, allow_hidden=True)
        if not path.is_file():
            raise NotFound(f"job {job_id}: its HTML render {html} is gone")
        return path

    # --- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This manager's lock, and a lock on the jobs folder shared with other processes
        (re-entrant: a second ``flock`` by the same process would wait for ever)."""
        import fcntl

        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.folder / ".lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0

    def _check_sizes(self, values: dict[str, Any]) -> None:
        cap = self.project.config.max_parameter_bytes
        for name, value in values.items():
            size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))
            if size > cap:
                raise TooLarge(f"parameter {name!r}: its value is {size:,} bytes as JSON, over the limit of "
                               f"{cap:,} bytes (max_parameter_bytes)")

    def submit(self, path: str, values: dict[str, Any] | None = None) -> Job:
        """Validate the notebook and parameters now (BadInput lists every problem), then queue."""
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise BadInput("parameters must be an object of name: value")
        self._check_sizes(values)
        source = _confine(self.root, path)
        rel = _relative(self.root, source)
        nb = notebooks.read(source)
        pairing.ensure_in_sync(pairing.find_pair(source, self.project, node=nb.node), self.project, source)
        contract = params.read_contract(nb.node, rel)
        checked = params.validate(contract, values=values, where=rel)
        kernels.kernel_name(self.project, nb, lambda message: None)
        return self.queue(rel, checked)

    def queue(self, rel: str, parameters: dict[str, Any], **extra: Any) -> Job:
        """Queue a job already validated: ``rel`` (relative to the root) with ``parameters``;
        ``extra`` goes to its spec (a notebook job gets its run folder; ``kind="pipeline"``, see
        :mod:`.lab_pipelines`)."""
        self.project.ensure_state_dir()
        self.folder.mkdir(exist_ok=True)
        with self._locked():
            job_id = uuid.uuid4().hex[:12]
            job_dir = self.folder / job_id
            job_dir.mkdir()
            spec = {"id": job_id, "root": str(self.root), "path": rel, "parameters": parameters,
                    "created": time.time(), **extra}
            if spec.get("kind", "notebook") == "notebook":
                spec["output"] = str(self.runs_dir / job_id)
            _write(job_dir / "spec.json", spec)
            self.prune()
        self._schedule()
        self._ensure_loop()
        return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Stop a job: a queued one never starts; a running one's kernel stops, its run ends KILLED.

        A job that already ended raises :class:`Conflict`, and nothing is signalled.
        """
        self._dir(job_id)
        with self._locked():
            job = self.get(job_id)
            if job.state in TERMINAL:
                raise Conflict(f"job {job_id} already ended ({job.state}): there is nothing to cancel")
            job_dir = self.folder / job_id
            (job_dir / "cancel").touch()
            own = self._procs.get(job_id)
            if own is not None:
                if own.poll() is None:
                    own.send_signal(signal.SIGTERM)
            else:
                proc = launched_process(_read(job_dir / "launch.json"))
                if proc is not None:
                    import psutil

                    with contextlib.suppress(psutil.Error):
                        proc.send_signal(signal.SIGTERM)  # psutil checks the identity once more
        return self.get(job_id)

    def resume(self) -> None:
        """Start the jobs left queued (e.g. by a server that stopped) and keep scheduling.

        Writes nothing when no job was ever submitted.
        """
        if not self.folder.is_dir():
            return
        try:
            self._schedule()
        except PermissionError:  # a read-only state folder: nothing can be started from here
            return
        self._ensure_loop()

    def wait(self, job_id: str, timeout: float = 300.0) -> Job:
        """Block until the job is terminal (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in TERMINAL or time.monotonic() > deadline:
                return job
            self._schedule()
            time.sleep(POLL_SECONDS)

    def shutdown(self, cancel: bool = True) -> None:
        """Stop scheduling; with ``cancel``, cancel the running jobs this manager started and wait
        for their processes (else they run on, and another manager can take them over)."""
        loop, self._loop = self._loop, None
        if loop is not None and loop is not threading.current_thread():
            loop.join(timeout=30)
        if not cancel:
            return
        for job_id, proc in list(self._procs.items()):  # ours, of any root; ended ones finish in peace
            if proc.poll() is None and _read(self.folder / job_id / "status.json").get("state") not in TERMINAL:
                (self.folder / job_id / "cancel").touch()
                proc.send_signal(signal.SIGTERM)
        for proc in list(self._procs.values()):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    # --- scheduling -----------------------------------------------------------------------

    def _reap(self) -> bool:
        """Forget our job processes that have exited (reaping them); whether any had."""
        ended = [job_id for job_id, proc in self._procs.items() if proc.poll() is not None]
        for job_id in ended:
            del self._procs[job_id]
        return bool(ended)

    def _live_count(self, specs: list[tuple[str, dict]]) -> int:
        live = {job_id for job_id, proc in self._procs.items() if proc.poll() is None}
        for job_id, _ in specs:
            if job_id not in live and job_id not in self._procs:
                launch = _read(self.folder / job_id / "launch.json")
                if launch and launched_process(launch) is not None:
                    live.add(job_id)
        return len(live)

    def _queued(self, specs: list[tuple[str, dict]]) -> list[str]:
        """Ids of the jobs (of every root) that wait to start, oldest first."""
        queued = []
        for job_id, spec in reversed(specs):
            job_dir = self.folder / job_id
            if not (job_dir / "launch.json").exists() and not (job_dir / "cancel").exists() \
                    and _read(job_dir / "status.json").get("state") not in TERMINAL:
                queued.append(job_id)
        return queued

    def _schedule(self) -> None:
        """Reap ended job processes (then prune), start queued jobs while there is room."""
        if not self.folder.is_dir() or not self._pending():
            return
        with self._locked():
            if self._reap():
                self.prune()
            specs = self._specs(all_roots=True)
            room = self.limit - self._live_count(specs)
            for job_id in self._queued(specs)[: max(0, room)]:
                self._start(job_id)

    def _start(self, job_id: str) -> None:
        job_dir = self.folder / job_id
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
        if self.project.config.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.project.config.tracking_uri
        with open(job_dir / "job.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cd4ml_nb.jobs", str(job_dir)],
                cwd=self.project.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._procs[job_id] = proc
        try:
            create_time = process_start(proc.pid)
        except Exception as e:  # it exited already (it is our unreaped child: this cannot really happen)
            log.warning("job %s: process %d gone before its start time was read: %s", job_id, proc.pid, e)
            create_time = None
        _write(job_dir / "launch.json", {"pid": proc.pid, "create_time": create_time, "started": time.time()})

    def _pending(self) -> bool:
        """Whether the loop still has work: our processes to reap, or jobs waiting to start."""
        return bool(self._procs) or bool(self._queued(self._specs(all_roots=True)))

    def _ensure_loop(self) -> None:
        with self._lock:
            if self._loop is not None and self._loop.is_alive():
                return

            def loop(me: threading.Thread) -> None:
                while self._loop is me:
                    try:
                        self._schedule()
                    except PermissionError:  # a read-only state folder: stop trying
                        break
                    except Exception:  # keep scheduling whatever one job did, and say what it did
                        log.exception("cd4ml_nb: scheduling queued jobs failed; trying again")
                    with self._lock:
                        if self._loop is me and not self._pending():
                            self._loop = None
                            return
                    time.sleep(POLL_SECONDS)
                with self._lock:
                    if self._loop is me:
                        self._loop = None

            thread = threading.Thread(target=lambda: loop(thread), name="cd4ml-jobs", daemon=True)
            self._loop = thread
            thread.start()

    # --- retention ------------------------------------------------------------------------

    def _job_output(self, spec: dict, status: dict) -> Path | None:
        """The run folder(s) a job owns: ``<lab_runs_dir>/<id>/`` (older jobs: their executed
        notebook's folder), only when it is inside a lab runs folder."""
        root = self._root_of(spec)
        if spec.get("output"):
            output = Path(spec["output"])
            runs = output.parent
        elif status.get("executed"):
            runs = Path(os.path.realpath(root / self.project.config.lab_runs_dir))
            output = Path(os.path.realpath(root / status["executed"])).parent
        else:
            return None
        if output.parent != runs or runs.name != Path(self.project.config.lab_runs_dir).name:
            return None
        return output if output.is_dir() else None

    def prune(self, keep: int | None = None, days: float | None = None, *, dry_run: bool = False) -> list[Removed]:
        """Remove ended jobs beyond the newest ``keep`` or ended more than ``days`` ago (0: no age
        limit), with their run folders; queued and running jobs, and jobs whose process still
        runs, are never removed. Defaults: ``job_retention_count`` and ``job_retention_days``.
        Covers the jobs of every root; the MLflow runs stay."""
        check_retention(keep, days)
        keep = self.project.config.job_retention_count if keep is None else keep
        days = self.project.config.job_retention_days if days is None else days
        if not self.folder.is_dir():
            return []
        with contextlib.nullcontext() if dry_run else self._locked():
            return self._prune(keep, days, dry_run)

    def _prune(self, keep: int, days: float, dry_run: bool) -> list[Removed]:
        now = time.time()
        ended = []
        for job_id, spec in self._specs(all_roots=True):
            job_dir = self.folder / job_id
            launch, status = _read(job_dir / "launch.json"), _read(job_dir / "status.json")
            state, _, status = self._state(job_id, job_dir, launch, status)
            if state in TERMINAL and not (launch and self._alive(job_id, launch)):
                ended.append((job_id, spec, status, state, max(spec.get("created", 0.0), last_change(job_dir))))
        removed = []
        for n, (job_id, spec, status, state, last) in enumerate(ended):
            if n < keep and not (days and now - last > days * 86400):
                continue
            job_dir = self.folder / job_id
            paths = tuple(p for p in (self._job_output(spec, status), job_dir) if p is not None)
            removed.append(Removed("job", job_id, paths, sum(tree_bytes(p) for p in paths),
                                   f"{spec.get('path', '?')}, {state}"))
            if not dry_run:
                for p in paths:
                    remove_tree(p)
        return removed


def run_job(job_dir: Path) -> int:
    """Body of a job process: run the notebook (or the pipeline), keep ``status.json`` current."""
    spec = _read(job_dir / "spec.json")
    status_path = job_dir / "status.json"
    status: dict[str, Any] = {"state": "running", "done": 0, "total": 0}

    def save(**changes: Any) -> None:
        status.update(changes)
        _write(status_path, status)

    save()
    if (job_dir / "cancel").exists():
        save(state="killed", error="cancelled before it started")
        return 130
    if spec.get("kind") == "pipeline":
        from .lab_pipelines import run_pipeline_job as body
    else:
        body = _run_notebook_job
    try:
        final, code = body(spec, status, save)
    except Interrupted as e:
        save(state="killed", error=f"cancelled: {e}")
        return e.exit_code
    except Cd4mlError as e:
        save(state="failed", error=str(e))
        return e.exit_code
    except BaseException as e:
        save(state="failed", error=f"{type(e).__name__}: {e}")
        raise
    save(**final)
    return code


def _run_notebook_job(spec: dict[str, Any], status: dict[str, Any], save) -> tuple[dict[str, Any], int]:
    """A notebook job: its run, with progress and the run's id saved as they come; (final status, exit code)."""
    from .runner import Callbacks, RunOptions, run_notebook

    project = Project.discover(Path.cwd())
    root = Path(spec.get("root") or project.root)
    output_root = Path(spec["output"])
    ignored_folder(output_root.parent)
    result = run_notebook(root / spec["path"], spec.get("parameters") or None, project=project,
                          options=RunOptions(progress=False, output_root=output_root),
                          callbacks=Callbacks(warn=lambda m: print(f"warning: {m}", file=sys.stderr),
                                              on_progress=lambda done, total: save(done=done, total=total),
                                              on_started=lambda run_id, experiment: save(run_id=run_id,
                                                                                         experiment=experiment)))
    state = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}[result.status]
    return {"state": state, "run_id": result.run_id, "experiment": result.experiment_id, "error": result.error,
            "metrics": result.metrics, "executed": _relative(root, result.executed) if result.executed else None,
            "html": _relative(root, result.html) if result.html else None}, result.exit_code


if __name__ == "__main__":
    from .notebooks import skip_iri_grammar

    skip_iri_grammar()
    sys.exit(run_job(Path(sys.argv[1])))
