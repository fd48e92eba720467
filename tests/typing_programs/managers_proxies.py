"""``SyncManager``: proxies are generic like typeshed's."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import corral
from corral.managers import DictProxy, ListProxy, SyncManager, ValueProxy


def main() -> None:
    manager = corral.Manager()
    assert_type(manager, SyncManager)
    with manager:
        counts = manager.dict({"a": 1})
        assert_type(counts, DictProxy[str, int])
        counts["b"] = 2
        assert_type(counts["a"], int)
        assert_type(counts.get("c"), int | None)
        assert_type(counts.keys(), list[str])
        empty = manager.dict()
        assert_type(empty, DictProxy[Any, Any])
        named: DictProxy[str, float] = manager.dict(x=1.0)
        print(named["x"])
        names = manager.list(["x", "y"])
        assert_type(names, ListProxy[str])
        names.append("z")
        assert_type(names[0], str)
        assert_type(len(names), int)
        value = manager.Value("i", 3)
        assert_type(value, ValueProxy[int])
        assert_type(value.get(), int)
        value.value += 1
        queue = manager.Queue()
        queue.put(1)
        print(queue.get(timeout=10))
        lock = manager.Lock()
        with lock:
            pass
        event = manager.Event()
        event.set()
        assert_type(event.wait(1.0), bool)
        namespace = manager.Namespace(a=1)
        namespace.b = 2
        print(namespace.a + namespace.b)
    with SyncManager() as started:
        assert_type(started, SyncManager)
        assert_type(started.list(), ListProxy[Any])


if __name__ == "__main__":
    main()
