"""The shape of the package's code, measured with ast: what issue #22 asks to keep at zero.

    python bench/code_shape.py [--json] [PACKAGE_DIR]

Counts: broad excepts (``except Exception``/``BaseException``/bare) and those that swallow the
error (neither raise, nor log, nor record it: no ``raise``, no logging or warning call, no use of
the caught name); modules over 600 lines; functions with more than 8 parameters; private names
(``_x``) of one module used in another; import circles (module-level and function-level imports
alike); modules that run ``git`` themselves besides the one git module.
"""
from __future__ import annotations

import ast
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_LINES, MAX_PARAMS = 600, 8
GIT_MODULE = "gitinfo"
REPORTING_CALLS = {"warning", "warn", "error", "exception", "debug", "info", "critical", "print"}


@dataclass
class Shape:
    broad_excepts: list[str] = field(default_factory=list)
    swallowing_excepts: list[str] = field(default_factory=list)
    large_modules: list[str] = field(default_factory=list)
    many_parameters: list[str] = field(default_factory=list)
    private_reach: list[str] = field(default_factory=list)
    import_circles: list[list[str]] = field(default_factory=list)
    git_callers: list[str] = field(default_factory=list)
    undocumented_modules: list[str] = field(default_factory=list)
    public_functions: int = 0
    documented_functions: int = 0

    def zeros(self) -> dict[str, int]:
        return {"swallowing broad excepts": len(self.swallowing_excepts), "modules > 600 lines": len(self.large_modules),
                "functions > 8 parameters": len(self.many_parameters),
                "cross-module private names": len(self.private_reach), "import circles": len(self.import_circles),
                "modules running git besides gitinfo": len(self.git_callers),
                "modules without a docstring": len(self.undocumented_modules)}

    @property
    def documented(self) -> float:
        """The share of public functions and methods with a docstring."""
        return self.documented_functions / self.public_functions if self.public_functions else 1.0


def _broad(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(getattr(k, "id", "") in ("Exception", "BaseException") for k in kinds)


def _swallows(handler: ast.ExceptHandler) -> bool:
    """Neither raises, nor reports (a logging/warning/print call or a ``warn``-like callback),
    nor uses the caught exception (recording it, returning it, translating it)."""
    body = ast.Module(body=handler.body, type_ignores=[])
    for node in ast.walk(body):
        if isinstance(node, ast.Raise):
            return False
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in REPORTING_CALLS or name.startswith(("warn", "log", "report", "record", "on_error")):
                return False
        if handler.name and isinstance(node, ast.Name) and node.id == handler.name:
            return False
    return True


def _imports(tree: ast.AST, package: str, module: str) -> set[str]:
    """The package's modules this module imports (anywhere in it), as dotted names under the package."""
    here = module.split(".")[:-1] if module else []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join([*base, node.module]) if node.module else None
                if target:
                    found.add(target)
                else:
                    found.update(".".join([*base, a.name]) for a in node.names)
            elif node.module and node.module.startswith(package + "."):
                found.add(node.module[len(package) + 1:])
        elif isinstance(node, ast.Import):
            found.update(a.name[len(package) + 1:] for a in node.names if a.name.startswith(package + "."))
    found.discard(module)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _module_name(folder: Path, path: Path) -> str:
    """``commands.runs`` for ``commands/runs.py``; a package's ``__init__`` is the package."""
    parts = path.relative_to(folder).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def measure(folder: Path) -> Shape:
    shape = Shape()
    package = folder.name
    trees = {_module_name(folder, p): (p, ast.parse(p.read_text(encoding="utf-8")))
             for p in sorted(folder.rglob("*.py")) if p.name != "_version.py"}
    graph = {}
    for module, (path, tree) in trees.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            shape.large_modules.append(f"{module} {lines}")
        graph[module] = _imports(tree, package, module)
        if not ast.get_docstring(tree) and path.name != "_version.py":
            shape.undocumented_modules.append(module)
        runs_git = False
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and _broad(node):
                where = f"{module}:{node.lineno}"
                shape.broad_excepts.append(where)
                if _swallows(node):
                    shape.swallowing_excepts.append(where)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                count -= bool(a.args) and a.args[0].arg in ("self", "cls")
                if count > MAX_PARAMS:
                    shape.many_parameters.append(f"{module}.{node.name} {count}")
                if not node.name.startswith("_"):
                    shape.public_functions += 1
                    shape.documented_functions += ast.get_docstring(node) is not None
            elif (isinstance(node, (ast.List, ast.Tuple)) and node.elts and module != GIT_MODULE
                  and isinstance(node.elts[0], ast.Constant) and node.elts[0].value == "git"):
                runs_git = True  # a command line ["git", ...] built outside the git module
            elif isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        shape.private_reach.append(f"{module} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if owner in trees and owner != module:
                    shape.private_reach.append(f"{module} uses {owner}.{node.attr}")
        if runs_git:
            shape.git_callers.append(module)
    shape.private_reach = sorted(set(shape.private_reach))
    shape.import_circles = _circles(graph)
    return shape


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    rest = [a for a in argv if a != "--json"]
    folder = Path(rest[0]) if rest else Path(__file__).resolve().parent.parent / "cd4ml_nb"
    shape = measure(folder)
    if as_json:
        print(json.dumps({"zeros": shape.zeros(), "documented": shape.documented, **asdict(shape)}, indent=2))
        return 0
    print(f"code shape of {folder}: broad excepts {len(shape.broad_excepts)}, public functions documented "
          f"{shape.documented:.0%} ({shape.documented_functions} of {shape.public_functions})")
    for name, count in shape.zeros().items():
        print(f"  {name:40} {count}")
    for name, items in asdict(shape).items():
        if items and isinstance(items, list) and name != "broad_excepts":
            print(f"\n{name}:\n  " + "\n  ".join(map(str, items)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
