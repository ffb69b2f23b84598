"""The parameter contract of a notebook and validation of requested values against it.

The contract comes from the code cell tagged ``parameters`` (as in Papermill)::

    max_depth: int = 5      # depth of each tree
    model = "decision_tree" # type inferred from the default: str
    extra = None            # no annotation and a None default: takes any value

Values are checked *before* any kernel starts; only declared identifiers are accepted.
"""
from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .exceptions import NotebookError, ParameterError

SCALAR_TYPES = ("int", "float", "str", "bool")
CONTAINER_TYPES = ("list", "dict")
ANY = "any"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~"}


@dataclass(frozen=True)
class Parameter:
    """One declared parameter: ``type`` is int, float, str, bool, list, dict, list[T] or any."""

    name: str
    type: str
    default: Any
    help: str = ""
    nullable: bool = False
    expression: str | None = None  # source of a default that is not a literal

    def describe(self) -> str:
        default = self.expression if self.expression is not None else repr(self.default)
        return f"{self.name} ({self.type}{' or None' if self.nullable else ''}, default {default})"

    def to_json(self) -> dict:
        data = asdict(self)
        if self.expression is not None:
            data["default"] = self.expression
        return data


@dataclass(frozen=True)
class Contract:
    """The parameters a notebook declares, in cell order."""

    parameters: tuple[Parameter, ...]
    cell_index: int | None  # index of the `parameters` cell, None when there is none
    notes: tuple[str, ...] = ()  # lines of the cell that could not be read (the rest still counts)

    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def get(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def describe(self) -> str:
        if not self.parameters:
            return "none"
        return ", ".join(p.describe() for p in self.parameters)

    def to_json(self) -> dict:
        return {"cell_index": self.cell_index, "parameters": [p.to_json() for p in self.parameters],
                "notes": list(self.notes)}


# --- reading the contract ---------------------------------------------------------------------


def _annotation_type(node: ast.expr) -> tuple[str, bool]:
    """Map an annotation to (type, nullable)."""
    if isinstance(node, ast.Constant) and node.value is None:
        return ANY, True
    if isinstance(node, ast.Name):
        name = node.id
        if name in SCALAR_TYPES + CONTAINER_TYPES:
            return name, False
        if name in ("Any", "object"):
            return ANY, False
        if name in ("List", "Dict"):
            return name.lower(), False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
        left, right = node.left, node.right
        if isinstance(right, ast.Constant) and right.value is None:
            return _annotation_type(left)[0], True
        if isinstance(left, ast.Constant) and left.value is None:
            return _annotation_type(right)[0], True
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        outer = node.value.id
        if outer == "Optional":
            return _annotation_type(node.slice)[0], True
        if outer in ("list", "List"):
            inner, _ = _annotation_type(node.slice)
            return (f"list[{inner}]" if inner in SCALAR_TYPES else "list"), False
        if outer in ("dict", "Dict"):
            return "dict", False
    return ANY, False


def _infer_type(value: Any) -> str:
    for typ in (bool, int, float, str, list, dict):  # bool before int: True is an int
        if isinstance(value, typ):
            return typ.__name__
    return ANY


def _comments(source: str) -> dict[int, str]:
    """Comment text by line number."""
    found: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                found[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return found


def _help_for(stmt: ast.stmt, comments: dict[int, str], lines: list[str]) -> str:
    end = stmt.end_lineno or stmt.lineno
    if end in comments:
        return comments[end]
    above = []
    line = stmt.lineno - 1
    while line >= 1 and line in comments and lines[line - 1].lstrip().startswith("#"):
        above.insert(0, comments[line])
        line -= 1
    return " ".join(above)


def _statements(source: str) -> tuple[list[ast.stmt], list[str]]:
    """The statements of ``source`` that parse, and a note for each line skipped because it does
    not (papermill infers the rest of such a cell too). Line numbers stay those of ``source``."""
    lines = source.splitlines(keepends=True)
    body: list[ast.stmt] = []
    notes: list[str] = []
    start = 0
    while start < len(lines):
        try:
            tree = ast.parse("".join(lines[start:]))
        except SyntaxError as e:
            bad = start + max(1, min(e.lineno or 1, len(lines) - start)) - 1
            try:
                head = ast.parse("".join(lines[start:bad]))
            except SyntaxError:  # the bad line ends a statement begun above: skip it all
                head, bad = ast.Module(body=[], type_ignores=[]), bad
                notes += [f"line {n + 1}: cannot be read ({e.msg})" for n in range(start, bad)]
            body += [ast.increment_lineno(stmt, start) for stmt in head.body]
            notes.append(f"line {bad + 1}: cannot be read ({e.msg})")
            start = bad + 1
            continue
        body += [ast.increment_lineno(stmt, start) for stmt in tree.body]
        break
    return body, notes


def parse_cell(source: str, where: str = "parameters cell") -> tuple[Parameter, ...]:
    """Parameters declared by the source of a parameters cell (see :func:`read_contract`)."""
    return _parse(source)[0]


def _parse(source: str) -> tuple[tuple[Parameter, ...], list[str]]:
    body, notes = _statements(source)
    comments = _comments(source)
    lines = source.splitlines()
    found: dict[str, Parameter] = {}
    for stmt in body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name, value_node = stmt.target.id, stmt.value
            typ, nullable = _annotation_type(stmt.annotation)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value_node = stmt.targets[0].id, stmt.value
            typ, nullable = None, False
        else:
            continue
        expression = None
        default: Any = None
        if value_node is not None:
            try:
                default = ast.literal_eval(value_node)
            except ValueError:
                expression = ast.get_source_segment(source, value_node)
        if typ is None:
            if expression is not None:
                typ = ANY
            elif default is None:
                typ, nullable = ANY, True
            else:
                typ = _infer_type(default)
        elif default is None and expression is None:
            nullable = True
        found[name] = Parameter(name, typ, default, _help_for(stmt, comments, lines), nullable, expression)
    return tuple(found.values()), notes


def read_contract(node: Any, path: Path | str = "notebook") -> Contract:
    """The contract of a notebook node; at most one code cell may be tagged ``parameters``."""
    tagged = [
        i for i, cell in enumerate(node.cells)
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    if not tagged:
        return Contract(parameters=(), cell_index=None)
    if len(tagged) > 1:
        raise NotebookError(f"{path}: {len(tagged)} cells are tagged 'parameters' (cells {tagged}); keep one")
    index = tagged[0]
    params, notes = _parse(node.cells[index].source)
    return Contract(parameters=params, cell_index=index, notes=tuple(notes))


# --- validating values ------------------------------------------------------------------------


def _from_text(param: Parameter, text: str) -> Any:
    """Coerce a command-line string to the parameter's type (ValueError when it does not fit)."""
    import yaml

    typ = param.type
    if typ == ANY:  # no type to convert to: the value as papermill reads it
        return papermill_value(text)
    if param.nullable and text.strip().lower() in _NULL:
        return None
    if typ == "str":
        return text
    if typ == "int":
        return int(text.strip())
    if typ == "float":
        return float(text.strip())
    if typ == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"not a YAML/JSON {typ}") from None
    return _check(param, value)


def papermill_value(text: str) -> Any:
    """A ``-p`` value read as papermill reads it: ``True``, ``False``, ``None``, an int, a float,
    otherwise the text as given (quotes and brackets included)."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _check(param: Parameter, value: Any) -> Any:
    """Check an already-typed value (from YAML or JSON) against the parameter's type."""
    typ = param.type
    if value is None:
        if param.nullable or typ == ANY:
            return None
        raise ValueError("null is not allowed")
    if typ == ANY:
        return value
    if typ == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError("expected true or false")
    if isinstance(value, bool):
        raise ValueError(f"expected {typ}, got a boolean")
    if typ == "int" and isinstance(value, int):
        return value
    if typ == "float" and isinstance(value, (int, float)):
        return float(value)
    if typ == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r} (quote it)")
    if typ == "dict" and isinstance(value, dict):
        return value
    if typ.startswith("list") and isinstance(value, list):
        if typ != "list":
            inner = Parameter(param.name, typ[5:-1], None)
            return [_check(inner, item) for item in value]
        return value
    raise ValueError(f"expected {typ}, got {type(value).__name__}")


def validate(
    contract: Contract,
    texts: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    where: str = "notebook",
) -> dict[str, Any]:
    """Typed values for the requested parameters, or ParameterError listing every problem.

    ``texts`` are command-line strings (coerced); ``values`` come typed from YAML/JSON (checked;
    a string for a non-string parameter is coerced like a command-line value). Texts win.
    """
    if contract.notes:  # the cell itself cannot execute: no kernel for it
        raise NotebookError(f"{where}: parameters cell (cell {contract.cell_index}), {contract.notes[0]}: "
                            "the cell cannot run; fix it (`cd4ml-nb params` shows what can be read)")
    requested: dict[str, tuple[str, Any]] = {}
    for name, value in (values or {}).items():
        requested[str(name)] = ("value", value)
    for name, text in (texts or {}).items():
        requested[name] = ("text", text)
    if not requested:
        return {}
    if contract.cell_index is None:
        raise ParameterError(
            f"{where}: has no cell tagged 'parameters', so it takes no parameters "
            f"(got {', '.join(sorted(requested))}); tag the cell that sets defaults 'parameters'"
        )
    problems, result = [], {}
    for name, (kind, raw) in requested.items():
        param = contract.get(name)
        if param is None:
            problems.append(f"unknown parameter {name!r}")
            continue
        try:
            if kind == "text" or (isinstance(raw, str) and param.type not in ("str", ANY)):
                result[name] = _from_text(param, raw)
            else:
                result[name] = _check(param, raw)
        except ValueError as e:
            detail = str(e).split("\n")[0]
            problems.append(f"{name}={raw!r} does not fit {param.type}: {detail}")
    problems += [f"{name}: {problem}" for name, value in result.items() if (problem := _text_problem(value))]
    if problems:
        raise ParameterError(f"{where}: {'; '.join(problems)}. Declared parameters: {contract.describe()}")
    return result


def _text_problem(value: Any) -> str | None:
    """Why a (possibly nested) value cannot be written as UTF-8 (a lone surrogate), else None."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is not None:
        return next((p for k, v in items for p in (_text_problem(k) if isinstance(k, str) else None,
                                                   _text_problem(v)) if p), None)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"not valid Unicode text (a lone surrogate {value[e.start]!r} at position {e.start})"
    return None


def as_run(contract: Contract, values: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Every value a run executes with (the requested ones, the declared defaults for the rest, a
    non-literal default as its source text) and the names left at their defaults."""
    defaults = tuple(p.name for p in contract.parameters if p.name not in values)
    recorded = {p.name: values[p.name] if p.name in values else p.expression if p.expression is not None
                else p.default for p in contract.parameters}
    return recorded, defaults


def load_values_file(path: Path) -> dict[str, Any]:
    """Parameter values from a YAML or JSON file (a mapping of name to value)."""
    import yaml

    if not path.is_file():
        raise ParameterError(f"{path}: no such parameters file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ParameterError(f"{path}: not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter names to values")
    return data


# --- the contract as JSON Schema (what the Lab form renders) ----------------------------------

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "list": "array",
               "dict": "object"}


def _type_schema(typ: str) -> dict[str, Any]:
    if typ.startswith("list[") and typ.endswith("]"):
        return {"type": "array", "items": _type_schema(typ[5:-1])}
    return {"type": _JSON_TYPES[typ]} if typ in _JSON_TYPES else {}


def json_schema(contract: Contract) -> dict[str, Any]:
    """The contract as a JSON Schema (draft 2020-12) object: one property per parameter, in cell order.

    ``x-cd4ml-type`` keeps the declared type; a default that is not a literal is ``x-cd4ml-expression``.
    """
    properties: dict[str, Any] = {}
    for p in contract.parameters:
        schema = _type_schema(p.type)
        if p.nullable and "type" in schema:
            schema = {"anyOf": [schema, {"type": "null"}]}
        schema.update({"title": p.name, "x-cd4ml-type": p.type, "x-cd4ml-nullable": p.nullable})
        if p.help:
            schema["description"] = p.help
        if p.expression is not None:
            schema["x-cd4ml-expression"] = p.expression
        else:
            schema["default"] = p.default
        properties[p.name] = schema
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": properties, "additionalProperties": False, "x-cd4ml-order": contract.names()}


def check_texts(contract: Contract, texts: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values of the fields that fit, and a short reason per field that does not (as typed in a form)."""
    values, errors = {}, {}
    for name, text in texts.items():
        param = contract.get(name)
        if param is None:
            errors[name] = "not a declared parameter"
            continue
        try:
            value = _from_text(param, text)
        except ValueError as e:
            errors[name] = f"{text!r} is not {_described_type(param)} ({str(e).splitlines()[0][:120]})"
            continue
        problem = _text_problem(value)
        if problem:
            errors[name] = problem
        else:
            values[name] = value
    return values, errors


def _described_type(param: Parameter) -> str:
    names = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text",
             "dict": "a mapping (YAML/JSON)", "list": "a list (YAML/JSON)"}
    shown = names.get(param.type, f"a {param.type} (YAML/JSON)")
    return f"{shown} or null" if param.nullable else shown
