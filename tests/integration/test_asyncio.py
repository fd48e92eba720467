"""``await`` on AsyncResult and executor futures, ``async for`` over imap (issue 16, part 4)."""

from __future__ import annotations

import asyncio
from concurrent.futures import CancelledError

import pytest

import corral
from corral.pool import Pool

pytestmark = pytest.mark.timeout(120)

_gate = None


def _keep_gate(event) -> None:
    global _gate
    _gate = event


def _wait_at_gate(_: object = None) -> str:
    assert _gate is not None
    assert _gate.wait(60), "the test never opened the gate"
    return "through"


def _fail(x: int) -> None:
    raise KeyError(x)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_await_the_results_of_a_pool(method):
    async def main(pool: Pool) -> tuple:
        one = await pool.apply_async(pow, (2, 5))
        many = await pool.map_async(abs, [-1, -2, -3])
        ordered = [x async for x in pool.imap(abs, range(-5, 0))]
        unordered = sorted([x async for x in pool.imap_unordered(abs, range(-5, 0), 2)])
        with pytest.raises(KeyError) as caught:
            await pool.apply_async(_fail, (7,))
        assert isinstance(caught.value.__cause__, corral.pool.RemoteTraceback)
        return one, many, ordered, unordered

    with corral.get_context(method).Pool(2) as pool:
        one, many, ordered, unordered = asyncio.run(main(pool))
    assert one == 32
    assert many == [1, 2, 3]
    assert ordered == [5, 4, 3, 2, 1]
    assert unordered == [1, 2, 3, 4, 5]


def test_await_executor_futures_and_gather_them():
    async def main(ex: corral.ProcessPoolExecutor) -> list:
        futures = [ex.submit(pow, 2, n) for n in range(5)]
        results = await asyncio.gather(*futures)
        with pytest.raises(KeyError):
            await ex.submit(_fail, 1)
        return results

    with corral.ProcessPoolExecutor(2) as ex:
        assert asyncio.run(main(ex)) == [1, 2, 4, 8, 16]


def test_wait_for_running_out_cancels_a_task_that_has_not_started():
    gate = corral.get_context("fork").Event()

    async def main(ex: corral.ProcessPoolExecutor) -> tuple:
        blocker = ex.submit(_wait_at_gate)  # holds the one worker
        # Waiting behind it; the first may already be handed to the worker
        # (then it counts as running and cannot be cancelled, as in the stdlib).
        queued = [ex.submit(pow, 2, n) for n in range(4)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(queued[-1], 0.2)
        gate.set()
        return await blocker, queued

    ctx = corral.get_context("fork")
    with corral.ProcessPoolExecutor(
        1, mp_context=ctx, initializer=_keep_gate, initargs=(gate,)
    ) as ex:
        through, queued = asyncio.run(main(ex))
    assert through == "through"
    assert queued[-1].cancelled()  # it never ran
    assert [f.result(10) for f in queued[:2]] == [1, 2]  # the others did


def test_wait_for_running_out_cancels_a_pool_call_that_has_not_started():
    gate = corral.get_context("fork").Event()

    async def main(pool: Pool):
        running = pool.apply_async(_wait_at_gate)  # holds the one worker
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(running, 0.2)  # it runs: not cancelled
        waiting = [pool.apply_async(pow, (2, n)) for n in range(8)]
        mapped = pool.map_async(abs, [-1, -2])
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(waiting[-1], 0.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(mapped, 0.2)
        gate.set()
        return await running, waiting, mapped

    with corral.get_context("fork").Pool(1, initializer=_keep_gate, initargs=(gate,)) as pool:
        through, waiting, mapped = asyncio.run(main(pool))
        assert through == "through"  # the call that had started ran to its end
        for cancelled in (waiting[-1], mapped):
            with pytest.raises(CancelledError, match="cancelled before the call started"):
                cancelled.get(10)
        assert waiting[0].get(10) == 1  # the others ran
        assert pool.apply(abs, (-4,)) == 4  # and the pool goes on
