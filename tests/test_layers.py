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


def _fresh(function: str, *args: object) -> object:
    """``function(*args)`` of this module, run by a new interpreter (see _fresh_graph
    for why: every ast.parse of these tests runs there); arguments and result as JSON."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_layers as t; "
        f"print(json.dumps(t.{function}(*json.loads(sys.argv[1]))))"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return json.loads(out)


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


# The concerns, lowest first: a module imports only from its own concern or from a
# lower layer (DESIGN.md's layout). A new top-level module or subpackage must be
# placed here, which is the point: where it sits is a decision.
LAYERS = [
    {"lancefeed._core"},  # the Rust core's bindings
    {"lancefeed.memory", "lancefeed.boxes", "lancefeed.columns", "lancefeed.source", "lancefeed.restart",
     "lancefeed.cluster", "lancefeed.ledger"},  # cluster: the Ray session; ledger: uncommitted work
    {"lancefeed.reads", "lancefeed.transforms"},  # rows; the transform plan
    {"lancefeed.permutation", "lancefeed.decode"},
    {"lancefeed.loader", "lancefeed.ingest", "lancefeed.optimizer"},
    {"lancefeed.bench"},
    {"lancefeed.cli"},
    {"lancefeed.__main__"},
]


def _concern(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _concern_edges() -> list[tuple[str, str, str]]:
    """(module, concern, concern imported) for every import of another concern,
    packages included (``from lancefeed.permutation import Permutation`` is one)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    edges = set()
    for p in paths:
        me = _module_name(p)
        if me == "lancefeed":
            continue  # the top-level package offers everything
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("lancefeed.") and (t in modules or t == "lancefeed._core"):
                    if _concern(t) != _concern(me):
                        edges.add((me, _concern(me), _concern(t)))
    return sorted(edges)


def _upward(edges: list[tuple[str, str, str]]) -> list[str]:
    rank = {c: i for i, layer in enumerate(LAYERS) for c in layer}
    bad = []
    for module, mine, theirs in sorted(edges):
        if mine not in rank or theirs not in rank:
            bad.append(f"{module}: {mine if mine not in rank else theirs} has no layer in LAYERS")
        elif rank[theirs] >= rank[mine]:
            bad.append(f"{module} ({mine}, layer {rank[mine]}) imports {theirs} (layer {rank[theirs]})")
    return bad


def test_no_import_goes_up_or_across_the_layers():
    edges = [tuple(e) for e in _fresh("_concern_edges")]
    assert ("lancefeed.loader.options", "lancefeed.loader", "lancefeed.permutation") in edges
    assert _upward(edges) == []


def test_an_upward_import_would_be_found():
    assert _upward([("lancefeed.reads.reader", "lancefeed.reads", "lancefeed.loader")]) == [
        "lancefeed.reads.reader (lancefeed.reads, layer 2) imports lancefeed.loader (layer 4)"
    ]
    assert _upward([("lancefeed.decode.core", "lancefeed.decode", "lancefeed.permutation")])  # across
    assert _upward([("lancefeed.new.x", "lancefeed.new", "lancefeed.source")])  # not placed


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _sizes(source: str) -> tuple[int, list[tuple[str, int]]]:
    """A module's lines, and each function's (its docstring and signature not counted)."""
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            documented = len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            first = body[1] if documented else body[0]
            long.append((node.name, node.end_lineno - first.lineno + 1))
    return len(source.splitlines()), long


def _too_long() -> list[str]:
    too_long = []
    for p in sorted(PACKAGE.rglob("*.py")):
        lines, functions = _sizes(p.read_text())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{p.relative_to(PACKAGE)}: {lines} lines")
        too_long += [f"{p.relative_to(PACKAGE)}: {name}() {n} lines" for name, n in functions if n > MAX_FUNCTION_LINES]
    return too_long


def test_modules_and_functions_stay_small_enough_to_read():
    assert _fresh("_too_long") == []


def test_a_long_function_would_be_found():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    lines, functions = _fresh("_sizes", f'def f():\n    """Doc."""\n{body}\n')
    assert lines == MAX_FUNCTION_LINES + 3 and functions == [["f", MAX_FUNCTION_LINES + 1]]


def _private_imports(source: str) -> list[str]:
    """Names starting with one underscore imported from the package's modules (the
    Rust extension ``_core`` and private modules such as ``_common`` are modules, and
    may be imported; what they define without an underscore is theirs to offer)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lancefeed")):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__") and a.name not in ("_core", "_common", "_hooks"):
                    found.append(f"{node.module}.{a.name}")
    return found


def _all_private_imports() -> dict[str, list[str]]:
    found = {str(p.relative_to(PACKAGE)): _private_imports(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}
    return {k: v for k, v in found.items() if v}


def test_no_module_imports_another_modules_private_names():
    assert _fresh("_all_private_imports") == {}
    assert _fresh("_private_imports", "from lancefeed.bench.harness import _failure_message") == [
        "lancefeed.bench.harness._failure_message"
    ]
