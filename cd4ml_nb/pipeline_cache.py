"""The cache of pipeline steps: a step's key, the runs that match it, and why a step would run.

A step's key is the hash of its text side (the ``.py`` of its pair, or the notebook's code when
unpaired), its resolved parameters, the content of its inputs (declared, and the outputs of the
steps it needs) and the environment its kernel runs (:func:`.axes.environment_hash`). A step run
records its key and what makes it (``cd4ml.cache.*``), and, once FINISHED, the hashes of the outputs
it wrote. A step whose key matches a FINISHED step run of this branch or the base branch, whose
outputs are still on disk with the recorded hashes, is a cache hit: it is not executed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import history

STEP = history.STEP_NAME
KEY = "cd4ml.cache.key"
HIT = "cd4ml.cache.hit"  # the run whose execution a cache hit stands for
CODE = "cd4ml.cache.code"
PARAMS = "cd4ml.cache.params"
INPUTS = "cd4ml.cache.inputs"
ENV = "cd4ml.cache.env"
OUTPUTS = "cd4ml.cache.outputs"
MISSING = "missing"
CANDIDATES = 50  # recent FINISHED runs of a step looked at, per experiment
CHUNK = 1 << 20


def content_digest(root: Path, rel: str) -> str:
    """SHA-256 of a file's bytes; of a folder's files (names and contents); ``missing`` when absent."""
    path = root / rel
    if path.is_file():
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{child.relative_to(path).as_posix()}\0{content_digest(path, str(child.relative_to(path)))}\n"
                     .encode())
        return "dir:" + h.hexdigest()
    return MISSING


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True)
class Key:
    """What a step's result depends on, and its digest."""

    step: str
    notebook: str
    code: str  # SHA-256 of the text side
    params: str  # the resolved parameters, as JSON
    inputs: tuple[tuple[str, str], ...]  # (path, content digest)
    env: str  # environment hash of the step's kernel

    @property
    def digest(self) -> str:
        return hashlib.sha256(_json([self.step, self.notebook, self.code, self.params, list(self.inputs),
                                     self.env]).encode()).hexdigest()

    def tags(self) -> dict[str, str]:
        """The tags a step run records its key with."""
        return {STEP: self.step, KEY: self.digest, CODE: self.code, PARAMS: self.params,
                INPUTS: _json(dict(self.inputs)), ENV: self.env}


def _installed() -> str:
    """Python and the distributions on ``sys.path`` (their ``*.dist-info`` folders name each version),
    read from the folder listings: what :func:`.axes.describe_interpreter` reads from each
    distribution's metadata, at a hundredth of the cost."""
    import os
    import platform
    import sys

    names: set[str] = set()
    for entry in dict.fromkeys(sys.path):
        try:
            names.update(n.lower() for n in os.listdir(entry or ".") if n.endswith((".dist-info", ".egg-info")))
        except OSError:  # a sys.path entry that is no folder (a zip) or is gone: nothing installed there
            continue
    text = _json([platform.python_implementation(), platform.python_version(), sorted(names)])
    return "local:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def environment_of(kernel: str) -> str:
    """The environment fingerprint of a kernel: its Python and installed distributions. A kernel on
    this interpreter is read from the folders; another interpreter as ``cd4ml.env.hash`` records it."""
    from .axes import environment, environment_hash, is_this_interpreter, kernel_interpreter

    interp = kernel_interpreter(kernel)
    if interp.problem is None and interp.executable and is_this_interpreter(interp.executable):
        return _installed()
    return environment_hash({**environment(kernel), "kernel": kernel})


def key_of(root: Path, step, inputs: Iterable[str], env: str) -> Key:
    """The key of ``step`` (a :class:`.pipeline.Step`) with ``inputs`` as they are on disk now."""
    return Key(step.name, step.identity, step.code_sha256, _json(step.parameters),
               tuple((rel, content_digest(root, rel)) for rel in inputs), env)


def outputs_of(root: Path, outputs: Iterable[str]) -> dict[str, str]:
    """The content digest of each output (``missing`` for those absent)."""
    return {rel: content_digest(root, rel) for rel in outputs}


def outputs_intact(root: Path, run) -> str | None:
    """Why a run's recorded outputs cannot be reused (None when every one is on disk unchanged)."""
    recorded = run.data.tags.get(OUTPUTS)
    if recorded is None:
        return "its outputs were not recorded"
    for rel, digest in json.loads(recorded).items():
        now = content_digest(root, rel)
        if now == MISSING:
            return f"output {rel} is missing"
        if now != digest:
            return f"output {rel} changed since run {run.info.run_id[:12]}"
    return None


def candidates(c, experiment_ids: list[str], step: str) -> list:
    """FINISHED step runs of ``step`` in these experiments, this branch's first, each newest first."""
    found: list = []
    for experiment_id in experiment_ids:
        page = c.search_runs([experiment_id], filter_string=(
            f"tags.`{history.KIND}` = '{history.STEP}' AND tags.`{STEP}` = '{step}' "
            "AND attributes.status = 'FINISHED'"), max_results=CANDIDATES, order_by=["attributes.start_time DESC"])
        found += list(page)
    return found


def find_hit(root: Path, key: Key, runs: list) -> Any | None:
    """The first run of ``runs`` with this key whose outputs are intact, else None."""
    digest = key.digest
    for run in runs:
        if run.data.tags.get(KEY) == digest and outputs_intact(root, run) is None:
            return run
    return None


def origin(run) -> str:
    """The run that executed what ``run`` holds (itself, or the run a cache hit stands for)."""
    return run.data.tags.get(HIT) or run.info.run_id


def why_stale(root: Path, key: Key, runs: list) -> str:
    """Why a step with this key would run, against the newest FINISHED run of the step."""
    if not runs:
        return "never ran (no FINISHED run of this step on this branch or the base branch)"
    last = runs[0]
    tags, ref = last.data.tags, last.info.run_id[:12]
    if tags.get(KEY) == key.digest:
        return outputs_intact(root, last) or f"its key matches run {ref}"
    reasons = []
    if tags.get(CODE) != key.code:
        reasons.append(f"code of {key.notebook} changed")
    if tags.get(PARAMS) != key.params:
        before = json.loads(tags.get(PARAMS) or "{}")
        now = json.loads(key.params)
        names = history.parameters_differ({k: _json(v) for k, v in before.items()},
                                          {k: _json(v) for k, v in now.items()})
        reasons.append(f"parameter(s) {', '.join(names)} changed")
    recorded = json.loads(tags.get(INPUTS) or "{}")
    for rel, digest in key.inputs:
        if recorded.get(rel) != digest:
            what = "missing" if digest == MISSING else "new" if rel not in recorded else "changed"
            reasons.append(f"input {rel} {what}")
    reasons += [f"input {rel} no longer read" for rel in recorded if rel not in dict(key.inputs)]
    if tags.get(ENV) != key.env:
        reasons.append("the kernel's environment changed")
    return "; ".join(reasons) + f" (since run {ref})" if reasons else f"its key differs from run {ref}"
