"""Queues, pipes, locks and shared values from the top level and from a context."""

from __future__ import annotations

import ctypes
from typing import Any

from typing_extensions import assert_type

import corral
from corral.connection import Connection
from corral.queues import JoinableQueue, Queue, SimpleQueue
from corral.shared_memory import ShareableList
from corral.sharedctypes import Synchronized, SynchronizedArray
from corral.synchronize import Barrier, Condition, Event, Lock, RLock, Semaphore


def drain(queue: Queue, lock: Lock) -> list[Any]:
    """Bare generic annotations pass --strict (the type variables default to Any)."""
    with lock:
        return [queue.get(timeout=1.0) for _ in range(queue.qsize())]


def ask(conn: Connection[int, str]) -> str:
    """A connection typed by what it sends and what it receives."""
    conn.send(1)
    return conn.recv()


def main() -> None:
    queue: Queue[int] = corral.Queue(maxsize=10)
    queue.put(1, timeout=1.0)
    assert_type(queue.get(timeout=1.0), int)
    assert_type(queue.get_nowait(), int)
    assert_type(queue.qsize(), int)
    anything = corral.Queue()
    anything.put("x")
    assert_type(anything, Queue[Any])
    print(drain(anything, corral.Lock()))
    joinable: JoinableQueue[str] = corral.JoinableQueue()
    joinable.put("x")
    assert_type(joinable.get(), str)
    joinable.task_done()
    simple: SimpleQueue[bytes] = corral.SimpleQueue()
    simple.put(b"x")
    assert_type(simple.get(), bytes)
    queue.close()
    queue.join_thread()

    left, right = corral.Pipe()
    assert_type(left, Connection)
    left.send({"a": 1})
    print(right.recv(), right.poll(0.1))
    right.send_bytes(b"x")
    assert_type(left.recv_bytes(), bytes)
    assert_type(ask(left), str)
    with corral.Pipe()[0] as end:
        assert_type(end, Connection)
    left.close()
    right.close()

    lock = corral.Lock()
    assert_type(lock, Lock)
    assert_type(lock.acquire(timeout=1.0), bool)
    lock.release()
    with corral.RLock() as held:
        print(held)
    assert_type(corral.RLock(), RLock)
    assert_type(corral.Semaphore(2), Semaphore)
    assert_type(corral.Event(), Event)
    assert_type(corral.Event().wait(0.1), bool)
    assert_type(corral.Condition(), Condition)
    assert_type(corral.Barrier(1), Barrier)
    with corral.Condition(lock) as cond:
        print(cond)

    counter = corral.Value("i", 0)
    assert_type(counter, Synchronized[Any])
    with counter.get_lock():
        counter.value += 1
    typed_counter = corral.Value(ctypes.c_double, 1.0)
    assert_type(typed_counter, Synchronized[float])
    numbers = corral.Array("d", [1.0, 2.0])
    assert_type(numbers, SynchronizedArray[Any])
    print(numbers[0], len(numbers))
    ints = corral.Array(ctypes.c_int, 3)
    assert_type(ints[0], int)
    raw = corral.RawArray(ctypes.c_int, 3)
    print(raw[0])

    items = ShareableList([1, 2, 3])
    assert_type(items[0], int)
    items[1] = 5
    items.shm.close()
    items.shm.unlink()


if __name__ == "__main__":
    main()
