"""``backend="ray"`` through the front ends: per-worker options and the fault matrix (issue 15).

One local Ray session serves the module (``ray_session`` of
``test_ray_engine``); scenarios that kill or interrupt the program run a script
in a fresh interpreter, with a hard timeout, that has corral start its own
session, and check that no Ray process outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs ray: pip install 'corral[ray]'")

import corral  # noqa: E402
from corral.backends import Ray  # noqa: E402
from corral.errors import InitializerError, RemoteTraceback, WorkerLostError  # noqa: E402

from ..conftest import run_script  # noqa: E402
from .test_ray_engine import RAY_ENV, no_leaks, ray_session  # noqa: E402, F401

pytestmark = pytest.mark.timeout(90)

_initialised: list[str] = []


def record_start(path: str) -> None:
    _initialised.append(path)
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")


def pid_if_initialised(_: int) -> tuple[int, bool]:
    threading.Event().wait(0.02)
    return os.getpid(), bool(_initialised)


def fail_to_start() -> None:
    raise OSError("no licence server")


def pid(_: object = None) -> int:
    return os.getpid()


def kill_own_worker_on(x: int, attempts: str) -> int:
    if x == 2:
        with open(attempts, "a") as file:  # one line per run: Ray must not rerun it
            file.write("run\n")
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Event().wait(0.05)
    return x


@pytest.mark.usefixtures("ray_session")
def test_initializer_runs_once_per_worker_process(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    with corral.Pool(2, backend="ray", initializer=record_start, initargs=(str(log),)) as pool:
        seen = pool.map(pid_if_initialised, range(40), chunksize=1)
    pool.join()
    assert all(initialised for _pid, initialised in seen)
    started = [int(p) for p in log.read_text().split()]
    assert len(started) == len(set(started)), "a worker process ran the initializer twice"
    assert {p for p, _ in seen} <= set(started)


@pytest.mark.usefixtures("ray_session")
def test_auto_chunks_on_a_cluster() -> None:
    # chunksize="auto" sizes chunks in the front end from the engine's claim and
    # on_done: the Ray engine needs nothing of its own.
    with corral.Pool(2, backend="ray") as pool:
        assert pool.map(abs, range(-150, 150), chunksize="auto") == [
            abs(x) for x in range(-150, 150)
        ]
        assert list(pool.imap(abs, iter(range(-50, 50)), chunksize="auto")) == [
            abs(x) for x in range(-50, 50)
        ]
    pool.join()
    with corral.ProcessPoolExecutor(2, backend="ray") as ex:
        got = ex.map(pow, range(50), [2] * 50, chunksize="auto", timeout=60)
        assert list(got) == [x * x for x in range(50)]


@pytest.mark.usefixtures("ray_session")
def test_a_failing_initializer_raises_initializer_error() -> None:
    with pytest.raises(InitializerError, match="initializer raised OSError: no licence") as info:
        corral.Pool(2, backend="ray", initializer=fail_to_start)
    assert isinstance(info.value.__cause__, OSError)
    assert isinstance(info.value.__cause__.__cause__, RemoteTraceback)
    executor = corral.ProcessPoolExecutor(1, backend="ray", initializer=fail_to_start)
    with executor, pytest.raises(InitializerError):
        executor.submit(pid)
    assert ray.is_initialized()  # the user's session stays


@pytest.mark.usefixtures("ray_session")
def test_maxtasksperchild_gives_a_new_worker_process() -> None:
    with corral.Pool(1, backend="ray", maxtasksperchild=2) as pool:
        pids = [pool.apply(pid) for _ in range(6)]
    assert max(pids.count(p) for p in pids) <= 2, pids
    assert len(set(pids)) >= 3, pids
    with corral.ProcessPoolExecutor(1, backend="ray", max_tasks_per_child=3) as ex:
        pids = [ex.submit(pid).result(timeout=60) for _ in range(6)]
    assert max(pids.count(p) for p in pids) <= 3, pids


@pytest.mark.usefixtures("ray_session")
def test_capacity_follows_the_cluster_and_num_cpus() -> None:
    with corral.Pool(backend="ray") as pool:
        assert pool._processes == 2  # the module's session: 2 CPUs
    with corral.Pool(backend=Ray(remote_args={"num_cpus": 2})) as pool:
        assert pool._processes == 1
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    with corral.ProcessPoolExecutor(backend=Ray(remote_args={"num_cpus": 0.5})) as ex:
        assert ex.submit(abs, -1).result(timeout=60) == 1
        assert ex._max_workers == 4


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize(
    ("remote_args", "message"),
    [
        ({"num_cpus": 4}, r"asks for 4 CPU .* cluster has 2 CPU in all"),
        ({"num_gpus": 1}, r"asks for 1 GPU .* cluster has 0 GPU in all"),
        ({"memory": 1 << 50}, r"asks for 1\.1259e\+15 memory .* cluster has"),
        ({"resources": {"licence": 1}}, r"asks for 1 licence .* cluster has 0 licence"),
    ],
)
def test_a_worker_the_cluster_cannot_place_is_refused_at_the_start(
    remote_args: dict[str, object], message: str
) -> None:
    # Such a pool used to start, then wait forever in apply (no actor placed).
    with pytest.raises(ValueError, match=message):
        corral.Pool(backend=Ray(remote_args=remote_args))
    with pytest.raises(ValueError, match=message):
        corral.ProcessPoolExecutor(backend=Ray(remote_args=remote_args)).submit(abs, 1)


@pytest.mark.usefixtures("ray_session")
def test_another_address_than_the_connected_cluster_is_refused() -> None:
    with pytest.raises(ValueError, match=r"connected to the Ray cluster at .*not 10\.9\.9\.9"):
        corral.Pool(backend=Ray(address="10.9.9.9:6379"))
    current = ray.get_runtime_context().gcs_address
    with corral.Pool(backend=Ray(address=current)) as pool:
        assert pool.apply(abs, (-5,)) == 5


@pytest.mark.usefixtures("ray_session")
def test_executor_worker_killed_mid_task_fails_that_task_alone(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    with corral.ProcessPoolExecutor(2, backend="ray") as ex:
        futures = [ex.submit(kill_own_worker_on, i, str(attempts)) for i in range(6)]
        for i, future in enumerate(futures):
            if i == 2:
                with pytest.raises(WorkerLostError, match="corral never reruns") as info:
                    future.result(timeout=60)
                assert isinstance(info.value.__cause__, ray.exceptions.RayError)
            else:
                assert future.result(timeout=60) == i
        assert list(ex.map(abs, [-1, -2], timeout=60)) == [1, 2]  # it keeps working
    assert attempts.read_text() == "run\n"  # no silent retry


# ---------------------------------------------------------------- whole programs

PROGRAM = """
import os, signal, sys, time
import psutil
import corral

def worker_pid(_):
    time.sleep(0.05)
    return os.getpid()

if __name__ == "__main__":
    pool = corral.Pool(2, backend="ray")
    offset = 1
    assert pool.map(lambda x: x + offset, range(3)) == [1, 2, 3]  # a closure of __main__
    workers = set(pool.map(worker_pid, range(20), chunksize=1))  # a function of __main__
    session = [p.pid for p in psutil.Process().children(recursive=True)]
    print(*sorted(workers | set(session)), flush=True)
    {end}
"""


@pytest.mark.parametrize(
    "end",
    [
        "os.kill(os.getpid(), signal.SIGKILL)",  # parent death
        "pool.map(time.sleep, [60] * 4, chunksize=1)",  # Ctrl-C below
    ],
    ids=["parent SIGKILLed", "Ctrl-C"],
)
def test_the_session_corral_started_goes_away_with_its_program(tmp_path: Path, end: str) -> None:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM.format(end=end)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | RAY_ENV
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    session: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=30)[1][-3000:]
        for number in line.split():
            try:
                session.append(psutil.Process(int(number)))
            except psutil.NoSuchProcess:
                pass
        if "sleep" in end:
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
            assert "KeyboardInterrupt" in err
        assert proc.wait(timeout=60) != 0
        # All of them, Ray's agents too (left alone they linger 60 s after a
        # SIGKILL), and corral's watcher of the session.
        _gone, alive = psutil.wait_procs(session, timeout=30)
        assert not alive, f"Ray processes outlived the program: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for leftover in session:
            try:
                leftover.kill()
            except psutil.Error:
                pass
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


TWO_POOLS = """
import ray
import corral

first = corral.Pool(1, backend="ray")   # corral starts a session
second = corral.Pool(1, backend="ray")  # and shares it
first.close(); first.join()
assert ray.is_initialized(), "closing one pool shut down the session another uses"
assert second.apply(abs, (-2,)) == 2
second.close(); second.join()
assert not ray.is_initialized(), "the last pool did not shut down corral's session"
print("ok")
"""


def test_pools_share_the_session_corral_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    result = run_script(tmp_path, TWO_POOLS, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def sum_and_scribble(array: object) -> tuple[float, bool]:
    import numpy as np

    assert isinstance(array, np.ndarray)
    total = float(array.sum())
    array[0] = -1.0  # arrives writable, as with the stdlib's pool
    return total, array.flags.writeable


@pytest.mark.usefixtures("ray_session")
def test_big_arrays_travel_through_the_object_store_copied_at_the_call() -> None:
    np = pytest.importorskip("numpy")
    array = np.ones((4 << 20) // 8)  # 4 MiB: out of the pickle, through ray.put
    with corral.Pool(2, backend="ray") as pool:
        first = pool.apply_async(sum_and_scribble, (array,))
        array[:] = 2.0  # after the call: the task still sees the array as it was
        assert first.get(60) == (float(len(array)), True)
        assert array[0] == 2.0  # the worker wrote to its own copy
        handle = pool._engine.share(np.arange(3.0))
        assert pool.apply(lambda a, h: float(a.sum() + h.sum()), (array, handle)) == (
            2.0 * len(array) + 3.0
        )
        results = pool.map(sum_and_scribble, [array] * 3)
        assert results == [(2.0 * len(array), True)] * 3


def pid_after(seconds: float) -> int:
    threading.Event().wait(seconds)
    return os.getpid()


@pytest.mark.usefixtures("ray_session")
def test_more_workers_than_cpus_all_run() -> None:
    # The module's session has 2 CPUs: 4 workers get half a CPU each and all
    # start (a worker that could not be placed would leave its task waiting).
    with corral.Pool(4, backend="ray") as pool:
        pids = pool.map(pid_after, [1.0] * 4, chunksize=1)
    assert len(set(pids)) == 4


def record_pid_then_wait(path: str) -> None:
    with open(path, "w") as file:
        file.write(str(os.getpid()))
    threading.Event().wait(300)  # stands for a task that runs too long


@pytest.mark.usefixtures("ray_session")
def test_executor_task_timeout_kills_the_worker_running_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with corral.ProcessPoolExecutor(2, backend="ray", task_timeout=10) as ex:
        late = ex.submit(record_pid_then_wait, str(pid_file))
        with pytest.raises(corral.TaskTimeoutError, match="task_timeout"):
            late.result(timeout=60)
        worker = psutil.Process(int(pid_file.read_text()))
        _gone, alive = psutil.wait_procs([worker], timeout=30)
        assert not alive, "the task's worker process still runs: the task was not stopped"
        assert ex.submit(abs, -7).result(timeout=60) == 7  # a new worker took its place


def sum_read_only(array: object) -> tuple[float, bool]:
    import numpy as np

    assert isinstance(array, np.ndarray)
    return float(array.sum()), array.flags.writeable


@pytest.mark.usefixtures("ray_session")
def test_share_gives_a_corral_shared_handle_that_releases() -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(1000.0)
    with corral.Pool(1, backend="ray") as pool:
        handle = pool.share(array)
        assert isinstance(handle, corral.Shared)
        # Shared NumPy arrays arrive read-only in tasks, and here in get().
        assert pool.apply(sum_read_only, (handle,)) == (float(array.sum()), False)
        here = handle.get()
        assert np.array_equal(here, array) and not here.flags.writeable
        busy = pool.apply_async(pid_after, (0.3,))  # keeps the one worker busy
        queued = pool.apply_async(sum_read_only, (handle,))
        handle.release()
        assert handle.released and "released" in repr(handle)
        # A task submitted before release() still gets the object.
        assert queued.get(60) == (float(array.sum()), False)
        busy.get(60)
        with pytest.raises(ValueError, match=r"was released; share it again"):
            pool.apply(sum_read_only, (handle,))
        with pytest.raises(ValueError, match=r"was released"):
            handle.get()
        assert pool.apply(abs, (-3,)) == 3  # the pool goes on
        kept = pool.share([1, 2, 3])
        assert not kept.released
    pool.join()
    assert kept.released  # the pool's end released it
