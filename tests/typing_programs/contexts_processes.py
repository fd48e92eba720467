"""Contexts and processes: every factory of ``get_context`` is typed."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import corral
from corral.context import BaseContext, SpawnProcess
from corral.process import BaseProcess


def work(queue: corral.queues.Queue[int], n: int) -> None:
    queue.put(n * 2)


class Doubler(corral.Process):
    """A Process subclass, as with threading.Thread."""

    def __init__(self, queue: corral.Queue[int], n: int) -> None:
        super().__init__(name=f"doubler-{n}")
        self.queue = queue
        self.n = n

    def run(self) -> None:
        self.queue.put(self.n * 2)


def main() -> None:
    for method in corral.get_all_start_methods():
        ctx = corral.get_context(method)
        assert_type(ctx, BaseContext)
        queue: corral.queues.Queue[int] = ctx.Queue()
        process = ctx.Process(target=work, args=(queue, 21), name="worker", daemon=True)
        assert_type(process, BaseProcess)
        process.start()
        assert_type(queue.get(timeout=10), int)
        process.join(timeout=10)
        assert_type(process.exitcode, int | None)
        assert_type(process.pid, int | None)
        assert_type(process.is_alive(), bool)
        assert_type(process.name, str)
        parent, child = ctx.Pipe(duplex=False)
        parent.close()
        child.close()
    assert_type(corral.cpu_count(), int)
    assert_type(corral.current_process(), BaseProcess)
    assert_type(corral.active_children(), list[BaseProcess])
    assert_type(corral.get_start_method(allow_none=True), str | None)
    assert_type(corral.get_all_start_methods(), list[str])
    if corral.get_start_method(allow_none=True) is None:
        corral.set_start_method("spawn")
    results = corral.Queue()
    doubler = Doubler(results, 4)
    doubler.start()
    assert_type(results.get(timeout=10), Any)
    doubler.join(10)
    assert_type(corral.get_context("spawn").Process, type[SpawnProcess])
    plain = corral.Process(target=print, args=("hello",))
    plain.start()
    plain.join(10)
    plain.close()


if __name__ == "__main__":
    main()
