#!/usr/bin/env python
"""Measure the shape of the library: lines per package, the longest functions, and its imports.

Reads the source with :mod:`ast` only (nothing is imported), so it runs without torch.

    python tools/code_shape.py                 # the report
    python tools/code_shape.py --check         # exit 1 on an import cycle or an upward import

Import rules checked (``--check``):

- **no cycle** between modules of ``dcac_plugin``, nor between its first-level packages (imports
  inside functions count: they run later, but they are arrows all the same);
- **no upward arrow**: no module imports the package root ``dcac_plugin`` itself, and no module
  imports a package that contains it (``dcac_plugin.engine.base`` importing ``dcac_plugin.engine``).
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dcac_plugin"


def module_name(path: Path, root: Path) -> str:
    """``dcac_plugin/engine/base.py`` -> ``dcac_plugin.engine.base`` (``__init__`` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str, is_package: bool) -> str:
    """The package a module's relative imports resolve against."""
    return module if is_package else module.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute module names an ``from ... import ...`` statement loads."""
    if node.level:
        base = package_of(module, is_package).split(".")
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # "from pkg import sub" loads the submodule pkg.sub when there is one, and pkg's own
    # namespace only for the names that are not submodules; scan() sorts that out (the "?" mark)
    return [f"{prefix}?{alias.name}" for alias in node.names]


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.depth = 0
        self.top: set[str] = set()
        self.local: list[tuple[int, str]] = []
        self.functions: list[tuple[int, str, int]] = []
        self.type_checking = 0
        self._stack: list[str] = []

    def _record(self, names: list[str], lineno: int) -> None:
        for name in names:
            if self.depth or self.type_checking:  # a type-only import is an arrow too
                self.local.append((lineno, name))
            else:
                self.top.add(name)

    def visit_Import(self, node: ast.Import) -> None:
        self._record([a.name for a in node.names], node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._record(_resolve(node, self.module, self.is_package), node.lineno)

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        name = ".".join(self._stack + [node.name])
        self.functions.append((node.end_lineno - node.lineno + 1, name, node.lineno))
        self._stack.append(node.name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1
        self._stack.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._stack.append(node.name)
        self.generic_visit(node)
        self._stack.pop()


def scan(root: Path = ROOT) -> dict:
    """Everything the report prints, as data (used by the tests)."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules: dict[str, dict] = {}
    for path in files:
        name = module_name(path, root)
        visitor = _Visitor(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        modules[name] = {
            "path": path.relative_to(root).as_posix(),
            "lines": len(path.read_text(encoding="utf-8").splitlines()),
            "top": visitor.top, "local": visitor.local, "functions": visitor.functions,
            "is_package": path.name == "__init__.py",
        }
    known = set(modules)
    for info in modules.values():
        info["top"] = {_settle(t, known) for t in info["top"]}
        info["local"] = [(line, _settle(t, known)) for line, t in info["local"]]
    graph: dict[str, set[str]] = {}
    for name, info in modules.items():
        targets = set(info["top"]) | {t for _, t in info["local"]}
        graph[name] = {target for target in targets if target in known and target != name}
    return {"modules": modules, "graph": graph, "problems": import_problems(modules, graph)}


def _settle(target: str, known: set[str]) -> str:
    """``pkg?name`` -> ``pkg.name`` when that is a module, else ``pkg`` (a name from its namespace)."""
    if "?" not in target:
        return target
    prefix, _, name = target.partition("?")
    return f"{prefix}.{name}" if f"{prefix}.{name}" in known else prefix


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _package_reexports(graph: dict[str, set[str]], modules: dict[str, dict]) -> dict[str, set[str]]:
    """Drop a package's edges to its own submodules: ``__init__`` re-exporting is not an import back."""
    out = {}
    for name, targets in graph.items():
        if modules[name]["is_package"]:
            targets = {t for t in targets if not t.startswith(name + ".")}
        out[name] = targets
    return out


def room(module: str) -> str:
    """The first-level package or module a module lives in (``dcac_plugin.engine.base`` -> ``engine``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def import_problems(modules: dict[str, dict], graph: dict[str, set[str]]) -> list[str]:
    """Cycles (modules, and first-level packages) and upward arrows; empty when imports run one way.

    Imports inside functions count too: they run later, but they are arrows all the same.
    """
    problems: list[str] = []
    for name, info in sorted(modules.items()):
        for target in sorted(info["top"]) + sorted(t for _, t in info["local"]):
            if target == PACKAGE and name != PACKAGE:
                problems.append(f"{name} imports the package root {PACKAGE}")
            elif target in modules and modules[target]["is_package"] and name.startswith(target + ".") \
                    and target != PACKAGE:
                problems.append(f"{name} imports its own parent package {target}")
    for component in _cycles(_package_reexports(graph, modules)):
        problems.append("import cycle between modules: " + ", ".join(component))
    rooms: dict[str, set[str]] = defaultdict(set)
    for name, targets in _package_reexports(graph, modules).items():
        for target in targets:
            if room(name) != room(target) and room(target) != PACKAGE:
                rooms[room(name)].add(room(target))
    for component in _cycles(rooms):
        problems.append("import cycle between packages: " + ", ".join(component))
    return sorted(set(problems))


def report(data: dict, top: int = 10) -> str:
    """The human-readable report."""
    modules = data["modules"]
    per_package: dict[str, int] = defaultdict(int)
    for name, info in modules.items():
        parts = name.split(".")
        key = parts[1] if len(parts) > 2 or (len(parts) == 2 and info["is_package"]) else \
            (parts[1] if len(parts) > 1 else PACKAGE)
        per_package[key] += info["lines"]
    lines = ["lines per package / top-level module:"]
    total = 0
    for key, count in sorted(per_package.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {key:<22}{count:>6}")
        total += count
    lines.append(f"  {'total':<22}{total:>6}")
    functions = sorted(((n, f"{info['path']}:{fn}", line) for info in modules.values()
                        for n, fn, line in info["functions"]), reverse=True)
    lines.append(f"{top} longest functions:")
    lines += [f"  {n:>4}  {where}" for n, where, _ in functions[:top]]
    over = sum(1 for n, _, _ in functions if n > 80)
    lines.append(f"functions over 80 lines: {over}")
    n_top = sum(len(info["top"]) for info in modules.values())
    n_local = sum(len(info["local"]) for info in modules.values())
    lines.append(f"import statements' modules: {n_top} at top level, {n_local} inside functions")
    problems = data["problems"]
    lines.append(f"import problems: {len(problems)}")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (default: this checkout)")
    parser.add_argument("--top", type=int, default=10, help="how many longest functions to list")
    parser.add_argument("--check", action="store_true", help="exit 1 when the import graph has a problem")
    args = parser.parse_args(argv)
    data = scan(args.root)
    sys.stdout.write(report(data, args.top) + "\n")
    return 1 if args.check and data["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
