"""corral on a Dask cluster deployed as a user would: ``dask scheduler`` + two ``dask worker``.

The cluster is the user's: Dask's defaults apply (``allowed-failures=3``,
nannies that restart a dead worker), corral connects by address and must
leave it running. The test stops the processes it started; ``no_leaks``
(conftest) checks that none outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask backend tests need distributed: pip install 'corral[dask]'"
)

import corral  # noqa: E402
from corral.backends import Dask  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DASK = Path(sys.executable).with_name("dask")


def pid_after(_: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def square(x: int) -> int:
    return x * x


def killed_once(x: int, marker: str) -> object:
    """Task 0 blocks until the test kills its worker; when Dask reruns it, it returns."""
    if x == 0:
        if os.path.exists(marker):
            return "rerun"
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(60)
    time.sleep(0.05)
    return x


def kills_its_worker(x: int) -> int:
    """Task 0 SIGKILLs the worker process running it, every time it runs."""
    if x == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


SCRIPT = """
import corral

def triple(x):
    return 3 * x

def scaled(k):
    return lambda x: k * x

if __name__ == "__main__":
    # DASK_SCHEDULER_ADDRESS (Dask's own setting) points corral at the cluster.
    with corral.Pool(backend="dask") as pool:
        print(pool._processes, pool.map(triple, range(4)), pool.map(scaled(5), range(3)))
"""


def _wait_for(predicate: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # The workers import the test's functions by module, as a user's workers import theirs.
    root = str(Path(__file__).parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, DASK_DISTRIBUTED__DIAGNOSTICS__NVML="False")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(DASK), *args], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # workers first, then the scheduler
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # A worker process its nanny started may still be closing.
    for proc in procs:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            continue
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def _cli(tmp_path: Path, workers: int) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes."""
    if not DASK.exists():
        pytest.skip(f"the dask command line is not installed next to {sys.executable}")
    scheduler_file = tmp_path / "scheduler.json"
    procs = [
        _start(
            # --dashboard-address: its HTTP routes (health, metrics) on a free port, not 8787.
            [
                "scheduler",
                "--port",
                "0",
                "--no-dashboard",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        _wait_for(lambda: scheduler_file.exists() and scheduler_file.read_text(), "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(workers):
            args = ["worker", address, "--nthreads", "1", "--no-dashboard", "--memory-limit", "0"]
            procs.append(_start(args, tmp_path / f"worker{i}.log"))
        yield address, procs
    finally:
        _stop(procs)


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and two single-threaded ``dask worker`` processes; their address."""
    with _cli(tmp_path, 2) as cluster:
        yield cluster


@pytest.fixture
def one_worker_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and ONE single-threaded ``dask worker`` (Dask's defaults)."""
    with _cli(tmp_path, 1) as cluster:
        yield cluster


def test_a_cluster_started_with_the_dask_command_line(cli_cluster, tmp_path):
    address, procs = cli_cluster
    with distributed.Client(address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        worker_pids = {
            child.pid for proc in procs[1:] for child in psutil.Process(proc.pid).children(True)
        }

        with corral.Pool(backend=Dask(address=address)) as pool:
            assert pool._processes == 2  # the cluster's capacity: 2 worker threads
            ran_on = set(pool.map(pid_after, range(20), chunksize=1))
            assert len(ran_on) == 2 and ran_on <= worker_pids

            # A worker SIGKILLed mid-task. The user's scheduler keeps Dask's default
            # allowed-failures=3: the task is rerun elsewhere (at least once, as
            # documented), every other task arrives once, the pool goes on.
            marker = str(tmp_path / "killed")
            results = [pool.apply_async(killed_once, (i, marker)) for i in range(12)]
            _wait_for(lambda: os.path.exists(marker), "the task to start")
            os.kill(int(Path(marker).read_text()), signal.SIGKILL)
            assert results[0].get(timeout=60) == "rerun"
            assert [r.get(timeout=60) for r in results[1:]] == list(range(1, 12))
            assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        pool.join()

        # Capacity is read when a pool starts: wait for the nanny to replace the worker.
        client.wait_for_workers(2, timeout=60)
        with corral.ProcessPoolExecutor(backend=Dask(address=address)) as executor:
            assert list(executor.map(square, range(10), timeout=60)) == [x * x for x in range(10)]
            assert executor._max_workers == 2  # known once the executor has started

        # A script's own functions (its __main__ is not the workers' __main__: they
        # run `dask worker`) travel by value; the address comes from Dask's config.
        script = tmp_path / "script.py"
        script.write_text(SCRIPT)
        env = dict(os.environ, DASK_SCHEDULER_ADDRESS=address)
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[0] == "2 [0, 3, 6, 9] [0, 5, 10]"

        # corral never stops what it did not start: the cluster is still there.
        assert len(client.nthreads()) == 2
        assert all(proc.poll() is None for proc in procs)
        assert client.submit(square, 7, pure=False).result(timeout=30) == 49


def test_a_task_that_kills_its_worker_fails_alone_on_the_users_cluster(one_worker_cluster):
    # Dask's defaults: allowed-failures=3, worker-saturation=1.1 (a 1-thread
    # worker also holds a waiting task) and a nanny restarting the same worker,
    # so the waiting task was on every incarnation and Dask's KilledWorker blamed it too.
    address, _ = one_worker_cluster
    with distributed.Client(address, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=60)
        with corral.Pool(backend=Dask(address=address)) as pool:
            results = [pool.apply_async(kills_its_worker, (i,)) for i in range(8)]
            with pytest.raises(corral.WorkerLostError, match="lost this task"):
                results[0].get(timeout=90)
            assert [r.get(timeout=90) for r in results[1:]] == list(range(1, 8))
            client.wait_for_workers(1, timeout=60)
            assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        pool.join()
