"""The environment and model axes of a run, recorded after it ends: what the kernel's interpreter
had installed (``environment.json``, ``cd4ml.env.*``) and a hash of the model it logged."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ENV_HASH = "cd4ml.env.hash"
ENV_PYTHON = "cd4ml.env.python"
ENV_INTERPRETER = "cd4ml.env.interpreter"
ENV_NOT_INSPECTED = "cd4ml.env.not_inspected"
MODEL_HASH = "cd4ml.model.hash"
ENV_ARTIFACT = "environment.json"
PROBE_TIMEOUT = 60.0  # seconds another interpreter may take to describe itself


def describe_interpreter():
    """Python version, platform and installed distributions of the running interpreter.

    Self-contained (no annotations, imports inside): its source also runs in other interpreters."""
    import importlib.metadata
    import platform
    import sys

    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower().replace("_", "-")] = dist.version
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "executable": sys.executable, "prefix": sys.prefix,
            "packages": dict(sorted(packages.items()))}


@functools.lru_cache(maxsize=1)
def _this_environment() -> dict[str, Any]:
    return {**describe_interpreter(), "inspected": "in-process"}


@dataclass(frozen=True)
class KernelInterpreter:
    """What a kernelspec says about the program its kernel runs."""

    kernel: str
    language: str | None = None
    executable: str | None = None  # absolute path of argv[0], when it was found
    env: tuple[tuple[str, str], ...] = ()  # the kernelspec's own environment variables
    problem: str | None = None  # why its environment cannot be inspected

    @property
    def is_python(self) -> bool:
        return (self.language or "").lower().startswith("python")


def _venv_root(executable: str) -> str | None:
    """The virtual environment an interpreter path belongs to (PEP 405: ``pyvenv.cfg`` beside it or one up)."""
    here = Path(os.path.abspath(executable)).parent
    return next((str(d.resolve()) for d in (here, here.parent) if (d / "pyvenv.cfg").is_file()), None)


def is_this_interpreter(executable: str) -> bool:
    """Whether ``executable`` runs this process's environment: same binary and same venv (a venv's
    ``python`` is a symlink to its base interpreter, so realpaths alone cannot tell)."""
    if not sys.executable:
        return False
    return (os.path.realpath(executable) == os.path.realpath(sys.executable)
            and _venv_root(executable) == _venv_root(sys.executable))


def kernel_interpreter(kernel: str) -> KernelInterpreter:
    """Resolve a kernel name to its interpreter as jupyter_client would launch it."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        return KernelInterpreter(kernel, problem=f"kernel {kernel!r} is not installed")
    env = tuple(sorted((str(k), str(v)) for k, v in (spec.env or {}).items()))
    if not spec.argv:
        return KernelInterpreter(kernel, spec.language, env=env, problem="its kernelspec has no argv")
    program = spec.argv[0].replace("{resource_dir}", spec.resource_dir or "")
    major, minor = sys.version_info[:2]
    if program in ("python", f"python{major}", f"python{major}.{minor}"):  # jupyter_client launches sys.executable
        program = sys.executable
    found = shutil.which(program)
    if found is None:
        return KernelInterpreter(kernel, spec.language, env=env, problem=f"{program}: no such program")
    interp = KernelInterpreter(kernel, spec.language, os.path.abspath(found), env)
    if not interp.is_python:
        return KernelInterpreter(kernel, spec.language, interp.executable, env,
                                 f"a {spec.language or 'non-Python'} kernel: packages are not inspected")
    return interp


def _not_inspected(interp: KernelInterpreter, reason: str) -> dict[str, Any]:
    return {"python": None, "packages": {}, "language": interp.language, "executable": interp.executable,
            "inspected": False, "not_inspected": reason}


def _probe(interp: KernelInterpreter) -> dict[str, Any]:
    """Describe another Python interpreter by running it once."""
    try:
        code = f"import json\n{inspect.getsource(describe_interpreter)}\nprint(json.dumps(describe_interpreter()))"
        done = subprocess.run([interp.executable, "-c", code], env={**os.environ, **dict(interp.env)},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return _not_inspected(interp, f"{interp.executable} did not answer within {PROBE_TIMEOUT:g} s")
    except OSError as e:
        return _not_inspected(interp, f"{interp.executable}: {e.strerror or e}")
    try:
        described = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (IndexError, ValueError):
        described = None
    if not isinstance(described, dict):
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return _not_inspected(interp, f"{interp.executable} could not describe itself: {last}")
    return {**described, "language": interp.language, "inspected": "subprocess"}


_probed: dict[tuple, dict[str, Any]] = {}
_probe_locks: dict[tuple, threading.Lock] = {}
_probe_guard = threading.Lock()


def _probe_cached(interp: KernelInterpreter) -> dict[str, Any]:
    """:func:`_probe`, once per interpreter path (and kernelspec environment) in this process."""
    key = (interp.executable, interp.env)
    with _probe_guard:
        lock = _probe_locks.setdefault(key, threading.Lock())
    with lock:  # a second caller waits for the first probe instead of starting its own
        if key not in _probed:
            _probed[key] = _probe(interp)
        return _probed[key]


def environment(kernel: str | None = None) -> dict[str, Any]:
    """Python version, platform and installed package versions of the interpreter ``kernel`` runs
    (without a kernel: of this process). Another interpreter is run once, in a subprocess, and
    remembered; a kernel that cannot be inspected is described as far as known, with the reason
    under ``not_inspected``. Never raises for a kernel; the dict returned is shared: copy to change."""
    if kernel is None:
        return _this_environment()
    interp = kernel_interpreter(kernel)
    if interp.problem:
        return _not_inspected(interp, interp.problem)
    if is_this_interpreter(interp.executable):
        return {**_this_environment(), "language": interp.language}
    return _probe_cached(interp)


def environment_hash(env: dict[str, Any]) -> str:
    """Hash of the Python version and packages; of the kernel and program when not inspected."""
    key = {"python": env["python"], "packages": env["packages"]}
    if env.get("inspected") is False:
        key.update(language=env.get("language"), executable=env.get("executable"), kernel=env.get("kernel"))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def model_hash(c, run) -> str | None:
    """SHA-256 over the files of the run's logged model(s) when stored locally, else None.

    ``MLmodel`` is left out: it names the run, the model id and the creation time."""
    models = c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    h, found = hashlib.sha256(), False
    for model in sorted(models, key=lambda m: m.name):
        location = urlparse(model.artifact_location or "")
        if location.scheme != "file":
            continue
        root = Path(unquote(location.path))
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MLmodel"):
            h.update(f"{model.name}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
            found = True
    return h.hexdigest()[:16] if found else None


def record_axes(c, run_id: str, out_dir: Path, kernel: str | None) -> dict[str, str]:
    """Log ``environment.json`` (of the interpreter ``kernel`` ran) and return the environment and
    model tags for the run."""
    env = {**environment(kernel), "kernel": kernel}
    path = out_dir / ENV_ARTIFACT
    path.write_text(json.dumps(env, indent=1), encoding="utf-8")
    c.log_artifact(run_id, str(path))
    tags = {ENV_HASH: environment_hash(env)}
    tags.update({tag: str(env[key]) for tag, key in ((ENV_PYTHON, "python"), (ENV_INTERPRETER, "executable"),
                                                   (ENV_NOT_INSPECTED, "not_inspected")) if env.get(key)})
    digest = model_hash(c, c.get_run(run_id))
    if digest:
        tags[MODEL_HASH] = digest
    return tags
