"""Background notebook jobs (for the JupyterLab extension): each run in its own process.

A job is a folder ``<state_dir>/jobs/<id>/``: ``spec.json`` (what to run, written on submit),
``launch.json`` (the process, written when it starts), ``status.json`` (progress and result,
written by the job process), ``cancel`` (a request to stop). State lives on disk, so a page
reload or a server restart finds the jobs again; at most ``max_jobs`` run at once, the rest
wait ``queued``. Run a job folder by hand with ``python -m cd4ml_nb.jobs JOB_DIR``.
"""
from __future__ import annotations

import json
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
from typing import Any

from . import notebooks, params
from .tracking import pid_alive
from .exceptions import BadInput, Cd4mlError, NotFound
from .project import Project

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

    def to_json(self) -> dict:
        return {
            "id": self.id, "path": self.path, "parameters": self.parameters, "state": self.state,
            "created": self.created, "progress": {"done": self.done, "total": self.total},
            "run_id": self.run_id, "experiment": self.experiment, "error": self.error,
            "executed": self.executed, "html": self.html, "metrics": self.metrics,
        }


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


class JobManager:
    """Submits, lists and cancels notebook jobs of one project."""

    def __init__(self, project: Project, limit: int | None = None) -> None:
        self.project = project
        self.limit = max(1, limit if limit is not None else project.config.max_jobs)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._loop: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self.project.state_dir / "jobs"

    def _dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id) or not (self.folder / job_id / "spec.json").is_file():
            raise NotFound(f"no job {job_id!r}")
        return self.folder / job_id

    # --- public ---------------------------------------------------------------------------

    def submit(self, path: str, values: dict[str, Any] | None = None) -> Job:
        """Validate the notebook and parameters now (BadInput lists every problem), then queue."""
        if not isinstance(values or {}, dict):
            raise BadInput("parameters must be an object of name: value")
        source = self.project.confine(path)
        nb = notebooks.read(source)
        contract = params.read_contract(nb.node, path)
        checked = params.validate(contract, values=values or {}, where=path)
        from .runner import _kernel_name

        _kernel_name(self.project, nb, lambda message: None)
        job_id = uuid.uuid4().hex[:12]
        job_dir = self.project.ensure_state_dir() / "jobs" / job_id
        job_dir.mkdir(parents=True)
        _write(job_dir / "spec.json", {"id": job_id, "path": self.project.relative(source),
                                       "parameters": checked, "created": time.time()})
        self._schedule()
        self._ensure_loop()
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        job_dir = self._dir(job_id)
        spec, launch, status = (_read(job_dir / n) for n in ("spec.json", "launch.json", "status.json"))
        state = status.get("state")
        error = status.get("error")
        if state not in TERMINAL:
            if launch:
                if not pid_alive(launch["pid"]) and job_id not in self._running_ids():
                    status = _read(job_dir / "status.json")  # it may have finished meanwhile
                    state = status.get("state")
                    if state not in TERMINAL and (job_dir / "cancel").exists():
                        state, error = "killed", "cancelled"
                    elif state not in TERMINAL:
                        state, error = "failed", "the job process exited without a result"
                else:
                    state = "running"
            elif (job_dir / "cancel").exists():
                state = "killed"
            else:
                state = "queued"
        return Job(
            id=job_id, path=spec["path"], parameters=spec.get("parameters", {}), state=state,
            created=spec.get("created", 0.0), done=status.get("done", 0), total=status.get("total", 0),
            run_id=status.get("run_id"), experiment=status.get("experiment"), error=error,
            executed=status.get("executed"), html=status.get("html"), metrics=status.get("metrics", {}),
        )

    def list(self) -> list[Job]:
        if not self.folder.is_dir():
            return []
        jobs = []
        for child in self.folder.iterdir():
            if JOB_ID.match(child.name) and (child / "spec.json").is_file():
                jobs.append(self.get(child.name))
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Stop a job: a queued one never starts; a running one's kernel stops, its run ends KILLED."""
        job_dir = self._dir(job_id)
        (job_dir / "cancel").touch()
        launch = _read(job_dir / "launch.json")
        if launch and pid_alive(launch["pid"]):
            os.kill(launch["pid"], signal.SIGTERM)
        return self.get(job_id)

    def html_path(self, job_id: str) -> Path:
        html = self.get(job_id).html
        if not html:
            raise NotFound(f"job {job_id} has no HTML render (yet)")
        return self.project.confine(html, allow_hidden=True)

    def wait(self, job_id: str, timeout: float = 300.0) -> Job:
        """Block until the job is terminal (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in TERMINAL or time.monotonic() > deadline:
                return job
            self._schedule()
            time.sleep(POLL_SECONDS)

    def shutdown(self) -> None:
        """Stop the scheduler; running jobs are cancelled."""
        self._loop = None
        for job_id in list(self._running_ids()):
            self.cancel(job_id)
        for proc in list(self._procs.values()):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    # --- scheduling -----------------------------------------------------------------------

    def _running_ids(self) -> list[str]:
        return [job_id for job_id, proc in self._procs.items() if proc.poll() is None]

    def _schedule(self) -> None:
        """Reap finished processes and start queued jobs while there is room."""
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[job_id]
            if not self.folder.is_dir():
                return
            running = sum(1 for j in self.list() if j.state == "running")
            queued = sorted((j for j in self.list() if j.state == "queued"), key=lambda j: j.created)
            for job in queued[: max(0, self.limit - running)]:
                self._start(job.id)

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
        _write(job_dir / "launch.json", {"pid": proc.pid, "started": time.time()})

    def _ensure_loop(self) -> None:
        if self._loop is not None and self._loop.is_alive():
            return

        def loop(me: threading.Thread) -> None:
            while self._loop is me:
                try:
                    self._schedule()
                except Exception:  # keep scheduling whatever one job did
                    pass
                if not self._procs and not any(j.state == "queued" for j in self.list()):
                    self._loop = None
                    return
                time.sleep(POLL_SECONDS)

        thread = threading.Thread(target=lambda: loop(thread), name="cd4ml-jobs", daemon=True)
        self._loop = thread
        thread.start()


def run_job(job_dir: Path) -> int:
    """Body of a job process: run the notebook, keep ``status.json`` current."""
    from .runner import run_notebook

    spec = _read(job_dir / "spec.json")
    status_path = job_dir / "status.json"
    status: dict[str, Any] = {"state": "running", "done": 0, "total": 0}
    _write(status_path, status)
    if (job_dir / "cancel").exists():
        _write(status_path, {**status, "state": "killed", "error": "cancelled before it started"})
        return 130
    project = Project.discover(Path.cwd())

    def progress(done: int, total: int) -> None:
        status.update(done=done, total=total)
        _write(status_path, status)

    def started(run_id: str, experiment_id: str) -> None:
        status.update(run_id=run_id, experiment=experiment_id)
        _write(status_path, status)

    try:
        result = run_notebook(project.root / spec["path"], spec.get("parameters") or None, project=project,
                              output_root=project.ensure_lab_runs_dir(),
                              progress=False, on_progress=progress, on_started=started,
                              warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    except Cd4mlError as e:
        _write(status_path, {**status, "state": "failed", "error": str(e)})
        return e.exit_code
    except BaseException as e:
        _write(status_path, {**status, "state": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    state = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}[result.status]
    _write(status_path, {
        **status, "state": state, "run_id": result.run_id, "experiment": result.experiment_id,
        "error": result.error, "metrics": result.metrics,
        "executed": project.relative(result.executed) if result.executed else None,
        "html": project.relative(result.html) if result.html else None,
    })
    return result.exit_code


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))
