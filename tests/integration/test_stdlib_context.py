"""A stdlib ``multiprocessing`` context given to corral stands for corral's own context.

``corral.ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn"))``
used to start the stdlib's processes with corral's connections and hang on
``AuthenticationError`` forever; each case runs in a fresh interpreter with a
hard timeout because the failure is a hang.
"""

from __future__ import annotations

import pytest

from tests.robustness.scenario import run

pytestmark = pytest.mark.timeout(120)

METHODS = ["fork", "spawn", "forkserver"]

STDLIB_PRELUDE = """
import multiprocessing

def corral_made(obj):
    return type(obj).__module__.split(".")[0] == "corral"
"""

POOL = """
if __name__ == "__main__":
    from corral.pool import Pool
    stdlib_ctx = multiprocessing.get_context(sys.argv[1])
    with Pool(2, context=stdlib_ctx) as pool:
        print("map", pool.map(square, range(5)), flush=True)
        print("corral-workers", all(corral_made(p) for p in pool._pool), flush=True)
        print("start-method", {p._start_method for p in pool._pool}, flush=True)
    pool.join()
"""

EXECUTOR = """
if __name__ == "__main__":
    stdlib_ctx = multiprocessing.get_context(sys.argv[1])
    with ProcessPoolExecutor(2, mp_context=stdlib_ctx) as executor:
        print("map", list(executor.map(square, range(5))), flush=True)
        procs = list(executor._processes.values())
        print("corral-workers", all(corral_made(p) for p in procs), flush=True)
        print("start-method", {p._start_method for p in procs}, flush=True)
"""

MANAGERS = """
if __name__ == "__main__":
    from corral.managers import SharedMemoryManager, SyncManager
    stdlib_ctx = multiprocessing.get_context(sys.argv[1])
    with SyncManager(ctx=stdlib_ctx) as manager:
        shared = manager.dict(a=1)
        shared["b"] = 2
        print("dict", sorted(shared.items()), flush=True)
        print("server", corral_made(manager._process), manager._process._start_method, flush=True)
    with SharedMemoryManager(ctx=stdlib_ctx) as smm:
        print("list", list(smm.ShareableList([1, 2, 3])), flush=True)
"""

FACTORIES = """
from corral import queues, sharedctypes, synchronize

def child(q, jq, sq, lock, event, value, array):
    with lock:
        value.value += 1
        array[0] = 7
    q.put("q")
    jq.put("jq")
    sq.put("sq")
    event.set()

if __name__ == "__main__":
    stdlib_ctx = multiprocessing.get_context(sys.argv[1])
    ctx = corral.get_context(sys.argv[1])
    q = queues.Queue(ctx=stdlib_ctx)
    jq = queues.JoinableQueue(ctx=stdlib_ctx)
    sq = queues.SimpleQueue(ctx=stdlib_ctx)
    lock = synchronize.Lock(ctx=stdlib_ctx)
    event = synchronize.Event(ctx=stdlib_ctx)
    cond = synchronize.Condition(ctx=stdlib_ctx)
    barrier = synchronize.Barrier(1, ctx=stdlib_ctx)
    value = sharedctypes.Value("i", 0, ctx=stdlib_ctx)
    array = sharedctypes.Array("i", 3, ctx=stdlib_ctx)
    made = [q, jq, sq, lock, event, cond, barrier, value.get_lock(), array.get_lock()]
    print("corral-made", all(corral_made(x) for x in made), flush=True)
    p = ctx.Process(target=child, args=(q, jq, sq, lock, event, value, array))
    p.start()
    got = [q.get(timeout=30), jq.get(timeout=30), sq.get()]
    jq.task_done()
    print("got", got, flush=True)
    print("event", event.wait(30), flush=True)
    p.join(30)
    print("shared", value.value, array[0], p.exitcode, flush=True)
    q.close()
    jq.close()
    sq.close()
"""


def _lines(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.parametrize("front", ["pool", "executor"])
@pytest.mark.parametrize("method", METHODS)
def test_pools_with_a_stdlib_context_use_corrals_processes(tmp_path, method, front):
    body = POOL if front == "pool" else EXECUTOR
    status, out, err = run(tmp_path, STDLIB_PRELUDE + body, method, timeout=60)
    assert status == 0, err
    lines = _lines(out)
    assert lines["map"] == "[0, 1, 4, 9, 16]"
    assert lines["corral-workers"] == "True"
    assert lines["start-method"] == repr({method})
    assert "AuthenticationError" not in err


@pytest.mark.parametrize("method", METHODS)
def test_managers_with_a_stdlib_context_run_a_corral_server(tmp_path, method):
    status, out, err = run(tmp_path, STDLIB_PRELUDE + MANAGERS, method, timeout=60)
    assert status == 0, err
    lines = _lines(out)
    assert lines["dict"] == "[('a', 1), ('b', 2)]"
    assert lines["server"] == f"True {method}"
    assert lines["list"] == "[1, 2, 3]"


@pytest.mark.parametrize("method", METHODS)
def test_queue_lock_and_shared_value_factories_with_a_stdlib_context(tmp_path, method):
    status, out, err = run(tmp_path, STDLIB_PRELUDE + FACTORIES, method, timeout=60)
    assert status == 0, err
    lines = _lines(out)
    assert lines["corral-made"] == "True"
    assert lines["got"] == "['q', 'jq', 'sq']"
    assert lines["event"] == "True"
    assert lines["shared"] == "1 7 0"
