"""corral's modules form layers: no import cycle at module level, imports go down.

The module-level import graph is read from the source with ``ast``: the
``import`` and ``from`` statements a module runs when it is imported (at top
level, under a module-level ``if``/``try``/``with`` or in a class body), not
those under ``if TYPE_CHECKING:`` and not those inside functions. Importing
``a.b.c`` also runs the package ``a.b``, so that is an edge too. ``LAYERS`` is
the table of docs/architecture.md ("Layers and where each behaviour lives"): a
module may import, at module level, only modules of its own layer or below.
Imports inside functions may go up only where ``LAZY_UPWARD`` says so: those are
the documented lazy factories.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

import pytest

import corral

pytestmark = pytest.mark.timeout(60)

SOURCE = Path(corral.__file__).parent
ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
STDLIB_MULTIPROCESSING = Path(sysconfig.get_paths()["stdlib"]) / "multiprocessing"

# Module (relative to ``corral``; "" is the package) -> layer. Keep it in step
# with the table in docs/architecture.md.
LAYERS = {
    # 0: errors, type variables, the spawning flag, utilities, the parent watcher
    "errors": 0,
    "_pool_errors": 0,
    "_typevars": 0,
    "_spawning": 0,
    "util": 0,
    "_lifeline": 0,
    "_anonymous_memory": 0,
    # commands in parallel (corral.run_commands): subprocess and pidfds, nothing above
    "_commands": 0,
    "_command_runner": 0,
    "_group_reaper": 0,
    # 1: pickling
    "reduction": 1,
    "_by_value": 1,
    "_buffers": 1,
    "_transfer": 1,
    # 2: connections
    "_wire": 2,
    "_handshake": 2,
    "_tls": 2,
    "_listener": 2,
    "connection": 2,
    # 3: processes, start methods and contexts
    "process": 3,
    "_resource_sharer": 3,
    "_factories": 3,
    "_contexts": 3,
    "_backend_context": 3,
    "_popen_fork": 3,
    "_popen_spawn": 3,
    "_popen_forkserver": 3,
    "_spawn": 3,
    "_forkserver": 3,
    "resource_tracker": 3,
    # 4: shared state
    "_segment": 4,
    "synchronize": 4,
    "heap": 4,
    "sharedctypes": 4,
    "shared_memory": 4,
    "dummy": 4,
    "dummy.connection": 4,
    # 5: queues
    "_ring": 5,
    "queues": 5,
    # 6: the pool engine
    "_engine": 6,
    "_engine.contract": 6,
    "_engine.protocol": 6,
    "_engine.states": 6,
    "_engine.worker": 6,
    "_engine.handles": 6,
    "_engine.lending": 6,
    "_engine.engine": 6,
    "_engine.direct": 6,
    "_engine.engine_start": 6,
    "_engine.dask_cluster": 6,
    "_engine.dask_engine": 6,
    "_engine.dask_shared": 6,
    "backends": 6,
    "_engine.ray_engine": 6,
    "_engine.session_reaper": 6,
    "_engine.main_namespace": 6,
    "_engine.cluster_pickle": 6,
    "_engine.metering": 6,
    "_engine.insights": 6,
    "_engine.engine_insights": 6,
    "_engine.ray_cluster": 6,
    # 7: the front ends, and the public context module (it re-exports layer 3)
    "context": 7,
    "pool": 7,
    "futures": 7,
    "_future": 7,
    "_feed": 7,
    "_chunking": 7,
    "_progress": 7,
    "_as_completed": 7,
    "managers": 7,
    "_manager_server": 7,
    "_manager_wire": 7,
    "_proxy": 7,
    "_proxy_types": 7,
    # 8: the package and the command line
    "": 8,
    "cli": 8,
    "_cli_map": 8,
    "_cli_run": 8,
    "__main__": 8,
}

# Imports inside functions that go to a higher layer, each with its reason.
LAZY_UPWARD = {
    # ctx.Lock(), ctx.Value(), ctx.Queue(), ctx.Manager(), ctx.Pool(): the factories
    "_factories": {"synchronize", "sharedctypes", "queues", "managers", "pool"},
    # dummy.Pool() is a ThreadPool
    "dummy": {"pool"},
    # unpickling a connection or an fd sent to a process that did not inherit it
    "reduction": {"connection", "_resource_sharer"},
    # the current process's name in log records; stopping the forkserver at exit
    "util": {"process", "_forkserver"},
    # Connection.send of a big message puts its buffers in a segment (tracked)
    "_wire": {"_segment"},
}

# The largest strongly connected component of the module-level graph: 1 means
# no cycle (issue 14: 2 before, context <-> reduction; 35 of 50 modules when the
# imports inside functions were counted too).
MAX_CYCLE = 1


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements run when the module is imported."""
    found: list[ast.Import | ast.ImportFrom] = []
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found.append(stmt)
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                found += _module_level_imports(stmt.body)
            found += _module_level_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody):
                found += _module_level_imports(block)
            for handler in stmt.handlers:
                found += _module_level_imports(handler.body)
        elif isinstance(stmt, (ast.With, ast.ClassDef)):
            found += _module_level_imports(stmt.body)
    return found


def _all_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, module level or in functions (TYPE_CHECKING ones too)."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _modules(root: Path) -> dict[str, Path]:
    """Module name relative to the package ("" for the package) -> file."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(root: Path, package: str, *, in_functions: bool = False) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (names relative to ``package``)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        statements = _all_imports(tree) if in_functions else _module_level_imports(tree.body)
        here = name.split(".") if name else []  # the package a relative import starts from
        if path.name != "__init__.py":
            here.pop()
        for node in statements:
            targets: list[str | None]
            if isinstance(node, ast.Import):
                targets = [_relative(alias.name, package) for alias in node.names]
            else:
                if node.level:
                    parent = here[: len(here) - node.level + 1]
                    base: str | None = ".".join([*parent, *filter(None, [node.module])])
                else:
                    base = _relative(node.module or "", package)
                if base is None:
                    continue
                # from a import b: b is a submodule, or a name defined in a
                subs = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
                targets = [sub if sub in modules else base for sub in subs]
            for target in targets:
                if target is None or target not in modules:
                    continue
                # Importing a.b.c runs the packages a and a.b first.
                parts = target.split(".") if target else []
                for depth in range(len(parts) + 1):
                    ancestor = ".".join(parts[:depth])
                    if ancestor != name and not _is_ancestor(ancestor, name):
                        graph[name].add(ancestor)
    return graph


def _relative(target: str, package: str) -> str | None:
    """An absolute module name relative to ``package``, or None if outside it."""
    if target == package:
        return ""
    if target.startswith(package + "."):
        return target[len(package) + 1 :]
    return None


def _is_ancestor(ancestor: str, name: str) -> bool:
    return ancestor == "" or name.startswith(ancestor + ".")


def largest_cycle(graph: dict[str, set[str]]) -> set[str]:
    """The largest strongly connected component (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    best: set[str] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > len(best):
                        best = component
    return best


def test_the_graph_reader_sees_what_python_runs():
    graph = import_graph(SOURCE, "corral")
    assert "_contexts" in graph["context"]  # from ._contexts import ...
    assert "_engine" in graph["pool"]  # from ._engine.feed import ...: runs _engine first
    assert "pool" not in graph["_factories"]  # inside a function
    assert "pool" not in graph["_contexts"] and "managers" not in graph["_factories"]
    assert "_contexts" not in graph["_factories"]  # under if TYPE_CHECKING:
    cycle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert largest_cycle(cycle) == {"a", "b", "c"}


def test_every_module_has_a_layer():
    assert set(import_graph(SOURCE, "corral")) == set(LAYERS)


def test_module_level_imports_go_to_the_same_or_a_lower_layer():
    graph = import_graph(SOURCE, "corral")
    upward = sorted(
        f"{name or 'corral'} (layer {LAYERS[name]}) imports {target or 'corral'} "
        f"(layer {LAYERS[target]})"
        for name, targets in graph.items()
        for target in targets
        if LAYERS[target] > LAYERS[name]
    )
    assert upward == []


def test_imports_inside_functions_go_up_only_through_the_documented_lazy_factories():
    everywhere = import_graph(SOURCE, "corral", in_functions=True)
    upward: dict[str, set[str]] = {}
    for name, targets in everywhere.items():
        higher = {target for target in targets if LAYERS[target] > LAYERS[name]}
        if higher:
            upward[name] = higher
    assert upward == LAZY_UPWARD


def test_no_import_cycle_at_module_level():
    cycle = largest_cycle(import_graph(SOURCE, "corral"))
    assert len(cycle) <= MAX_CYCLE, sorted(cycle)


@pytest.mark.skipif(not STDLIB_MULTIPROCESSING.is_dir(), reason="no stdlib source here")
def test_no_larger_cycle_than_the_stdlibs_own():
    ours = largest_cycle(import_graph(SOURCE, "corral"))
    stdlib = largest_cycle(import_graph(STDLIB_MULTIPROCESSING, "multiprocessing"))
    assert len(stdlib) >= 2  # context <-> reduction on 3.11, measured the same way
    assert len(ours) < len(stdlib)


def test_the_lower_layers_do_not_import_the_public_context_module():
    graph = import_graph(SOURCE, "corral", in_functions=True)
    importers = {name for name, targets in graph.items() if "context" in targets}
    assert importers <= {name for name, layer in LAYERS.items() if layer >= LAYERS["context"]}


def test_context_offers_the_ground_floors_objects_themselves():
    from corral import _contexts, _spawning, context

    for name in (
        "BaseContext",
        "DefaultContext",
        "ForkContext",
        "SpawnContext",
        "ForkServerContext",
        "Process",
        "ForkProcess",
        "SpawnProcess",
        "ForkServerProcess",
        "_default_context",
        "_concrete_contexts",
        "_default_method",
        "_all_start_methods",
        "_force_start_method",
        "_is_stdlib_context",
        "as_context",
        "reduction",
    ):
        assert getattr(context, name) is getattr(_contexts, name), name
    for name in ("get_spawning_popen", "set_spawning_popen", "assert_spawning", "_tls"):
        assert getattr(context, name) is getattr(_spawning, name), name
    assert context.BaseContext.__module__ == "corral.context"
    assert context.__all__ == (
        "BaseContext",
        "DefaultContext",
        "ForkContext",
        "ForkServerContext",
        "SpawnContext",
    )
    assert corral.get_context() is context._default_context.get_context()
    assert corral.Lock.__qualname__ == "BaseContext.Lock"  # as the stdlib's


def test_context_reduction_follows_the_reducer():
    from corral import context, reduction

    ctx = corral.get_context("spawn")
    assert ctx.reducer is reduction is context.reduction
    replacement = object()
    ctx.reducer = replacement
    try:
        assert context.reduction is replacement and corral.get_context().reducer is replacement
    finally:
        ctx.reducer = reduction
    assert context.reduction is reduction


def _documented_layers(text: str) -> dict[str, int]:
    """The table of docs/architecture.md's "Layers" section, as module -> layer."""
    section = text.split("## Layers and where each behaviour lives", 1)[1]
    block = section.split("```", 2)[1]
    layers: dict[str, int] = {}
    layer = -1
    for line in block.splitlines():
        # " 3 process.py   ..." starts a layer, "   _spawn.py   ..." continues it;
        # descriptions (and their continuation lines) sit further right.
        match = re.match(r"^ ?(\d)? +([\w.]+(?:\.py|/)(?:, [\w.]+(?:\.py|/))*)(?: +|$)", line)
        if match is None or len(line) - len(line.lstrip()) > 3:
            continue
        if match.group(1):
            layer = int(match.group(1))
        for entry in match.group(2).split(", "):
            if entry.endswith("/"):  # a package: every module in it
                package = entry[:-1]
                for name in LAYERS:
                    if name == package or name.startswith(package + "."):
                        layers[name] = layer
            else:
                name = entry.removesuffix(".py")
                layers["" if name == "__init__" else name] = layer
    return layers


@pytest.mark.skipif(not ARCHITECTURE.exists(), reason="runs from a source checkout")
def test_the_architecture_docs_show_this_table():
    assert _documented_layers(ARCHITECTURE.read_text()) == LAYERS
