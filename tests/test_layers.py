"""The package's modules import one another without cycles, counting the imports made
inside functions too: lower layers never reach up (a container such as RandomApply
registers its torchvision converter instead of being imported by the converter)."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "lancefeed"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (package __init__s
    excluded: importing ``a.b.c`` runs ``a.b``'s, which is not this module's choice)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules and n != me}
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    packages = {_module_name(p) for p in paths if p.name == "__init__.py"}
    return {_module_name(p): _imports(p, modules) - packages for p in paths if p.name != "__init__.py"}


@functools.lru_cache(maxsize=None)
def _fresh_graph() -> dict[str, set[str]]:
    """_graph() computed by a new interpreter: CPython 3.11's ast.parse can fail with
    "AST constructor recursion depth mismatch" in a process whose earlier work left its
    recursion counter off (seen after the rest of the suite), which is no fault of ours."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_layers as t; " \
        "print(json.dumps({k: sorted(v) for k, v in t._graph().items()}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    return {k: set(v) for k, v in json.loads(out).items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_sees_function_level_imports():
    graph = _fresh_graph()
    # compose imports the detection ops at module level; the decode core imports
    # lancefeed.columns inside a function.
    assert "lancefeed.transforms.detection" in graph["lancefeed.transforms.compose"]
    assert "lancefeed.columns" in graph["lancefeed.decode.core"]


def test_no_module_imports_itself_back():
    graph = _fresh_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_a_cycle_would_be_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
