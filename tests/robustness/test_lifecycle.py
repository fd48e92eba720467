"""A pool's whole life: start-up that keeps failing, tasks stuck behind a hung
task, and the interpreter exiting with work pending.

Every scenario runs in a fresh interpreter in its own session (``scenario.run``),
which checks that no process of it survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import START_METHODS
from tests.robustness.scenario import Scenario, assert_no_survivors, run

# ----------------------------------------------------------------- hung tasks

HUNG_FIRST = """
front, method = sys.argv[1], sys.argv[2]
if __name__ == "__main__":
    if front == "pool":
        pool = corral.get_context(method).Pool(2)
        stuck = pool.apply_async(hang, (120,))
        results = [pool.apply_async(square, (i,)) for i in range(4)]
        print("results", [r.get(30) for r in results], flush=True)
        unordered = pool.imap_unordered(square, range(10, 14), chunksize=1)
        print("imap", sorted(unordered.next(30) for _ in range(4)), flush=True)
        pool.terminate()
    elif front == "threads":
        from corral.pool import ThreadPool
        pool = ThreadPool(2)
        stuck = pool.apply_async(threading.Event().wait)
        results = [pool.apply_async(square, (i,)) for i in range(4)]
        print("results", [r.get(30) for r in results], flush=True)
        print("imap", sorted(pool.imap_unordered(square, range(10, 14))), flush=True)
        pool.terminate()
    else:
        ex = ProcessPoolExecutor(2, mp_context=corral.get_context(method))
        stuck = ex.submit(hang, 120)
        futures = [ex.submit(square, i) for i in range(4)]
        print("results", [f.result(30) for f in futures], flush=True)
        print("imap", sorted(ex.map(square, range(10, 14), timeout=30)), flush=True)
        ex.kill_workers()
"""


@pytest.mark.parametrize(
    ("front", "method"),
    [("pool", m) for m in START_METHODS] + [("executor", "fork"), ("threads", "-")],
)
def test_tasks_behind_a_hung_task_run_on_the_idle_worker(tmp_path, front, method):
    # Tasks sent ahead to the worker that is stuck are taken back for the other.
    code, out, err = run(tmp_path, HUNG_FIRST, front, method, timeout=90)
    assert code == 0, err
    assert "results [0, 1, 4, 9]" in out
    assert "imap [100, 121, 144, 169]" in out


EXACTLY_ONCE = """
done_event = None

def remember(event):
    global done_event
    done_event = event

def record(i, path):
    if i == 0:
        done_event.wait(60)  # long enough for the others to be taken back
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{i}\\n".encode())
    os.close(fd)
    return i

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    path = sys.argv[2]
    event = ctx.Event()
    with ctx.Pool(2, initializer=remember, initargs=(event,)) as pool:
        first = pool.apply_async(record, (0, path))
        rest = [pool.apply_async(record, (i, path)) for i in range(1, 300)]
        assert [r.get(60) for r in rest] == list(range(1, 300))
        event.set()  # the first task ends; its worker finds its tasks taken back
        assert first.get(60) == 0
        more = [pool.apply_async(record, (i, path)) for i in range(300, 400)]
        assert [r.get(60) for r in more] == list(range(300, 400))
    runs = sorted(int(line) for line in open(path))
    print("ran", len(runs), runs == list(range(400)))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_tasks_taken_back_run_exactly_once(tmp_path, method):
    code, out, err = run(tmp_path, EXACTLY_ONCE, method, str(tmp_path / "runs"), timeout=120)
    assert code == 0, err
    assert "ran 400 True" in out


# ----------------------------------------------------------------- start-up

NO_MAIN_GUARD = """
front, method = sys.argv[1], sys.argv[2]
ctx = corral.get_context(method)
if front == "pool":
    pool = ctx.Pool(2)
    print(pool.map(abs, [-1, -2]))
else:
    ex = ProcessPoolExecutor(2, mp_context=ctx)
    print(list(ex.map(abs, [-1, -2])))
"""


@pytest.mark.parametrize("front", ["pool", "executor"])
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_missing_main_guard_breaks_the_pool_once(tmp_path, front, method):
    # Every worker re-imports the script, which starts a pool: each dies in
    # start-up. Three in a row break the pool with one clear error.
    code, _out, err = run(tmp_path, NO_MAIN_GUARD, front, method, timeout=60)
    assert code == 1
    assert "WorkerStartupError: 3 worker processes in a row died" in err
    assert "if __name__ == '__main__':" in err
    assert f"{method!r} start method" in err
    assert err.count("Traceback") <= 6, err[-3000:]


IMPORT_FAILS_IN_CHILD = """
if __name__ == "__mp_main__":
    raise ImportError("this module cannot be imported by a child")

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        pending = pool.apply_async(square, (3,))
        try:
            pending.get(60)
        except corral.WorkerStartupError as exc:
            print("pending:", type(exc).__name__)
        try:
            pool.apply(square, (4,))
        except corral.WorkerStartupError as exc:
            print("later:", type(exc).__name__)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_main_module_failing_in_children_breaks_the_pool(tmp_path, method):
    code, out, err = run(tmp_path, IMPORT_FAILS_IN_CHILD, method, timeout=60)
    assert code == 0, err
    assert out.split("\n")[:2] == ["pending: WorkerStartupError", "later: WorkerStartupError"]
    assert err.count("Traceback") <= 6, err[-3000:]


KILLED_WHILE_STARTING = """
def die_while_starting(path, deaths):
    # The first `deaths` workers to start kill themselves before they are ready.
    for n in range(deaths):
        try:
            os.close(os.open(f"{path}.{n}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    method, path, deaths = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = corral.get_context(method)
    with ctx.Pool(1, initializer=die_while_starting, initargs=(path, deaths)) as pool:
        try:
            print("results", pool.map(square, range(5)))
        except corral.WorkerStartupError as exc:
            print("broken", "SIGKILL" in str(exc))
        try:
            print("later", pool.apply(square, (7,)))
        except corral.WorkerStartupError:
            print("later broken")
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_two_workers_killed_while_starting_do_not_trip_the_breaker(tmp_path, method):
    code, out, err = run(
        tmp_path, KILLED_WHILE_STARTING, method, str(tmp_path / "death"), "2", timeout=60
    )
    assert code == 0, err
    assert out.split("\n")[:2] == ["results [0, 1, 4, 9, 16]", "later 49"]


def test_workers_always_killed_while_starting_break_the_pool(tmp_path):
    code, out, err = run(
        tmp_path, KILLED_WHILE_STARTING, "fork", str(tmp_path / "death"), "1000", timeout=60
    )
    assert code == 0, err
    assert out.split("\n")[:2] == ["broken True", "later broken"]


# ----------------------------------------------------------------- interpreter exit

EXIT_WITH_PENDING_WORK = """
def write(path):
    threading.Event().wait(0.3)  # still running when the main thread ends
    with open(path, "w") as f:
        f.write("ran")

def submit_and_drop(ctx, path):
    ex = ProcessPoolExecutor(1, mp_context=ctx)
    ex.submit(write, path)  # the executor is garbage as soon as this returns

if __name__ == "__main__":
    how, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
    ctx = corral.get_context(method)
    if how == "shutdown-nowait":  # bpo-39205
        ex = ProcessPoolExecutor(2, mp_context=ctx)
        ex.submit(write, path)
        ex.shutdown(wait=False)
    elif how == "dropped":
        submit_and_drop(ctx, path)
    elif how == "map":
        ex = ProcessPoolExecutor(2, mp_context=ctx)
        ex.map(write, [path])
    print("main done", flush=True)
"""


@pytest.mark.parametrize("how", ["shutdown-nowait", "dropped", "map"])
@pytest.mark.parametrize("method", START_METHODS)
def test_executor_work_pending_at_exit_still_runs(tmp_path, how, method):
    path = tmp_path / "out"
    code, out, err = run(tmp_path, EXIT_WITH_PENDING_WORK, how, method, str(path), timeout=60)
    assert (code, out, err) == (0, "main done\n", "")
    assert path.read_text() == "ran"


POOL_PENDING_AT_EXIT = """
if __name__ == "__main__":
    pool = corral.get_context(sys.argv[1]).Pool(2)
    first = pool.apply_async(square, (3,))
    assert first.get(30) == 9
    pending = [pool.apply_async(hang, (60,)) for _ in range(4)]
    print("main done", flush=True)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_work_pending_at_exit_is_dropped_quickly(tmp_path, method):
    # As the stdlib's Pool does: at exit its finalizer terminates the pool.
    code, out, err = run(tmp_path, POOL_PENDING_AT_EXIT, method, timeout=30)
    assert (code, out, err) == (0, "main done\n", "")


STDIN_SCRIPT = """
import corral

def double(x):
    return 2 * x

if __name__ == "__main__":
    with corral.get_context("spawn").Pool(2) as pool:
        print(pool.map(double, range(3)))
"""


def test_script_on_stdin_under_spawn_names_the_real_cause():
    # A spawn child cannot re-import a main module read from standard input:
    # the breaker's message says so instead of advising the main guard.
    proc = subprocess.Popen(
        [sys.executable, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _out, err = proc.communicate(STDIN_SCRIPT, timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the script on stdin did not end within 60 s")
    assert_no_survivors(proc.pid)
    assert proc.returncode == 1
    assert "WorkerStartupError" in err
    assert "'<stdin>', which is not a file a child can read" in err


HUNG_AT_EXIT = """
if __name__ == "__main__":
    ex = ProcessPoolExecutor(1, mp_context=corral.get_context(sys.argv[1]))
    assert ex.submit(square, 3).result(30) == 9
    ex.submit(hang, 600)
    say("main done")
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_while_exit_waits_for_a_hung_task_stops_it(tmp_path, method):
    # At exit the executor's work still runs to its end, as the stdlib's does;
    # a task that never ends holds the exit until Ctrl-C, which stops the
    # workers at once and leaves nothing behind.
    scenario = Scenario(tmp_path, HUNG_AT_EXIT, method)
    scenario.wait_for_line("main done")
    sent = scenario.send_signal_when_blocked(signal.SIGINT)
    _code, _out, err = scenario.finish(timeout=30)  # Python keeps status 0 here
    assert time.monotonic() - sent < 10
    assert "KeyboardInterrupt" in err
