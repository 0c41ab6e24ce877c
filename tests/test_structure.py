"""The shape of the code: the definitions load without the runtime, and no import cycle runs through them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "platform" / "caseloom"
# Packages whose modules must not sit in an import cycle (counting imports inside functions too).
LAYERED = ("caseloom.definitions", "caseloom.effects", "caseloom.automation", "caseloom.query",
           "caseloom.templates", "caseloom.fieldtypes", "caseloom.stamps")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every module's imports of other Caseloom modules, at any depth of the code (TYPE_CHECKING blocks aside)."""

    class Visitor(ast.NodeVisitor):
        def __init__(self, module: str):
            self.module, self.found = module, set()

        def visit_If(self, node):  # noqa: N802
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for item in node.orelse:
                    self.visit(item)
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node):  # noqa: N802
            package = self.module.split(".") if modules[self.module].name == "__init__.py" \
                else self.module.split(".")[:-1]
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            self.found.update(n for n in [name, *(f"{name}.{a.name}" for a in node.names)] if n in modules)

        def visit_Import(self, node):  # noqa: N802
            self.found.update(a.name for a in node.names if a.name in modules)

    graph = {}
    for module, path in modules.items():
        visitor = Visitor(module)
        visitor.visit(ast.parse(path.read_text()))
        graph[module] = visitor.found - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_runs_through_the_definitions_effects_automation_or_queries():
    cycles = _cycles(_imports(_modules()))
    layered = [c for c in cycles if any(m == p or m.startswith(p + ".") for m in c for p in LAYERED)]
    assert layered == []


def test_the_definitions_load_without_the_record_service():
    code = ("import sys, caseloom.definitions as d; d.load_folder('definitions'); "
            "print(sorted(m for m in sys.modules if m in ('caseloom.records', 'caseloom.effects.run', "
            "'caseloom.memberlists', 'caseloom.automation.hooks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent.parent)
    assert out.stdout.strip() == "[]"
