"""The Pool and ProcessPoolExecutor front ends on a Dask cluster (issue 15).

Each test starts (or has corral start) a small local cluster for a 2-core
machine and checks, through ``no_leaks`` in this directory's conftest, that no
scheduler, nanny or worker process outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask backend tests need distributed: pip install 'corral[dask]'"
)
import dask  # noqa: E402

import corral  # noqa: E402
from corral.backends import Dask  # noqa: E402
from corral.errors import (  # noqa: E402
    BrokenProcessPool,
    InitializerError,
    MaybeEncodingError,
    RemoteTraceback,
    SerializationError,
    TaskTimeoutError,
    WorkerLostError,
)

pytestmark = pytest.mark.timeout(90)


def square(x: int) -> int:
    return x * x


def fail_with_key(x: int) -> None:
    raise KeyError(x)


def die_or_return(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


_initialised: list[str] = []


def record_start(path: str) -> None:
    _initialised.append(path)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


def pid_if_initialised(_: int) -> tuple[int, bool]:
    time.sleep(0.02)
    return os.getpid(), bool(_initialised)


@pytest.fixture
def user_cluster() -> object:
    """A cluster the user started (corral must never stop it): one worker, one thread."""
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},  # never the shared port 8787
    )
    try:
        yield cluster
    finally:
        cluster.close()


def test_pool_api_on_a_local_cluster_corral_starts_and_stops():
    with corral.Pool(backend="dask") as pool:
        assert pool._processes == (os.cpu_count() or 1)
        assert pool.map(square, range(20), chunksize=3) == [x * x for x in range(20)]
        assert list(pool.imap(lambda x: x + 1, range(10))) == list(range(1, 11))
        assert sorted(pool.imap_unordered(square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        done = threading.Event()
        got: list[int] = []
        pool.apply_async(square, (7,), callback=lambda v: (got.append(v), done.set()))
        assert done.wait(30)
        assert got == [49]
        with pytest.raises(KeyError) as info:
            pool.apply(fail_with_key, (5,))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "fail_with_key" in str(info.value.__cause__)
    pool.join()


def test_executor_api_on_a_local_cluster():
    with corral.ProcessPoolExecutor(max_workers=2, backend=Dask()) as ex:
        futures = [ex.submit(square, i) for i in range(10)]
        assert [f.result(timeout=30) for f in futures] == [i * i for i in range(10)]
        assert list(ex.map(square, range(50), timeout=30)) == [i * i for i in range(50)]
        with pytest.raises(KeyError):
            ex.submit(fail_with_key, 1).result(timeout=30)


def test_auto_chunks_on_a_cluster():
    # chunksize="auto" sizes chunks in the front end from the engine's claim and
    # on_done: the Dask engine needs nothing of its own.
    with corral.Pool(2, backend="dask") as pool:
        assert pool.map(square, range(300), chunksize="auto") == [x * x for x in range(300)]
        got = pool.imap(square, iter(range(100)), chunksize="auto")
        assert list(got) == [x * x for x in range(100)]
        with pytest.raises(KeyError):
            pool.map(fail_with_key, range(3), chunksize="auto")
    pool.join()
    with corral.ProcessPoolExecutor(max_workers=2, backend=Dask()) as ex:
        assert list(ex.map(square, range(100), chunksize="auto", timeout=60)) == [
            x * x for x in range(100)
        ]


@pytest.mark.parametrize("how", ["client", "address", "config", "default client"])
def test_an_existing_cluster_is_found_and_left_running(user_cluster, how):
    with distributed.Client(user_cluster, set_as_default=(how == "default client")) as client:
        backend: object = "dask"
        config = {}
        if how == "client":
            backend = Dask(client=client)
        elif how == "address":
            backend = Dask(address=user_cluster.scheduler_address)
        elif how == "config":
            config = {"scheduler-address": user_cluster.scheduler_address}
        with dask.config.set(config), corral.Pool(backend=backend) as pool:
            assert pool._processes == 1  # the user's cluster: one worker thread
            assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        pool.join()
        # Still there, still usable: corral closed only what it opened.
        assert client.submit(square, 6, pure=False).result(timeout=30) == 36
        assert len(client.nthreads()) == 1


def test_a_worker_killed_mid_task_fails_that_task_alone():
    with corral.Pool(2, backend="dask") as pool:
        results = [pool.apply_async(die_or_return, (i,)) for i in range(8)]
        for i, result in enumerate(results):
            if i == 3:
                with pytest.raises(
                    WorkerLostError, match="the Dask cluster lost this task"
                ) as info:
                    result.get(timeout=60)
                assert type(info.value.__cause__).__name__ == "KilledWorker"
            else:
                assert result.get(timeout=60) == i
        assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]  # the pool lives on


def die_when_told(x: int, path: str) -> int:
    if x == 0:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)  # the test kills this worker now
    time.sleep(0.05)
    return x


def test_tasks_beyond_capacity_wait_in_dask_and_a_death_fails_only_the_running_one(tmp_path):
    marker = tmp_path / "killer"
    with corral.Pool(2, backend="dask") as pool:
        engine = pool._engine
        results = [pool.apply_async(die_when_told, (i, str(marker))) for i in range(30)]
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "the first task never started"
            time.sleep(0.02)
        # More than the cluster's capacity is in Dask (the window), none of it on a worker.
        assert len(engine._running) > engine.size
        os.kill(int(marker.read_text()), signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            results[0].get(timeout=60)
        assert [r.get(timeout=60) for r in results[1:]] == list(range(1, 30))


def test_task_timeout_fails_the_task_and_the_pool_lives_on():
    with corral.Pool(2, backend="dask", task_timeout=2) as pool:
        slow = pool.apply_async(sleep_then, (60, 0))
        quick = [pool.apply_async(sleep_then, (0.1, i)) for i in range(4)]
        with pytest.raises(TaskTimeoutError, match="task_timeout=2"):
            slow.get(timeout=60)
        assert [r.get(timeout=60) for r in quick] == [0, 1, 2, 3]
        assert pool.apply(square, (9,)) == 81


def test_initializer_runs_once_per_worker_process(tmp_path):
    log = tmp_path / "starts"
    with corral.Pool(2, backend="dask", initializer=record_start, initargs=(str(log),)) as pool:
        seen = pool.map(pid_if_initialised, range(40), chunksize=1)
    pool.join()
    assert all(initialised for _pid, initialised in seen)
    started = log.read_text().split()
    assert len(started) == len(set(started)) == 2
    assert {pid for pid, _ in seen} <= {int(pid) for pid in started}


def test_limits_the_backend_does_not_support_are_refused():
    with pytest.raises(ValueError, match="max_tasks_per_child is not supported on the Dask"):
        corral.Pool(1, backend="dask", maxtasksperchild=3)
    with pytest.raises(ValueError, match="--memory-limit"):
        corral.Pool(1, backend="dask", max_memory_per_child=1 << 30)
    # The executor refuses at construction too (it starts its engine only at the
    # first submit), and starts no cluster to do so.
    before = set(psutil.Process().children())
    with pytest.raises(ValueError, match="max_tasks_per_child is not supported on the Dask"):
        corral.ProcessPoolExecutor(1, backend="dask", max_tasks_per_child=3)
    with pytest.raises(ValueError, match="--memory-limit"):
        corral.ProcessPoolExecutor(backend=Dask(), max_memory_per_child=1 << 30)
    assert set(psutil.Process().children()) == before


def fail_to_start() -> None:
    raise OSError("no licence server")


def test_a_failing_initializer_raises_initializer_error_and_leaves_nothing_running():
    with pytest.raises(InitializerError, match="initializer raised OSError: no licence") as info:
        corral.Pool(2, backend="dask", initializer=fail_to_start)
    assert isinstance(info.value.__cause__, OSError)
    executor = corral.ProcessPoolExecutor(1, backend="dask", initializer=fail_to_start)
    with executor, pytest.raises(InitializerError):
        executor.submit(square, 2)


def test_terminate_with_tasks_running_fails_them_and_stops_the_cluster():
    pool = corral.Pool(2, backend="dask")
    running = [pool.apply_async(sleep_then, (60, i)) for i in range(4)]
    pool.terminate()
    pool.join()
    for result in running:
        with pytest.raises(BrokenProcessPool, match="terminated"):
            result.get(timeout=30)


PARENT_DIES = """
import os, signal, corral

def pid(_):
    return os.getpid()

if __name__ == "__main__":
    pool = corral.Pool(2, backend="dask")
    print(*sorted(set(pool.map(pid, range(20), chunksize=1))), flush=True)
    {end}
"""


@pytest.mark.parametrize(
    "end",
    [
        "os.kill(os.getpid(), signal.SIGKILL)",  # parent death
        "pool.map(__import__('time').sleep, [60] * 4, chunksize=1)",  # Ctrl-C below
    ],
    ids=["parent SIGKILLed", "Ctrl-C"],
)
def test_the_cluster_corral_started_goes_away_with_its_program(tmp_path, end):
    script = tmp_path / "script.py"
    script.write_text(PARENT_DIES.format(end=end))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        workers = [psutil.Process(int(p)) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        if "sleep" in end:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) != 0
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"Dask workers outlived the program: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()


NO_MAIN_GUARD = """
import corral

def triple(x):
    return 3 * x

pool = corral.Pool(2, backend="dask")  # at import time: the workers run this again
print(pool.map(triple, range(4)))
"""


def test_a_script_without_the_main_guard_gets_worker_startup_error_not_dasks_noise(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(NO_MAIN_GUARD)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert proc.returncode != 0
    error = err[err.index("corral.errors.WorkerStartupError: ") :]
    assert "imports the main module" in error and "if __name__ == '__main__':" in error
    # One traceback (corral's), none from inside distributed; was 496 lines.
    assert err.count("Traceback") == 1 and "distributed/" not in err, err
    assert len(err.splitlines()) < 60, err


def return_a_lock(_: int) -> threading.Lock:
    return threading.Lock()


def test_an_unpicklable_result_fails_that_task_with_maybe_encoding_error():
    with corral.Pool(1, backend="dask") as pool:
        with pytest.raises(MaybeEncodingError, match=r"Error sending result: .*lock"):
            pool.apply(return_a_lock, (1,))
        assert pool.apply(square, (4,)) == 16  # not a lost worker: the pool goes on


def array_sum_and_address(array: object, offset: int) -> tuple[float, tuple[int, int]]:
    import numpy as np

    assert isinstance(array, np.ndarray)
    return float(array[offset]), (os.getpid(), array.__array_interface__["data"][0])


def _cluster_keys(client: object) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)))


def test_share_places_an_array_on_the_cluster_once_and_release_frees_it():
    np = pytest.importorskip("numpy")
    array = np.arange(8 << 20, dtype=np.float64)  # 64 MiB
    with corral.Pool(2, backend="dask") as pool:
        client = pool._engine.client
        handle = pool.share(array)
        assert isinstance(handle, corral.Shared)
        results = [pool.apply_async(array_sum_and_address, (handle, i)) for i in range(20)]
        assert [r.get(timeout=60)[0] for r in results] == [float(i) for i in range(20)]
        # Held once per worker that used it (the same memory in each), not per task.
        assert len({r.get(timeout=1)[1] for r in results}) <= 2
        assert 1 <= len(client.who_has()[handle._key]) <= 2
        assert pool.starmap(array_sum_and_address, [(handle, 5)])[0][0] == 5.0
        assert float(handle.get()[7]) == 7.0
        key = handle._key
        assert key in _cluster_keys(client)
        handle.release()
        with pytest.raises(ValueError, match="released"):
            pool.apply(array_sum_and_address, (handle, 1))
        deadline = time.monotonic() + 30
        while key in _cluster_keys(client):
            assert time.monotonic() < deadline, "the released object stayed on the cluster"
            time.sleep(0.05)


def increment_first(a: object) -> object:
    a[0] += 1  # type: ignore[index]
    return a[0]  # type: ignore[index]


def append_one(items: list[int]) -> int:
    items.append(1)
    return len(items)


def test_a_shared_object_arrives_read_only_or_as_a_copy_as_in_the_local_pool():
    np = pytest.importorskip("numpy")
    with corral.Pool(1, backend="dask") as pool:
        array = pool.share(np.zeros(3))
        with pytest.raises(ValueError, match="read-only"):
            pool.map(increment_first, [array] * 3, chunksize=1)
        big = pool.share(np.zeros(1 << 18))  # 2 MiB
        with pytest.raises(ValueError, match="read-only"):
            pool.apply(increment_first, (big,))
        assert float(array.get()[0]) == 0.0 and float(big.get()[0]) == 0.0
        # Not a buffer: each task gets its own copy, as locally (the object is unpickled).
        items = pool.share([0])
        assert pool.map(append_one, [items] * 3, chunksize=1) == [2, 2, 2]
        assert items.get() == [0]
        raw = pool.share(bytearray(b"abc"))  # a bytearray is rebuilt: a copy
        assert pool.map(increment_first, [raw] * 3, chunksize=1) == [98, 98, 98]


def test_the_pools_end_frees_what_it_shared_on_a_users_cluster(user_cluster):
    np = pytest.importorskip("numpy")
    with distributed.Client(user_cluster, set_as_default=False) as client:
        with corral.Pool(backend=Dask(client=client)) as pool:
            handle = pool.share(np.ones(1000))
            assert pool.apply(array_sum_and_address, ({"a": [handle]}["a"][0], 3))[0] == 1.0
        pool.join()
        assert handle.released
        deadline = time.monotonic() + 30
        while _cluster_keys(client):
            assert time.monotonic() < deadline, f"left on the cluster: {_cluster_keys(client)}"
            time.sleep(0.05)


def test_a_handle_cannot_be_pickled_outside_a_task():
    import pickle

    with corral.Pool(1, backend="dask") as pool:
        handle = pool.share([1, 2, 3])
        assert pool.apply(len, (handle,)) == 3
        with pytest.raises(TypeError, match="only be passed in the arguments of tasks"):
            pickle.dumps(handle)


def random_token(_: object = None) -> str:
    return os.urandom(8).hex()


def test_identical_calls_are_never_merged():
    """Dask's pure=True would run two identical calls once; corral runs each."""
    with corral.Pool(2, backend="dask") as pool:
        tokens = [pool.apply_async(random_token, (1,)) for _ in range(3)]
        assert len({r.get(timeout=30) for r in tokens}) == 3
        assert len(set(pool.map(random_token, [1, 1, 1, 1], chunksize=1))) == 4
    with corral.ProcessPoolExecutor(2, backend="dask") as executor:
        futures = [executor.submit(random_token, 1) for _ in range(3)]
        assert len({f.result(timeout=30) for f in futures}) == 3


def make_adder(n: int) -> object:
    def add(x: int) -> int:
        return x + n

    return add


def test_closures_lambdas_and_errors_through_the_executor():
    with corral.ProcessPoolExecutor(2, backend="dask") as executor:
        assert list(executor.map(make_adder(5), range(4), timeout=30)) == [5, 6, 7, 8]
        assert executor.submit(lambda: 6 * 7).result(timeout=30) == 42
        with pytest.raises(KeyError) as info:
            executor.submit(fail_with_key, 9).result(timeout=30)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "fail_with_key" in str(info.value.__cause__)


@pytest.mark.parametrize("front", ["pool", "executor"])
def test_an_unpicklable_argument_raises_at_the_call(front):
    lock = threading.Lock()
    if front == "pool":
        with corral.Pool(1, backend="dask") as pool:
            with pytest.raises(SerializationError, match="lock"):
                pool.apply_async(square, (lock,))
            assert pool.apply(square, (3,)) == 9
    else:
        with corral.ProcessPoolExecutor(1, backend="dask") as executor:
            assert executor.submit(square, 2).result(timeout=30) == 4
            # As in the stdlib, the executor fails the future (at once, in the caller).
            future = executor.submit(square, lock)
            assert future.done()
            assert isinstance(future.exception(timeout=0), SerializationError)
            assert "lock" in str(future.exception(timeout=0))
            assert executor.submit(square, 3).result(timeout=30) == 9


def first_and_sum(array: object) -> tuple[float, float]:
    return float(array[0]), float(array.sum())  # type: ignore[attr-defined]


def test_a_big_plain_argument_is_copied_at_the_call_and_freed_after_its_task():
    np = pytest.importorskip("numpy")
    array = np.ones(2 << 20)  # 16 MiB: sent beside the task, not inside it
    with corral.Pool(2, backend="dask") as pool:
        client = pool._engine.client
        results = [pool.apply_async(first_and_sum, (array,)) for _ in range(4)]
        array[0] = 5.0  # after the calls: the tasks got the array as it was then
        later = pool.apply_async(first_and_sum, (array,))
        assert [r.get(timeout=60) for r in results] == [(1.0, float(2 << 20))] * 4
        assert later.get(timeout=60) == (5.0, float(2 << 20) + 4)
        assert pool.map(first_and_sum, [array[:10]] * 3) == [(5.0, 14.0)] * 3
        deadline = time.monotonic() + 30
        while _cluster_keys(client):
            assert time.monotonic() < deadline, f"left on the cluster: {_cluster_keys(client)}"
            time.sleep(0.05)
