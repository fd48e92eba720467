"""Value, Array, RawValue, RawArray, the heap under them, and Barrier, under every start method."""

from __future__ import annotations

import ctypes
import gc
import pickle
import threading

import pytest

import corral
from corral import heap, sharedctypes

pytestmark = pytest.mark.timeout(60)


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double)]


def _change_all(value, array, raw_value, raw_array, text, point):
    value.value += 1
    array[1] = 20
    raw_value.value = 99
    raw_array[:] = [7, 8, 9]
    text.value = b"child"
    point.x = 3.5


def test_children_see_and_change_the_same_memory(ctx):
    value = ctx.Value("i", 41)
    array = ctx.Array("l", [1, 2, 3])
    raw_value = ctx.RawValue(ctypes.c_int, 0)
    raw_array = ctx.RawArray("d", 3)
    text = ctx.Array("c", 8)
    point = ctx.Value(Point, 1.0, 2.0)
    p = ctx.Process(target=_change_all, args=(value, array, raw_value, raw_array, text, point))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert value.value == 42
    assert array[:] == [1, 20, 3] and list(array) == [1, 20, 3] and len(array) == 3
    assert raw_value.value == 99 and raw_array[:] == [7.0, 8.0, 9.0]
    assert text.value == b"child" and text.raw == b"child\0\0\0"
    assert (point.x, point.y) == (3.5, 2.0)


def _add(value, times):
    for _ in range(times):
        with value.get_lock():
            value.value += 1


def test_locked_increments_from_two_processes_are_exact(ctx):
    value = ctx.Value("i", 0)
    procs = [ctx.Process(target=_add, args=(value, 5_000)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert value.value == 10_000


def test_locks_objects_and_copies():
    value = corral.Value("d", 1.5)
    assert isinstance(value.get_obj(), ctypes.c_double)
    assert hasattr(value.get_lock(), "acquire")
    with value:
        value.value = 2.5
    assert "Synchronized wrapper for c_double" in repr(value)
    lock = corral.Lock()
    shared_lock = corral.Value("i", 0, lock=lock)
    assert shared_lock.get_lock() is lock
    raw = corral.Value("i", 5, lock=False)
    assert isinstance(raw, ctypes.c_int) and raw.value == 5
    copied = sharedctypes.copy(raw)
    raw.value = 6
    assert copied.value == 5
    wrapped = sharedctypes.synchronized(sharedctypes.RawArray("i", [1, 2]))
    assert wrapped[0:2] == [1, 2]


def test_bad_input_raises_the_stdlibs_errors():
    with pytest.raises(TypeError):
        corral.Array("i", [[1, 2], [3, 4]])
    with pytest.raises(TypeError):
        corral.Value("i", 1, unknown=True)
    with pytest.raises(TypeError, match="unknown typecode"):
        corral.RawValue("Z")
    with pytest.raises(AttributeError, match="acquire"):
        corral.Value("i", 1, lock=object())
    with pytest.raises(RuntimeError, match="through inheritance"):
        pickle.dumps(corral.Value("i", 1))
    with pytest.raises(RuntimeError, match="through inheritance"):
        pickle.dumps(corral.Barrier(2))


def test_freed_blocks_are_reused_and_big_blocks_unmapped():
    heap_ = heap.BufferWrapper._heap
    gc.collect()
    values = [corral.RawValue("q", i) for i in range(10_000)]
    arenas = len(heap_._free)
    del values
    gc.collect()
    values = [corral.RawValue("q", i) for i in range(10_000)]
    assert len(heap_._free) == arenas  # the freed blocks were used again
    assert sum(v.value for v in values) == sum(range(10_000))
    big = corral.RawArray("b", 4 << 20)
    big_arena = big._wrapper._state[0][0]
    assert big_arena in heap_._allocated and big_arena not in heap_._free
    del big
    gc.collect()
    assert big_arena not in heap_._allocated


def test_heap_refuses_bad_sizes():
    with pytest.raises(ValueError):
        heap.BufferWrapper(-1)


def _wait_at(barrier, results, index):
    results[index] = barrier.wait(10)


def test_barrier_releases_all_parties_once(ctx):
    barrier = ctx.Barrier(3)
    results = ctx.Array("i", [-1, -1])
    procs = [ctx.Process(target=_wait_at, args=(barrier, results, i)) for i in range(2)]
    for p in procs:
        p.start()
    mine = barrier.wait(10)
    for p in procs:
        p.join(30)
    assert sorted([*results[:], mine]) == [0, 1, 2]  # each party gets its own index
    assert barrier.parties == 3 and barrier.n_waiting == 0 and not barrier.broken


def _wait_broken(barrier, ready, outcome):
    ready.set()
    try:
        barrier.wait(10)
    except threading.BrokenBarrierError:
        outcome.value = 1


def test_barrier_abort_breaks_waiters_and_reset_repairs(ctx):
    barrier = ctx.Barrier(2)
    ready = ctx.Event()
    outcome = ctx.Value("i", 0)
    p = ctx.Process(target=_wait_broken, args=(barrier, ready, outcome))
    p.start()
    assert ready.wait(10)
    barrier.abort()  # whether the child is waiting already or not: it must break
    p.join(30)
    assert outcome.value == 1 and barrier.broken
    barrier.reset()
    assert not barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        corral.Barrier(2, timeout=0.05).wait()
