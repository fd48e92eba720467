"""Recipe: tasks that crash, hang or raise (docs/guide.md, "Timeouts and crashes").

Each failure fails its own task with a specific exception; every other result
arrives and the pool goes on with a fresh worker where one was lost.

Run: python examples/crashes_and_timeouts.py
"""

from __future__ import annotations

import os
import signal
import time

import corral


def work(x: int) -> int:
    """Square ``x``; 3 kills its worker, 5 hangs, 7 raises."""
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # a segfault or the OOM killer look the same
    if x == 5:
        time.sleep(3600)  # hangs: task_timeout stops it
    if x == 7:
        msg = "seven is not allowed"
        raise ValueError(msg)
    return x * x


def main() -> None:
    with corral.Pool(2, task_timeout=2) as pool:
        pending = [pool.apply_async(work, (x,)) for x in range(10)]
        for x, result in enumerate(pending):
            try:
                print(f"{x}: {result.get(timeout=60)}")
            except corral.WorkerLostError as exc:  # the worker died; the pool lives on
                print(f"{x}: worker lost ({type(exc).__name__})")
            except corral.TaskTimeoutError:  # ran past task_timeout; its worker was replaced
                print(f"{x}: timed out")
            except ValueError as exc:  # the task's own exception, remote traceback as cause
                print(f"{x}: raised {exc}")
        # The pool still works after all of that.
        print("after:", pool.map(work, [0, 1, 2]))


if __name__ == "__main__":
    main()
