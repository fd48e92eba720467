# ruff: noqa: E501  (scenario scripts and their expected lines read best unwrapped)
"""The robustness promises of issue 3, each in a fresh interpreter with a hard timeout.

Every scenario ends with a check that no process of its session survives.
"""

from __future__ import annotations

import signal

import pytest

from tests.conftest import START_METHODS
from tests.robustness.scenario import Scenario, run

# --------------------------------------------------------------------------- 1. worker deaths

DEATHS = """
ctx = corral.get_context(sys.argv[1])
kind = sys.argv[2]
killers = {
    "sigkill": (suicide, (signal.SIGKILL,), "SIGKILL(-9)"),
    "segfault": (segfault, (), "SIGSEGV(-11)"),
    "os_exit": (hard_exit, (7,), "exit code 7"),
    "sys_exit": (soft_exit, (5,), "exit code 5"),
}
fn, args, expected = killers[kind]
if __name__ == "__main__":
    with ctx.Pool(2) as pool:
        good = [pool.apply_async(square, (i,)) for i in range(20)]
        bad = pool.apply_async(fn, args)
        more = [pool.apply_async(square, (i,)) for i in range(20, 40)]
        try:
            bad.get(30)
        except corral.WorkerLostError as exc:
            print("lost", type(exc).__name__, expected in str(exc), exc.pid is not None)
        print("others", [r.get(30) for r in good + more] == [i * i for i in range(40)])
        print("after", pool.map(square, range(10)) == [i * i for i in range(10)])
        # The pool is idle now: apply() talks to a parked worker directly.
        try:
            pool.apply(fn, args)
        except corral.WorkerLostError as exc:
            print("direct lost", expected in str(exc))
        print("direct after", [pool.apply(square, (i,)) for i in range(3)])
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(square, i) for i in range(10)]
        bad = ex.submit(fn, *args)
        try:
            bad.result(30)
        except corral.WorkerLostError as exc:
            print("executor lost", expected in str(exc))
        print("executor others", [f.result(30) for f in futures] == [i * i for i in range(10)])
        print("executor after", ex.submit(square, 3).result(30))
        # Idle again: result() runs the task itself on a parked worker.
        try:
            ex.submit(fn, *args).result(30)
        except corral.WorkerLostError as exc:
            print("executor direct lost", expected in str(exc))
        print("executor direct after", [ex.submit(square, i).result(30) for i in range(3)])
"""


@pytest.mark.parametrize("kind", ["sigkill", "segfault", "os_exit", "sys_exit"])
def test_worker_death_fails_only_its_task(tmp_path, kind):
    code, out, err = run(tmp_path, DEATHS, "fork", kind)
    assert code == 0, err
    assert "lost " in out and "lost WorkerLostError True True" in out.replace(
        "TaskExitError", "WorkerLostError"
    )
    assert "others True" in out and "after True" in out
    assert "direct lost True" in out and "direct after [0, 1, 4]" in out
    assert "executor direct lost True" in out and "executor direct after [0, 1, 4]" in out
    assert (
        "executor lost True" in out and "executor others True" in out and "executor after 9" in out
    )


IDLE_KILL = """
ctx = corral.get_context(sys.argv[1])
if __name__ == "__main__":
    with ctx.Pool(2) as pool:
        victim = pool._pool[0].pid
        os.kill(victim, signal.SIGKILL)
        print("map", pool.map(square, range(50)) == [i * i for i in range(50)])
        pids = set(pool.map(pid_of_worker, range(200), chunksize=1))
        print("victim gone", victim not in pids)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_idle_worker_killed_from_outside(tmp_path, method):
    code, out, err = run(tmp_path, IDLE_KILL, method)
    assert code == 0, err
    assert "map True" in out and "victim gone True" in out


# --------------------------------------------------------------------------- 2-3. serialization and errors

SERIALIZATION = """
import pickle, threading
ctx = corral.get_context(sys.argv[1])

class Unreadable:
    def __reduce__(self):
        return (_fail_in_parent, ())

def _fail_in_parent():
    if corral.parent_process() is None:
        raise ValueError("cannot rebuild here")
    return "rebuilt"

def make_unreadable():
    return Unreadable()

def returns_lock():
    return threading.Lock()

def raises_lookup():
    raise LookupError("remote detail")

if __name__ == "__main__":
    with ctx.Pool(2) as pool:
        try:
            pool.apply_async(square, (threading.Lock(),))
        except corral.errors.SerializationError as exc:
            print("arg", "lock" in str(exc))
        r = pool.apply_async(returns_lock)
        try:
            r.get(30)
        except corral.pool.MaybeEncodingError as exc:
            print("result", "lock" in exc.value)
        try:
            pool.apply(make_unreadable)
        except corral.errors.ResultUnpicklingError as exc:
            print("unreadable", "cannot rebuild here" in str(exc))
        try:
            pool.apply(raises_lookup)
        except LookupError as exc:
            print("raised", type(exc.__cause__).__name__, "remote detail" in str(exc.__cause__))
        print("lambda", pool.map(lambda x: x + 1, [1, 2]), pool.apply((lambda k: lambda: k)(4)))
        print("alive", pool.apply(square, (6,)))
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_serialization_failures_fail_one_call(tmp_path, method):
    code, out, err = run(tmp_path, SERIALIZATION, method)
    assert code == 0, err
    for line in (
        "arg True",
        "result True",
        "unreadable True",
        "raised RemoteTraceback True",
        "lambda [2, 3] 4",
        "alive 36",
    ):
        assert line in out, (out, err)


# --------------------------------------------------------------------------- 4. initializer

INITIALIZER = """
ctx = corral.get_context(sys.argv[1])

def bad_init():
    raise RuntimeError("no database")

if __name__ == "__main__":
    t0 = time.monotonic()
    pool = ctx.Pool(2, initializer=bad_init)
    results = [pool.apply_async(square, (i,)) for i in range(10)]
    for r in results:
        try:
            r.get(30)
        except corral.InitializerError as exc:
            last = exc
    print("init", "no database" in str(last), "no database" in str(last.__cause__))
    try:
        pool.map(square, range(5))
    except corral.InitializerError:
        print("later fails")
    print("prompt", time.monotonic() - t0 < 10)
    pool.terminate()
    pool.join()
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=bad_init) as ex:
        # The workers may fail before submit() (it then raises, as the stdlib's
        # does once broken) or after (the future fails): either is the break.
        try:
            ex.submit(square, 2).result(30)
        except corral.BrokenProcessPool as exc:
            broke = exc if isinstance(exc, corral.InitializerError) else exc.__cause__
            print("executor", type(broke).__name__)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_failing_initializer_breaks_once(tmp_path, method):
    code, out, err = run(tmp_path, INITIALIZER, method)
    assert code == 0, err
    assert "init True True" in out and "later fails" in out and "prompt True" in out
    assert "executor InitializerError" in out
    assert err.count("no database") <= 8  # logged per worker that ran it: no respawn loop


# --------------------------------------------------------------------------- 5. deadlines

DEADLINE = """
ctx = corral.get_context(sys.argv[1])
if __name__ == "__main__":
    with ctx.Pool(2, task_timeout=30) as pool:
        stuck = pool.apply_async(hang, task_timeout=0.5)
        quick = [pool.apply_async(square, (i,)) for i in range(20)]
        try:
            stuck.get(20)
        except corral.TaskTimeoutError as exc:
            print("timeout", isinstance(exc, TimeoutError), isinstance(exc, corral.TimeoutError))
        print("others", [r.get(20) for r in quick] == [i * i for i in range(20)])
        print("after", pool.apply(square, (5,)))
    with ProcessPoolExecutor(2, mp_context=ctx, task_timeout=0.5) as ex:
        f = ex.submit(hang)
        try:
            f.result(20)
        except corral.TaskTimeoutError:
            print("executor timeout")
        print("executor after", ex.submit(square, 4).result(20))
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_task_timeout_replaces_the_worker(tmp_path, method):
    code, out, err = run(tmp_path, DEADLINE, method)
    assert code == 0, err
    assert "timeout True True" in out and "others True" in out and "after 25" in out
    assert "executor timeout" in out and "executor after 16" in out


SLOW_START = """
ctx = corral.get_context(sys.argv[1])

def slow_start():
    threading.Event().wait(1.0)  # start-up (imports, initializer) as slow as a loaded machine's

if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=ctx, task_timeout=0.5, initializer=slow_start) as ex:
        print("executor", ex.submit(square, 4).result(30))
    with ctx.Pool(1, task_timeout=0.5, initializer=slow_start) as pool:
        print("pool", pool.apply_async(square, (4,)).get(30))
"""


def test_task_timeout_does_not_count_the_worker_start_up(tmp_path):
    # Tasks go only to workers that said READY (their initializer ran), so the
    # deadline, armed when a task is sent, no longer counts a slow start-up.
    code, out, err = run(tmp_path, SLOW_START, "fork")
    assert code == 0, err
    assert "executor 16" in out and "pool 16" in out


# --------------------------------------------------------------------------- 6. recycling

RECYCLING = """
ctx = corral.get_context(sys.argv[1])

def grow(n):
    global ballast
    ballast = bytearray(n)
    return os.getpid()

if __name__ == "__main__":
    with ctx.Pool(2, maxtasksperchild=3) as pool:
        pids = pool.map(pid_of_worker, range(30), chunksize=1)
        print("pool recycled", len(set(pids)) >= 10, pool.map(square, range(100)) == [i * i for i in range(100)])
    with ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid_of_worker).result(30) for _ in range(8)]
        print("executor recycled", len(set(pids)) >= 4)
        print("executor map", list(ex.map(square, range(50))) == [i * i for i in range(50)])
    with ProcessPoolExecutor(1, mp_context=ctx, max_memory_per_child=200 * 2**20) as ex:
        first = ex.submit(grow, 10).result(30)
        second = ex.submit(grow, 300 * 2**20).result(30)
        third = ex.submit(grow, 10).result(30)
        print("memory recycled", first == second, third != second)
"""


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_recycling_keeps_results_right(tmp_path, method):
    code, out, err = run(tmp_path, RECYCLING, method, timeout=90)
    assert code == 0, err
    assert "pool recycled True True" in out
    assert "executor recycled True" in out and "executor map True" in out
    assert "memory recycled True True" in out


# --------------------------------------------------------------------------- 7. Ctrl-C

CTRL_C = """
ctx = corral.get_context(sys.argv[1])
where = sys.argv[2]

def hang_announced(_=None):
    say("running")  # from the worker: the call under test has begun
    return hang()

if __name__ == "__main__":
    try:
        if where == "executor":
            with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                fs = [ex.submit(hang_announced) for _ in range(4)]
                fs[0].result()
        elif where == "apply":
            with ctx.Pool(2) as pool:
                for i in range(20):
                    pool.apply(square, (i,))  # idle workers are parked: apply goes direct
                pool.apply(hang_announced)
        else:
            with ctx.Pool(2) as pool:
                pool.map(hang_announced, range(4), chunksize=1)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
"""


@pytest.mark.parametrize("where", ["pool", "apply", "executor"])
@pytest.mark.parametrize("target", ["parent", "group"])
def test_ctrl_c_stops_everything(tmp_path, where, target):
    scenario = Scenario(tmp_path, CTRL_C, "fork", where)
    scenario.wait_for_line("running")  # a worker runs the task: the parent waits for it
    sent = scenario.send_signal_when_blocked(signal.SIGINT, group=target == "group")
    _code, out, err = scenario.finish(timeout=30)
    assert "interrupted" in out, err
    stamp = float(out.split("interrupted")[1].split()[0])
    assert stamp - sent < 2.0


# --------------------------------------------------------------------------- 8. parent killed

PARENT_KILLED = """
ctx = corral.get_context(sys.argv[1])

def hang_announced():
    say("running", os.getpid())  # from the worker: past its start-up
    return hang(600)

if __name__ == "__main__":
    pool = ctx.Pool(2)
    print("workers", *[p.pid for p in pool._pool], flush=True)
    busy = [pool.apply_async(hang_announced) for _ in range(2)]
    threading.Event().wait(600)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_exit_when_parent_is_killed(tmp_path, method):
    import os

    import psutil

    scenario = Scenario(tmp_path, PARENT_KILLED, method)
    line = scenario.wait_for_line("workers")
    workers = [psutil.Process(int(pid)) for pid in line.split()[1:]]
    running = {scenario.wait_for_line("running"), scenario.wait_for_line("running")}
    assert len(running) == 2  # both workers started and run a task: now kill the parent
    os.kill(scenario.proc.pid, signal.SIGKILL)
    scenario.proc.wait(10)
    _gone, alive = psutil.wait_procs(workers, timeout=2.0)
    for proc in alive:
        proc.kill()
    assert not alive, "workers outlived their parent by more than 2 s"
    scenario.finish(timeout=10)


# --------------------------------------------------------------------------- 9. exit without close

NO_CLOSE = """
ctx = corral.get_context(sys.argv[1])
if __name__ == "__main__":
    pool = ctx.Pool(2)
    pending = [pool.apply_async(hang, (600,)) for _ in range(4)]
    ex = ProcessPoolExecutor(2, mp_context=ctx)
    f = ex.submit(square, 9)
    # An executor still shutting down in its engine thread while the
    # interpreter exits: the exit sequence must not trip over its workers.
    other = ProcessPoolExecutor(2, mp_context=ctx)
    for i in range(2000):
        other.submit(square, i)
    other.shutdown(wait=False, cancel_futures=True)
    print("leaving", f.result(30), flush=True)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_exit_without_close_is_prompt(tmp_path, method):
    import time

    start = time.monotonic()
    code, out, err = run(tmp_path, NO_CLOSE, method, timeout=30)
    assert code == 0, err
    assert "leaving 81" in out
    assert "Traceback" not in err, err
    assert time.monotonic() - start < 15


# --------------------------------------------------------------------------- 10. nesting and threads

NESTED = """
ctx = corral.get_context(sys.argv[1])

def inner_pool(n):
    with corral.get_context(sys.argv[1]).Pool(2) as pool:
        return sum(pool.map(square, range(n)))

if __name__ == "__main__":
    with ctx.Pool(2) as pool:
        print("nested", pool.map(inner_pool, [3, 4]))
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_task_can_create_its_own_pool(tmp_path, method):
    code, out, err = run(tmp_path, NESTED, method)
    assert code == 0, err
    assert "nested [5, 14]" in out


FORK_WITH_THREADS = """
import warnings
lock = threading.Lock()

def uses_lock(_):
    with lock:
        return "got it"

if __name__ == "__main__":
    t = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    t.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = corral.get_context("fork").Process(target=square, args=(1,))
        p.start()
        p.join()
    print("warned", any(issubclass(w.category, DeprecationWarning) and "multi-threaded" in str(w.message) for w in caught))
    with lock:  # held in the parent while workers start
        with corral.get_context(sys.argv[1]).Pool(1) as pool:
            print("held lock", pool.map(uses_lock, [0], chunksize=1))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_fork_with_threads_warns_and_other_methods_are_immune(tmp_path, method):
    code, out, err = run(tmp_path, FORK_WITH_THREADS, method)
    assert code == 0, err
    assert "warned True" in out
    assert "held lock ['got it']" in out


# --------------------------------------------------------------------------- 11. many pools

MANY_POOLS = """
import psutil
ctx = corral.get_context(sys.argv[1])
if __name__ == "__main__":
    me = psutil.Process()
    def snapshot():
        return (me.num_fds(), threading.active_count(), len(me.children(recursive=True)),
                sorted(n for n in os.listdir("/dev/shm") if str(os.getpid()) in n))
    with ctx.Pool(2) as pool:
        pool.map(square, range(10))
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        ex.submit(square, 1).result()
    before = snapshot()
    for i in range(200):
        if i % 2:
            with ctx.Pool(2) as pool:
                assert pool.map(square, range(10)) == [x * x for x in range(10)]
        else:
            with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                assert ex.submit(square, i).result() == i * i
    print("before", before)
    print("after ", snapshot())
"""


def test_two_hundred_pools_leak_nothing(tmp_path):
    code, out, err = run(tmp_path, MANY_POOLS, "fork", timeout=120)
    assert code == 0, err
    before = out.split("before")[1].splitlines()[0].strip()
    after = out.split("after ")[1].splitlines()[0].strip()
    assert before == after
