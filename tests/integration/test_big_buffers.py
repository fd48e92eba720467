"""Big buffers between a pool and its workers go through shared memory (issue 14).

Arguments and results holding large protocol-5 buffers (NumPy arrays,
PickleBuffer) or large pickles (bytes) travel in memfd segments beside the
message; ``Pool.share`` / ``ProcessPoolExecutor.share`` place an object once
for many tasks. These tests check what a user sees: equal objects, writable
results, read-only shared views, errors at the call, and nothing left mapped.
"""

from __future__ import annotations

import errno
import gc
import os
import pickle
import threading

import numpy as np
import pytest

import corral
from corral import _transfer
from corral.pool import ThreadPool
from tests.conftest import START_METHODS

BIG = 2 * _transfer.MIN_SIZE  # bytes: above the threshold


def checksum(a):
    return float(np.asarray(a).sum())


def make_array(n, value=1.0):
    return np.full(n, value)


def describe(a):
    return (type(a).__name__, a.shape, a.dtype.str, a.flags.writeable, float(a.sum()))


def increment_in_place(a):
    a += 1  # a received argument is writable, as with the stdlib
    return float(a.sum())


def sizes(obj):
    return {k: len(v) for k, v in obj.items()}


def slice_sum(a, i, parts):
    step = len(a) // parts
    return float(a[i * step : (i + 1) * step].sum())


def readonly(a):
    return a.flags.writeable


def exit_now(_=None):
    os._exit(3)


def transfer_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum("corral-transfer" in line for line in f)


@pytest.fixture(params=START_METHODS)
def ctx(request):
    return corral.get_context(request.param)


def test_dumps_keeps_big_buffers_out_of_the_message():
    small, none = _transfer.dumps(np.arange(10))
    assert type(small) is bytes and none is None
    big_array = np.arange(BIG // 8, dtype=np.float64)
    message, outgoing = _transfer.dumps({"a": big_array, "n": 1})
    try:
        header, spans, n_shared = message
        assert n_shared == 0 and len(spans) == 1 and spans[0][1] == big_array.nbytes
        assert len(header) < 1024  # only the small pickle crosses the socket
        assert outgoing.segment is not None
    finally:
        outgoing.release()
    message, outgoing = _transfer.dumps(b"x" * BIG)  # pickles in band: the pickle moves
    try:
        header, spans, _n = message
        assert header is None and spans[0][1] > BIG
    finally:
        outgoing.release()
        _transfer.outbox().clear()  # (a pool's end does this)


def test_arrays_both_ways(ctx):
    a = np.arange(BIG // 8, dtype=np.float64)
    with ctx.Pool(2) as pool:
        assert pool.apply(checksum, (a,)) == float(a.sum())
        assert pool.apply_async(checksum, (a,)).get(60) == float(a.sum())
        assert pool.map(checksum, [a, a * 2]) == [float(a.sum()), float((a * 2).sum())]
        assert list(pool.imap(checksum, [a, a], chunksize=1)) == [float(a.sum())] * 2
        result = pool.apply(make_array, (BIG // 8, 2.0))
        assert describe(result) == ("ndarray", (BIG // 8,), "<f8", True, 2.0 * (BIG // 8))
        result[:] = 0  # the caller owns what it received
        assert pool.apply(increment_in_place, (a,)) == float(a.sum()) + len(a)
        assert float(a.sum()) == float(np.arange(BIG // 8, dtype=np.float64).sum())
    with corral.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert ex.submit(checksum, a).result(60) == float(a.sum())
        assert list(ex.map(checksum, [a, a])) == [float(a.sum())] * 2
        assert describe(ex.submit(make_array, BIG // 8).result(60))[3] is True


def test_bytes_pickle_buffers_and_mixed_messages():
    blob = os.urandom(BIG)
    mixed = {"small": b"s", "big1": blob, "big2": bytearray(blob[: BIG // 2])}
    with corral.get_context("fork").Pool(1) as pool:
        assert pool.apply(len, (blob,)) == BIG
        assert pool.apply(sizes, (mixed,)) == {"small": 1, "big1": BIG, "big2": BIG // 2}
        assert pool.apply(bytes, (pickle.PickleBuffer(bytearray(blob)),)) == blob
        assert pool.apply(os.urandom, (BIG,)).__len__() == BIG
        many = [np.full(BIG // 8 // 4, i, dtype=np.float64) for i in range(6)]
        assert pool.apply(checksum, (np.concatenate(many),)) == float(sum(m.sum() for m in many))


def test_a_requeued_task_keeps_its_big_arguments():
    """A task sent ahead to a worker that dies before starting it runs elsewhere, intact."""
    a = np.arange(BIG // 8, dtype=np.float64)
    with corral.get_context("fork").Pool(1) as pool:
        first = pool.apply_async(exit_now)  # the worker dies with the next task unread
        second = pool.apply_async(checksum, (a,))
        with pytest.raises(corral.WorkerLostError):
            first.get(60)
        assert second.get(60) == float(a.sum())


def test_nothing_stays_mapped_after_the_pool_ends(ctx):
    a = np.arange(BIG // 8, dtype=np.float64)
    before = transfer_mappings()
    pool = ctx.Pool(2)
    for _ in range(3):
        assert pool.apply(checksum, (a,)) == float(a.sum())
        pool.apply(make_array, (BIG // 8,))
    pending = pool.apply_async(make_array, (BIG // 8,))  # a result never collected
    kept = pool.apply(make_array, (BIG // 8,))  # a result the caller keeps
    pool.terminate()
    pool.join()
    del pending
    gc.collect()
    assert transfer_mappings() <= before + 1  # only the kept result's segment
    del kept
    gc.collect()
    assert transfer_mappings() == before


def test_share_once_many_tasks(ctx):
    a = np.arange(BIG // 8, dtype=np.float64)
    with ctx.Pool(2) as pool:
        handle = pool.share(a)
        parts = pool.starmap(slice_sum, [(handle, i, 64) for i in range(64)], chunksize=3)
        assert np.isclose(sum(parts), a.sum())
        assert pool.apply(readonly, (handle,)) is False  # a read-only view, never a copy
        assert pool.apply(checksum, ({"nested": [handle]}["nested"][0],)) == float(a.sum())
        view = handle.get()
        assert view.flags.writeable is False and np.array_equal(view, a)
        del view
        handle.release()
        with pytest.raises(ValueError, match="released; share it again"):
            pool.apply(checksum, (handle,))
        assert pool.apply(checksum, (a,)) == float(a.sum())  # the pool still works
    with corral.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        handle = ex.share(a)
        assert list(ex.map(slice_sum, [handle] * 4, range(4), [4] * 4)) == [
            float(p.sum()) for p in np.split(a, 4)
        ]
    assert handle.released  # the executor ended


def test_share_handle_errors_and_pool_end():
    a = np.arange(BIG // 8, dtype=np.float64)
    pool = corral.get_context("fork").Pool(1)
    handle = pool.share(a)
    with pytest.raises(TypeError, match="only be passed in the arguments of tasks"):
        pickle.dumps(handle)
    queue = corral.get_context("fork").SimpleQueue()
    with pytest.raises(TypeError, match="only be passed in the arguments of tasks"):
        queue.put(handle)
    queue.close()
    assert "live" in repr(handle)
    pool.close()
    pool.join()
    assert handle.released and "released" in repr(handle)
    with pytest.raises(ValueError, match="Pool not running"):
        pool.share(a)


def test_thread_pool_share_passes_the_object():
    a = np.arange(10.0)
    with ThreadPool(2) as pool:
        handle = pool.share(a)
        assert handle.get() is a
        assert pool.apply(checksum, (handle,)) == float(a.sum())
        assert pool.map(checksum, [handle, handle]) == [float(a.sum())] * 2
        assert pool.starmap(slice_sum, [(handle, 0, 2)]) == [float(a[:5].sum())]
        with pytest.raises(TypeError):
            pickle.dumps(handle)


def test_one_gib_array_round_trip():
    gib = np.ones(1 << 27, dtype=np.float64)  # 1 GiB
    with corral.get_context("fork").Pool(1) as pool:
        assert pool.apply(checksum, (gib,)) == float(1 << 27)
        back = pool.apply(make_array, (1 << 27, 2.0))
        assert back.nbytes == 1 << 30 and float(back[-1]) == 2.0
        del back
    del gib


def test_without_shared_memory_big_messages_use_the_socket(monkeypatch):
    def no_memory(self, parts):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(_transfer.Outbox, "write", no_memory)  # fork: in the workers too
    a = np.arange(BIG // 8, dtype=np.float64)
    with corral.get_context("fork").Pool(1) as pool:
        assert pool.apply(checksum, (a,)) == float(a.sum())
        assert float(pool.apply(make_array, (BIG // 8,)).sum()) == BIG // 8
        assert pool.map(checksum, [a, a]) == [float(a.sum())] * 2


def inc(a):
    a += 1
    return a


def test_read_only_arrays_arrive_writable_as_with_the_stdlib(ctx):
    for n in (10, BIG // 8):
        a = np.arange(n, dtype=np.float64)
        a.flags.writeable = False
        with ctx.Pool(1) as pool:
            back = pool.apply(inc, (a,))  # the stdlib's workers get a writable copy
            assert back.flags.writeable and float(back.sum()) == float(a.sum()) + n
            ro_result = pool.apply(np.asarray, (a,))
            assert ro_result.flags.writeable  # the stdlib's results are writable too


def test_bare_pickle_buffers_arrive_as_bytes_or_bytearray():
    blob = os.urandom(BIG)
    with corral.get_context("fork").Pool(1) as pool:
        assert type(pool.apply(ident, (pickle.PickleBuffer(bytearray(blob)),))) is bytearray
        assert type(pool.apply(ident, (pickle.PickleBuffer(blob),))) is bytes
        small = pool.apply(ident, (pickle.PickleBuffer(bytearray(b"ab")),))
        assert type(small) is bytearray and small == b"ab"


def ident(x):
    return x


def test_release_while_tasks_are_pending_keeps_the_pool_working():
    a = np.arange(BIG // 8, dtype=np.float64)
    with corral.get_context("fork").Pool(2) as pool:
        handle = pool.share(a)
        pending = pool.map_async(checksum, [handle] * 30, chunksize=1)
        handle.release()  # the tasks already submitted still get the array
        assert pending.get(60) == [float(a.sum())] * 30
        with pytest.raises(ValueError, match="released; share it again"):
            pool.apply(checksum, (handle,))
        assert pool.apply(checksum, (a,)) == float(a.sum())
    with corral.ProcessPoolExecutor(2, mp_context=corral.get_context("fork")) as ex:
        handle = ex.share(a)
        futures = [ex.submit(checksum, handle) for _ in range(20)]
        handle.release()
        assert [f.result(60) for f in futures] == [float(a.sum())] * 20
        assert ex.submit(checksum, a).result(60) == float(a.sum())


def test_share_of_something_unpicklable_fails_cleanly(capfd):
    with corral.get_context("fork").Pool(1) as pool:
        with pytest.raises(TypeError, match="cannot pickle"):
            pool.share({"k": threading.Lock()})
        gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_non_contiguous_array_is_shared_as_a_view():
    a = np.arange(BIG // 4, dtype=np.float64)[::2]
    with corral.get_context("fork").Pool(1) as pool:
        handle = pool.share(a)
        assert pool.apply(readonly, (handle,)) is False  # a view of the shared copy
        assert pool.apply(checksum, (handle,)) == float(a.sum())


@pytest.mark.parametrize("n", [10, BIG // 8])
def test_read_only_arrays_through_queues_and_pipes_arrive_writable(n):
    a = np.arange(n, dtype=np.float64)
    a.flags.writeable = False
    ctx = corral.get_context("fork")
    queue = ctx.SimpleQueue()
    reader, writer = ctx.Pipe()
    try:
        queue.put(a)
        sender = threading.Thread(target=writer.send, args=(a,))  # a pipe holds less
        sender.start()
        for got in (queue.get(), reader.recv()):
            assert got.flags.writeable and np.array_equal(got, a)
        sender.join(30)
    finally:
        queue.close()
        reader.close()
        writer.close()


def test_more_shared_handles_than_a_message_can_carry_fail_at_the_call():
    with corral.get_context("fork").Pool(1) as pool:
        handles = [pool.share(np.arange(4.0)) for _ in range(300)]
        with pytest.raises(ValueError, match="at most 252 shared object handles"):
            pool.apply_async(len, (handles,))
        assert pool.apply(len, (handles[:10],)) == 10  # the pool still works


class ReleasesWhilePickled:
    def __init__(self, handle):
        self.handle = handle

    def __reduce__(self):
        self.handle.release()  # another thread could do this between two steps
        return (int, (0,))


def test_a_release_racing_the_pickling_of_a_task_is_safe():
    a = np.arange(BIG // 8, dtype=np.float64)
    with corral.get_context("fork").Pool(1) as pool:
        handle = pool.share(a)
        assert pool.apply(checksum, (handle,), {}) == float(a.sum())
        # pickled first (and pinned), released while the rest is pickled: the task still runs
        assert pool.apply(slice_sum, (handle, 0, 1), {}) == float(a.sum())
        result = pool.apply_async(first_of, ((handle, ReleasesWhilePickled(handle)),))
        assert result.get(60) == float(a.sum())
        with pytest.raises(ValueError, match="released"):
            pool.apply(checksum, (handle,))


def first_of(pair):
    return float(pair[0].sum())


def test_a_forked_child_dropping_its_copy_does_not_free_the_parents_result():
    with corral.get_context("fork").Pool(1) as pool:
        kept = pool.apply(make_array, (BIG // 8, 1.0))
        child = corral.get_context("fork").Process(target=drop_and_exit, args=(kept,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        pool.apply(make_array, (BIG // 8, 2.0))  # may reuse a free segment only
        assert float(kept[0]) == 1.0 and float(kept.sum()) == BIG // 8


def drop_and_exit(array):
    del array
    gc.collect()


def test_a_finished_task_with_a_deadline_keeps_no_result_alive():
    with corral.get_context("fork").Pool(1, task_timeout=600) as pool:
        before = transfer_mappings()
        for _ in range(5):
            pool.apply(make_array, (BIG // 8,))
        gc.collect()
        assert transfer_mappings() <= before + 2  # not one per result until the deadline
