"""Notebook pipelines: the pipeline file (``cd4ml-pipeline.yaml``), its validation and its DAG.

The file names steps, each a notebook (either side of a pair) with its parameters, the steps it
``needs``, the files it reads (``inputs``) and writes (``outputs``), paths relative to the project
root::

    steps:
      prep:
        notebook: prep.ipynb
        parameters: {rows: 500}
        outputs: [data/clean.csv]
      train:
        notebook: train.ipynb
        needs: [prep]
        inputs: [data/clean.csv]
        outputs: [model.pkl]

Everything is checked before any kernel starts (:func:`load`): unknown keys, cycles, a missing
notebook, a ``needs`` naming no step, an output claimed by two steps, parameters the notebook does
not declare. A problem is a :class:`.BadInput` in one line naming the file, the step and the problem.
Running the steps is :mod:`.pipeline_run`; their cache keys are :mod:`.pipeline_cache`.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .exceptions import BadInput, NotFound
from .project import Project

PIPELINE_FILE = "cd4ml-pipeline.yaml"
TOP_KEYS = ("steps",)
STEP_KEYS = ("notebook", "needs", "inputs", "outputs", "parameters")
STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Step:
    """One step: its notebook, resolved and read, its validated parameters and its files."""

    name: str
    notebook: str  # project-relative path of the side named in the file
    identity: str  # the notebook's canonical name (the .ipynb of its pair)
    code_sha256: str  # of its text side: the paired .py, or the notebook's code when unpaired
    kernel: str
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)  # typed, checked against the contract
    needs: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # as declared
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline: its steps in an order where every step follows what it needs."""

    file: str  # as given, for messages
    root: Path
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        """The step called ``name`` (BadInput naming the steps when there is none)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise BadInput(f"{self.file}: no step {name!r} (steps: {', '.join(s.name for s in self.steps)})")

    def inputs_of(self, step: Step) -> tuple[str, ...]:
        """What a step reads: its declared inputs and the outputs of the steps it needs."""
        found = list(step.inputs)
        for need in step.needs:
            found += [p for p in self.step(need).outputs if p not in found]
        return tuple(found)

    def upstream(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """``names`` and every step they need, directly or not, in pipeline order."""
        wanted: set[str] = set()
        todo = [self.step(n).name for n in names]
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo += list(self.step(name).needs)
        return tuple(s.name for s in self.steps if s.name in wanted)

    @property
    def last(self) -> Step:
        """The pipeline's last step: the last, in pipeline order, that no other step needs."""
        needed = {n for s in self.steps for n in s.needs}
        return [s for s in self.steps if s.name not in needed][-1]

    def selected(self, names: tuple[str, ...] = ()) -> tuple[Step, ...]:
        """The steps a run of ``names`` covers (every step when none is named)."""
        keep = set(self.upstream(names)) if names else {s.name for s in self.steps}
        return tuple(s for s in self.steps if s.name in keep)


def find_file(start: Path | str = ".", given: str | None = None) -> Path:
    """The pipeline file: ``given``, else ``cd4ml-pipeline.yaml`` at the project root."""
    if given:
        return Path(given).resolve()
    return Project.discover(start).root / PIPELINE_FILE


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{where}: '{key}' must be a list of names")
    if len(set(value)) != len(value):
        raise BadInput(f"{where}: '{key}' lists {sorted({v for v in value if value.count(v) > 1})} twice")
    return tuple(value)


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise NotFound(f"{label}: no pipeline file (write one with a 'steps:' mapping, or pass -f PATH)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BadInput(f"{label}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{label}: not UTF-8 text ({e.reason})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{label}: expected a mapping with 'steps'")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
    if unknown:
        raise BadInput(f"{label}: unknown key(s) {unknown}; a pipeline file has {', '.join(TOP_KEYS)}")
    steps = data.get("steps")
    if not isinstance(steps, dict) or not steps:
        raise BadInput(f"{label}: 'steps' must map step names to steps")
    return steps


@dataclass(frozen=True)
class _Declared:
    """A step as written, its structure checked."""

    name: str
    notebook: str
    needs: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    parameters: dict[str, Any]


def _declared(name: Any, spec: Any, label: str, project: Project) -> _Declared:
    where = f"{label}: step {name!r}"
    if not isinstance(name, str) or not STEP_NAME.fullmatch(name):
        raise BadInput(f"{where}: a step name is letters, digits, '_' and '-'")
    if not isinstance(spec, dict):
        raise BadInput(f"{where}: expected a mapping with 'notebook'")
    unknown = sorted(str(k) for k in spec if k not in STEP_KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {unknown}; a step has {', '.join(STEP_KEYS)}")
    notebook = spec.get("notebook")
    if not isinstance(notebook, str) or not notebook:
        raise BadInput(f"{where}: 'notebook' must name a notebook")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadInput(f"{where}: 'parameters' must map names to values")
    files = {}
    for key in ("inputs", "outputs"):
        listed = _strings(spec.get(key), where, key)
        for rel in listed:
            try:
                project.confine(rel, allow_hidden=True)
            except BadInput as e:
                raise BadInput(f"{where}: {key}: {e}") from None
        files[key] = tuple(Path(rel).as_posix() for rel in listed)
    return _Declared(name, notebook, _strings(spec.get("needs"), where, "needs"), files["inputs"],
                     files["outputs"], dict(parameters))


def _ordered(declared: list[_Declared], label: str) -> list[_Declared]:
    """The steps, each after what it needs (file order otherwise); a cycle is named."""
    by_name = {d.name: d for d in declared}
    for d in declared:
        for need in d.needs:
            if need not in by_name:
                raise BadInput(f"{label}: step {d.name!r}: needs {need!r}, which is no step "
                               f"(steps: {', '.join(by_name)})")
            if need == d.name:
                raise BadInput(f"{label}: step {d.name!r}: needs itself")
    owner: dict[str, str] = {}
    for d in declared:
        for out in d.outputs:
            if out in owner:
                raise BadInput(f"{label}: step {d.name!r}: output {out} is also claimed by step {owner[out]!r}")
            owner[out] = d.name
    state: dict[str, int] = {}  # 1 visiting, 2 done
    order: list[_Declared] = []

    def visit(d: _Declared, path: list[str]) -> None:
        if state.get(d.name) == 2:
            return
        if state.get(d.name) == 1:
            cycle = path[path.index(d.name):] + [d.name]
            raise BadInput(f"{label}: step {d.name!r}: cycle {' -> '.join(cycle)}")
        state[d.name] = 1
        for need in d.needs:
            visit(by_name[need], path + [d.name])
        state[d.name] = 2
        order.append(d)

    for d in declared:
        visit(d, [])
    return order


def _step(d: _Declared, label: str, project: Project, texts: Mapping[str, str],
          warn: Callable[[str], None]) -> Step:
    """Read the step's notebook and check its parameters against the notebook's contract."""
    from . import kernels, notebooks, pairing, params

    where = f"{label}: step {d.name!r}"
    path = project.root / d.notebook
    if not path.is_file():
        raise NotFound(f"{where}: notebook {d.notebook} does not exist")
    try:
        project.confine(path)
        nb = notebooks.read(path.resolve())
        pair = pairing.find_pair(nb.path, project, node=nb.node)
        pairing.ensure_in_sync(pair, project, nb.path)
        contract = params.read_contract(nb.node, d.notebook)
        values = params.validate(contract, dict(texts), d.parameters, where=d.notebook)
        kernel = kernels.kernel_name(project, nb, warn)
    except BadInput as e:
        raise type(e)(f"{where}: {' '.join(str(e).split())}") from None
    if pair is not None:
        code = pair.text.read_text(encoding="utf-8")
    else:
        code = nb.path.read_text(encoding="utf-8") if not nb.is_ipynb else notebooks.text_of(nb.node)
    identity = project.relative(pair.ipynb if pair is not None else nb.path)
    return Step(d.name, project.relative(nb.path), identity, hashlib.sha256(code.encode("utf-8")).hexdigest(),
                kernel, values, d.needs, d.inputs, d.outputs)


def load_if_present(project: Project, given: str | None = None) -> Pipeline | None:
    """The project's pipeline (``given``, else ``cd4ml-pipeline.yaml`` at the root), or None when
    no file was given and the root has none."""
    path = Path(given).resolve() if given else project.root / PIPELINE_FILE
    if not given and not path.is_file():
        return None
    return load(path, project)


def assessed_step(project: Project, name: str | None, given: str | None = None) -> str | None:
    """The step ``--step`` names for an assessment: ``name`` (checked against the pipeline file when
    there is one), or with an empty name the pipeline's last step; None without ``--step``."""
    if name is None:
        return None
    pipe = load_if_present(project, given)
    if pipe is None:
        if not name:
            raise BadInput(f"--step without a name reads the last step of {PIPELINE_FILE}, and "
                           f"{project.root / PIPELINE_FILE} does not exist: name the step (--step NAME)")
        return name
    return pipe.step(name).name if name else pipe.last.name


def load(path: Path, project: Project, overrides: Mapping[str, Mapping[str, str]] | None = None,
         warn: Callable[[str], None] | None = None) -> Pipeline:
    """Read and validate the pipeline file at ``path``; ``overrides`` are ``-p STEP.NAME VALUE``
    texts by step. Raises BadInput (one line: the file, the step, the problem) before anything runs."""
    label = project.relative(path)
    raw = _read_yaml(path, label)
    declared = [_declared(name, spec, label, project) for name, spec in raw.items()]
    ordered = _ordered(declared, label)
    names = {d.name for d in declared}
    for step_name, values in (overrides or {}).items():
        if step_name not in names:
            first = next(iter(values), "NAME")
            raise BadInput(f"{label}: -p {step_name}.{first}: no step {step_name!r} (steps: {', '.join(names)})")
    steps = tuple(_step(d, label, project, (overrides or {}).get(d.name, {}), warn or (lambda m: None))
                  for d in ordered)
    return Pipeline(label, project.root, steps)


def parse_overrides(pairs: list[list[str]] | None) -> dict[str, dict[str, str]]:
    """``-p STEP.NAME VALUE`` pairs by step (BadInput for a name without a step)."""
    found: dict[str, dict[str, str]] = {}
    for target, value in pairs or []:
        step, dot, name = target.partition(".")
        if not dot or not step or not name:
            raise BadInput(f"-p {target}: use -p STEP.NAME VALUE")
        found.setdefault(step, {})[name] = value
    return found
