# ruff: noqa: E501  (scenario scripts and their expected lines read best unwrapped)
"""``chunksize="auto"`` under faults: a worker that dies fails its chunk, nothing waits forever.

The feed cuts each chunk once an earlier one has finished, so every chunk
must report an outcome (a lost worker's, a stopped pool's) or the call would
wait for ever. Each scenario runs in a fresh interpreter with a hard timeout.
"""

from __future__ import annotations

import pytest

from tests.conftest import START_METHODS
from tests.robustness.scenario import run

DEATH_IN_A_CHUNK = """
ctx = corral.get_context(sys.argv[1])

def die_on(x):
    if x == 137:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x

if __name__ == "__main__":
    with ctx.Pool(2) as pool:
        try:
            pool.map(die_on, range(400), chunksize="auto")
        except corral.WorkerLostError as exc:
            print("map lost", "SIGKILL(-9)" in str(exc))
        results, errors = [], 0
        it = pool.imap(die_on, range(400), chunksize="auto")
        while True:
            try:
                results.append(next(it))
            except StopIteration:
                break
            except corral.WorkerLostError:
                errors += 1
        squares = [i * i for i in range(400)]
        print("imap", errors, len(results) < 400, results == sorted(results), set(results) <= set(squares), 137 * 137 not in results)
        print("after", pool.map(square, range(1000), chunksize="auto") == [i * i for i in range(1000)])
        pending = pool.map_async(die_on, range(100, 200), chunksize="auto")
        try:
            pending.get(60)
        except corral.WorkerLostError:
            print("map_async lost")
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        try:
            list(ex.map(die_on, range(400), chunksize="auto", timeout=60))
        except corral.WorkerLostError:
            print("executor lost")
        print("executor after", list(ex.map(square, range(5), chunksize="auto")))
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_worker_death_fails_its_chunk_and_the_call_returns(tmp_path, method):
    code, out, err = run(tmp_path, DEATH_IN_A_CHUNK, method)
    assert code == 0, err
    assert "map lost True" in out
    assert "imap 1 True True True True" in out  # the lost chunk alone is missing
    assert "after True" in out
    assert "map_async lost" in out
    assert "executor lost" in out
    assert "executor after [0, 1, 4, 9, 16]" in out


TERMINATE_DURING = """
ctx = corral.get_context(sys.argv[1])
if __name__ == "__main__":
    pool = ctx.Pool(2)
    pending = pool.map_async(hang, [30] * 50, chunksize="auto")
    it = pool.imap_unordered(hang, iter([30] * 50), chunksize="auto")
    say("started")
    pool.terminate()
    try:
        pending.get(30)
    except corral.BrokenProcessPool:
        print("map_async broken")
    try:
        it.next(30)
    except corral.BrokenProcessPool:
        print("imap broken")
    pool.join()
    print("joined")
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_terminate_during_auto_calls_fails_them(tmp_path, method):
    code, out, err = run(tmp_path, TERMINATE_DURING, method)
    assert code == 0, err
    assert "map_async broken" in out and "imap broken" in out and "joined" in out
