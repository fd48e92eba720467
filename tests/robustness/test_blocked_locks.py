"""A blocked acquire honours its timeout and gives way to Ctrl-C (issue 4)."""

from __future__ import annotations

import signal
import time

import pytest

import corral
from tests.robustness.scenario import Scenario

pytestmark = pytest.mark.timeout(60)


def _hold(lock, held, release):
    with lock:
        held.set()
        release.wait(30)


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore"])
def test_acquire_timeout_is_honoured(kind):
    ctx = corral.get_context("fork")
    primitive = ctx.Semaphore(0) if kind == "Semaphore" else getattr(ctx, kind)()
    release = ctx.Event()
    holder = None
    if kind != "Semaphore":  # held by another process, so this one must wait
        held = ctx.Event()
        holder = ctx.Process(target=_hold, args=(primitive, held, release))
        holder.start()
        assert held.wait(10)
    try:
        start = time.monotonic()
        assert primitive.acquire(timeout=0.2) is False
        waited = time.monotonic() - start
        assert 0.19 <= waited < 1.0  # on time, give or take the machine's scheduling
    finally:
        release.set()
        if holder is not None:
            holder.join(10)


BLOCKED = """
import traceback
lock = corral.{kind}({arg})
if __name__ == "__main__":
    {prepare}
    try:
        print("ready", flush=True)  # inside the try: a signal from here on is caught
        lock.acquire()
    except KeyboardInterrupt as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1].line
        print("interrupted", time.monotonic(), where, flush=True)
"""


@pytest.mark.parametrize(
    ("kind", "arg", "prepare"),
    [("Lock", "", "lock.acquire()"), ("Semaphore", "0", "pass")],
)
def test_ctrl_c_interrupts_a_blocked_acquire(tmp_path, kind, arg, prepare):
    scenario = Scenario(tmp_path, BLOCKED.format(kind=kind, arg=arg, prepare=prepare), "fork")
    scenario.wait_for_line("ready")
    sent = scenario.send_signal_when_blocked(signal.SIGINT)  # asleep in acquire()
    _code, out, err = scenario.finish(timeout=30)
    assert "interrupted" in out, err
    stamp, where = out.split("interrupted")[1].split(maxsplit=1)
    assert where.strip() == "lock.acquire()"  # the blocked call is what gave way
    assert float(stamp) - sent < 2.0
