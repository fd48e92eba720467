"""Recipe: a process pool from asyncio (docs/guide.md, "asyncio").

``await`` a pool's ``AsyncResult`` or an executor's future, ``async for`` over
``imap``; the event loop is never blocked. Cancelling the awaiting task (here
through ``asyncio.wait_for``) cancels the call if it has not started yet.

Run: python examples/asyncio_pool.py
"""

from __future__ import annotations

import asyncio
import time

import corral


def slow_square(x: int, seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return x * x


async def main() -> None:
    with corral.Pool(2) as pool:
        print("await apply_async:", await pool.apply_async(slow_square, (7,)))
        print("await map_async:", await pool.map_async(slow_square, range(5)))
        squares = [x async for x in pool.imap(slow_square, range(5))]
        print("async for over imap:", squares)
    with corral.ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(slow_square, x) for x in range(5)]
        print("gather executor futures:", await asyncio.gather(*futures))
        loop = asyncio.get_running_loop()
        print("run_in_executor:", await loop.run_in_executor(executor, slow_square, 9))
    with corral.ProcessPoolExecutor(1) as executor:
        busy = executor.submit(slow_square, 2, 1.0)  # the one worker is busy for 1 s
        queued = [executor.submit(slow_square, x) for x in range(5)]
        try:
            await asyncio.wait_for(queued[-1], timeout=0.2)
        except asyncio.TimeoutError:
            print("wait_for timed out; the waiting call was cancelled:", queued[-1].cancelled())
        print("the running call finishes:", await busy)


if __name__ == "__main__":
    asyncio.run(main())
