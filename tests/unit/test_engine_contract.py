"""The engine contract (issue 14): front ends use only ``corral._engine``'s exports.

Checked three ways: statically (what the front-end modules import and touch),
against the local engine (it has every method of the protocol, with the same
parameters), and by running the front ends on a toy engine written here from
the contract alone, as a new backend would be.
"""

from __future__ import annotations

import ast
import inspect
import threading
from pathlib import Path

import pytest

import corral
import corral._engine as engine_package
import corral.futures
import corral.pool
from corral._engine import CALL, MAP, STARMAP, EngineSpec, Task
from corral._engine.contract import Engine
from corral._engine.engine import LocalEngine

SRC = Path(corral.__file__).parent
FRONT_ENDS = ["pool.py", "futures.py", "_future.py", "_feed.py", "_cli_map.py", "dummy/__init__.py"]


def _tree(name: str) -> ast.Module:
    return ast.parse((SRC / name).read_text())


@pytest.mark.parametrize("name", FRONT_ENDS)
def test_front_ends_import_only_the_contract(name):
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom) and node.module and "_engine" in node.module:
            assert node.module == "_engine" and node.level == 1, (
                f"{name} imports from {node.module}: front ends import only corral._engine"
            )
            imported = {alias.name for alias in node.names}
            assert imported <= set(engine_package.__all__), (name, imported)
        if isinstance(node, ast.Import):
            assert not any("_engine" in alias.name for alias in node.names), name


@pytest.mark.parametrize("name", FRONT_ENDS)
def test_front_ends_touch_no_private_engine_attribute(name):
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = node.value
            owner_name = getattr(owner, "attr", None) or getattr(owner, "id", None)
            assert owner_name not in ("engine", "_engine"), (
                f"{name}:{node.lineno} uses {owner_name}.{node.attr}"
            )


def _protocol_members() -> list[str]:
    return [
        name for name in vars(Engine) if not name.startswith("_") and name not in ("size", "broken")
    ] + ["size", "broken"]


def test_the_local_engine_has_every_method_of_the_protocol():
    for name in _protocol_members():
        if name in ("size", "broken", "thread"):
            continue
        ours = inspect.signature(getattr(LocalEngine, name))
        contract = inspect.signature(getattr(Engine, name))
        assert list(ours.parameters) == list(contract.parameters), name
        for param in contract.parameters.values():
            assert ours.parameters[param.name].kind == param.kind, (name, param.name)


class InlineEngine:
    """A toy backend from the contract alone: runs each task in a thread of its own."""

    def __init__(self, spec: EngineSpec) -> None:
        self.size = spec.workers
        self.broken: BaseException | None = None
        self.thread = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.submitted = 0
        if spec.initializer is not None:
            spec.initializer(*spec.initargs)

    def new_task(
        self, kind, fn, args, kwargs, on_done, *, timeout=None, claim=None, tag=None, progress=None
    ):
        return Task(kind, (fn, args, kwargs), on_done, timeout, claim, tag)

    def _run(self, task: Task) -> None:
        if task.claim is not None and not task.claim():
            return
        fn, args, kwargs = task.payload
        try:
            if task.kind == CALL:
                value = fn(*args, **kwargs)
            elif task.kind == MAP:
                value = [fn(item) for item in args]
            else:
                assert task.kind == STARMAP
                value = [fn(*item) for item in args]
        except Exception as exc:
            task.on_done(False, exc)
        else:
            task.on_done(True, value)

    def submit(self, task: Task) -> None:
        self.submitted += 1
        thread = threading.Thread(target=self._run, args=(task,))
        self._threads.append(thread)
        thread.start()

    def submit_many(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.submit(task)

    def run_direct(self, task: Task, *, queued: bool = False) -> bool:
        return False

    def cancel_queued(self) -> list[Task]:
        return []

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    def delivering(self) -> bool:
        return False

    def after_delivery(self, fn) -> None:
        fn()

    def close(self) -> None:
        self._closed = True

    def stop(self, error, *, hard=False) -> None:
        self._closed = True

    def join(self, timeout=None) -> bool:
        for thread in list(self._threads):
            thread.join(timeout)
        return True

    def processes(self) -> list:
        return []

    def share(self, obj):
        return obj

    def insights(self):
        return corral.Insights("inline", tasks=self.submitted)


def test_the_front_ends_run_on_an_engine_written_from_the_contract(monkeypatch):
    made: list[InlineEngine] = []

    def start(spec: EngineSpec) -> InlineEngine:
        made.append(InlineEngine(spec))
        return made[-1]

    monkeypatch.setattr(corral.pool, "start_engine", start)
    monkeypatch.setattr(corral.futures, "start_engine", start)
    _check: Engine = InlineEngine(EngineSpec(1))  # the toy is an Engine to a type checker
    progress: list[int] = []
    with corral.Pool(3) as pool:
        assert pool.apply(divmod, (7, 2)) == (3, 1)
        assert pool.map(abs, range(-3, 3)) == [3, 2, 1, 0, 1, 2]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert list(pool.imap(abs, [-1, -2, -3])) == [1, 2, 3]
        assert sorted(pool.imap_unordered(abs, [-1, -2])) == [1, 2]
        got = []
        pool.apply_async(abs, (-4,), callback=got.append).wait(10)
        assert got == [4]
        with pytest.raises(ZeroDivisionError):
            pool.apply(divmod, (1, 0))
        assert pool._pool == []
        assert pool.map(abs, [-1, -2], progress=progress.append) == [1, 2]
        assert sum(progress) == 2  # counted per chunk: this engine never reports within one
        assert pool.insights().tasks == pool._engine.submitted
    with corral.ProcessPoolExecutor(2) as ex:
        assert ex.submit(pow, 2, 10).result(10) == 1024
        assert list(ex.map(pow, [2, 3], [2, 2])) == [4, 9]
    assert [engine.size for engine in made] == [3, 2]
    assert all(engine.submitted > 0 for engine in made)
