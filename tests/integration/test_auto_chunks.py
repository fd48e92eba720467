"""``chunksize="auto"`` on every map-like call: same results as ``map``, chunks sized as it runs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import corral
import corral.errors
import corral.pool
from corral._chunking import ChunkSizer
from corral.futures import ProcessPoolExecutor
from corral.pool import ThreadPool

pytestmark = pytest.mark.timeout(90)


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def nap(x):
    time.sleep(0.05)
    return x


MAP_CALLS = ["map", "map_async", "starmap", "starmap_async", "imap", "imap_unordered"]


def call(pool, name, items, **kwargs):
    """The results of ``pool.<name>(..., chunksize="auto")`` as a list, in input order."""
    if name.startswith("starmap"):
        items = [(x, 1) for x in items]
        func = add
    else:
        func = square
    method = getattr(pool, name)
    result = method(func, items, chunksize="auto", **kwargs)
    if name.endswith("_async"):
        result = result.get(60)
    results = list(result)
    return sorted(results) if name == "imap_unordered" else results


def expected(name, items):
    items = list(items)
    return [x + 1 for x in items] if name.startswith("starmap") else [x * x for x in items]


@pytest.mark.parametrize("name", MAP_CALLS)
def test_every_map_call_returns_map_results(ctx, name):
    with ctx.Pool(2) as pool:
        for items in ([], [5], list(range(1000))):
            assert call(pool, name, items) == expected(name, items)


@pytest.mark.parametrize("name", MAP_CALLS)
def test_thread_pool(name):
    with ThreadPool(3) as pool:
        assert call(pool, name, range(500)) == expected(name, range(500))


def test_imap_reads_a_generator_without_len(ctx):
    with ctx.Pool(2) as pool:
        results = pool.imap(square, (x for x in range(300)), chunksize="auto")
        assert list(results) == [x * x for x in range(300)]
        unordered = pool.imap_unordered(square, iter(range(300)), chunksize="auto")
        assert sorted(unordered) == [x * x for x in range(300)]
        assert pool.map(square, (x for x in range(50)), chunksize="auto") == [
            x * x for x in range(50)
        ]


def test_executor_map(ctx):
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        got = executor.map(add, range(400), range(400), chunksize="auto")
        assert list(got) == [2 * x for x in range(400)]
        got = executor.map(add, iter(range(100)), range(50), chunksize="auto")
        assert list(got) == [2 * x for x in range(50)]
        assert list(executor.map(square, [], chunksize="auto")) == []


def test_first_error_is_raised_and_callbacks_run():
    with corral.Pool(2) as pool:
        with pytest.raises(ValueError, match="odd 1") as info:
            pool.map(fail_on_odd, [0, 1, 2, 4], chunksize="auto")
        assert isinstance(info.value.__cause__, corral.pool.RemoteTraceback)
        results, errors = [], []
        done = pool.map_async(square, range(100), "auto", results.append, errors.append)
        assert done.get(60) == [x * x for x in range(100)] and done.successful()
        assert results == [done.get(0)] and errors == []
        failed = pool.map_async(fail_on_odd, range(100), "auto", results.append, errors.append)
        with pytest.raises(ValueError, match="odd"):
            failed.get(60)
        assert not failed.successful() and errors == [failed._value]
        # imap raises each failed chunk's error at its place (how many items
        # share a chunk depends on timing: 1 and 2-3 may be one chunk).
        it = pool.imap(fail_on_odd, [0, 1, 2, 3], chunksize="auto")
        got: list[object] = []
        while True:
            try:
                got.append(next(it))
            except StopIteration:
                break
            except ValueError as exc:
                got.append(str(exc))
        assert got[0] == 0 and "odd 1" in str(got[1]) and 2 <= len(got) <= 4


def test_changing_the_input_after_map_async_changes_nothing():
    release = threading.Event()

    def wait_then_square(x):
        release.wait(30)
        return x * x

    with ThreadPool(2) as pool:
        items = list(range(100))
        result = pool.map_async(wait_then_square, items, chunksize="auto")
        items.clear()
        release.set()
        assert result.get(60) == [x * x for x in range(100)]


def test_map_after_an_error_still_runs_every_other_chunk():
    # As with the stdlib's chunks: an error stops the chunk it happened in (the
    # rest of that chunk is skipped), never the other chunks.
    seen = []
    lock = threading.Lock()

    def note(x):
        with lock:
            seen.append(x)
        if x == 3:
            raise ValueError("three")
        return x

    with ThreadPool(2) as pool, pytest.raises(ValueError, match="three"):
        pool.map(note, range(200), chunksize="auto")
    missing = sorted(set(range(200)) - set(seen))
    assert missing == list(range(4, 4 + len(missing)))  # only the failing chunk's rest
    assert len(missing) < 100  # the first chunks are small probes
    assert 199 in seen


class Recording(ChunkSizer):
    sizes: list[int]

    def next_size(self):
        size = super().next_size()
        self.sizes.append(size)
        return size


@pytest.fixture
def recorded(monkeypatch):
    sizes: list[int] = []
    monkeypatch.setattr(Recording, "sizes", sizes, raising=False)
    monkeypatch.setattr(corral.pool, "ChunkSizer", Recording)
    return sizes


def test_chunks_grow_for_tiny_items(recorded):
    with corral.Pool(2) as pool:
        assert pool.map(abs, range(-50_000, 50_000), chunksize="auto") == [
            abs(x) for x in range(-50_000, 50_000)
        ]
    assert recorded[0] == 1  # a probe (the policy's probes: tests/unit/test_chunking.py)
    assert max(recorded) >= 1000
    assert len(recorded) < 1000


def test_chunks_stay_one_item_for_slow_items(recorded):
    # Each item sleeps 50 ms, as long as the target chunk: a chunk can only be
    # measured slower than that, never faster, so every chunk has one item.
    with ThreadPool(4) as pool:
        assert pool.map(nap, range(12), chunksize="auto") == list(range(12))
    assert set(recorded) == {1}  # (the last one finds the input exhausted)


def test_task_timeout_applies_per_item():
    # A Pool: a ThreadPool's thread would sleep on after the test.
    with corral.Pool(2) as pool, pytest.raises(corral.TaskTimeoutError):
        pool.map(time.sleep, [0, 0, 30], chunksize="auto", task_timeout=0.5)


def test_close_join_runs_all_of_map_async(ctx):
    pool = ctx.Pool(2)
    result = pool.map_async(square, range(5000), chunksize="auto")
    pool.close()
    pool.join()
    assert result.get(0) == [x * x for x in range(5000)]


def test_terminate_fails_a_pending_auto_map():
    pool = corral.Pool(1)
    result = pool.map_async(nap, range(200), chunksize="auto")
    pool.terminate()
    pool.join()
    with pytest.raises(corral.BrokenProcessPool):
        result.get(30)


def test_an_item_that_cannot_be_pickled_fails_the_result():
    with corral.Pool(1) as pool:
        items = [1, 2, threading.Lock()]
        with pytest.raises(corral.errors.SerializationError, match="cannot be sent"):
            pool.map(square, items, chunksize="auto")
        assert pool.map(square, [3], chunksize="auto") == [9]  # the pool lives on


def test_a_function_that_cannot_be_pickled_raises_at_the_call():
    lock = threading.Lock()
    with corral.Pool(1) as pool:
        for name in ("map_async", "starmap_async"):
            with pytest.raises(corral.errors.SerializationError, match="cannot be sent"):
                getattr(pool, name)(lock.acquire, [(1,)], chunksize="auto")
        assert pool._feeds == set() or all(not f.thread.is_alive() for f in pool._feeds)
        assert pool.map(square, [4], chunksize="auto") == [16]


def test_awaiting_an_auto_map_async():
    async def main(pool):
        return await pool.map_async(square, range(300), chunksize="auto")

    with corral.Pool(2) as pool:
        assert asyncio.run(main(pool)) == [x * x for x in range(300)]


def test_finished_feeds_are_not_kept_by_a_long_lived_pool():
    with ThreadPool(2) as pool:
        for _ in range(20):
            pool.map(square, range(10), chunksize="auto")
        assert len(pool._feeds) <= 3


BAD_VALUES = [("fast", ValueError), (0, ValueError), (-1, ValueError), (2.5, TypeError)]


@pytest.mark.parametrize(("value", "error"), BAD_VALUES)
@pytest.mark.parametrize("name", MAP_CALLS)
def test_bad_chunksize_is_refused_at_the_call(name, value, error):
    with ThreadPool(1) as pool, pytest.raises(error, match=r"(?i)chunksize"):
        getattr(pool, name)(square, [(1,)], chunksize=value)


@pytest.mark.parametrize(("value", "error"), BAD_VALUES)
def test_bad_chunksize_is_refused_by_executor_map(value, error):
    with ProcessPoolExecutor(1) as executor, pytest.raises(error, match=r"(?i)chunksize"):
        executor.map(square, [1], chunksize=value)


@pytest.mark.parametrize("name", ["imap", "imap_unordered"])
def test_none_is_refused_by_imap_with_a_message(name):
    # The stdlib refuses it too, with "'<' not supported between NoneType and int".
    with ThreadPool(1) as pool, pytest.raises(TypeError, match="chunksize must be an int"):
        getattr(pool, name)(square, [1], chunksize=None)
    with ProcessPoolExecutor(1) as ex, pytest.raises(TypeError, match="chunksize must be an int"):
        ex.map(square, [1], chunksize=None)


def test_stdlib_messages_for_ints_below_one():
    with ThreadPool(1) as pool, pytest.raises(ValueError, match="Chunksize must be 1\\+, not 0"):
        pool.map(square, [1], chunksize=0)
    with ProcessPoolExecutor(1) as ex, pytest.raises(ValueError, match="chunksize must be >= 1"):
        ex.map(square, [1], chunksize=0)
