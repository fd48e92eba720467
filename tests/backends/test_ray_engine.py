"""The Ray engine (issue 15) under the unchanged front ends.

``Pool(backend="ray")`` and ``ProcessPoolExecutor(backend="ray")`` run on
``RayEngine``; the registry entry is wrapped to keep the engines each test
made, so that the test can check they all stopped.

One Ray session serves the module (it takes seconds to start); the engines
find it running and leave it alone. Run this file in a pytest invocation of its
own (``python -m pytest tests/backends/test_ray_engine.py``): forking after
``ray.init`` is unsupported, so next to other tests it skips itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs ray: pip install 'corral[ray]'")

import corral  # noqa: E402
import corral._engine as engine_package  # noqa: E402
from corral._engine import EngineSpec  # noqa: E402
from corral._engine.ray_engine import RayEngine, start_ray_engine  # noqa: E402
from corral.backends import Ray  # noqa: E402

from ..conftest import run_script  # noqa: E402
from .conftest import _helper  # noqa: E402

HERE = Path(__file__).parent
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _ray_processes() -> list[psutil.Process]:
    # Not the stdlib's resource tracker, which a Dask test's nanny (or numpy's
    # use of multiprocessing) may start once in this process: it lives with it.
    return [p for p in psutil.Process().children(recursive=True) if not _helper(p)]


@pytest.fixture(scope="module")
def ray_session(request: pytest.FixtureRequest) -> Iterator[None]:
    """One local Ray session for the module; afterwards no Ray process may remain."""
    others = [item for item in request.session.items if HERE not in Path(item.path).parents]
    if others:
        pytest.skip("Ray tests run in a pytest invocation of their own (forking after ray.init)")
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        # A worker process the raylet was starting as it was shut down (a
        # replacement for one a test killed) connects, fails and exits by itself,
        # later on a loaded machine (seen after 20 s in CI): wait for it.
        _gone, alive = psutil.wait_procs(_ray_processes(), timeout=60)
        # A zombie has exited and holds nothing: a worker Ray killed, not yet
        # reaped by its (exiting) parent; seen once on a loaded machine.
        alive = [proc for proc in alive if not _zombie(proc)]
        described = [(proc, _cmdline(proc)) for proc in alive]
        for proc in alive:
            proc.kill()
        assert not alive, f"Ray left processes behind: {described}"


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200]
    except psutil.Error:
        return "?"


def _zombie(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Replaces the suite's leak check: Ray starts and retires its workers by itself.

    What corral owns must not leak: its engine threads. Ray's processes are
    checked once the module's session is shut down (``ray_session``).
    """
    yield
    for thread in threading.enumerate():
        if thread.name == "corral-ray-engine":
            thread.join(timeout=10)
            assert not thread.is_alive(), "a Ray engine's delivery thread is still running"


@pytest.fixture
def engines(ray_session: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RayEngine]]:
    """Keep the Ray engines the front ends start (``backend="ray"``)."""
    made.clear()
    monkeypatch.setitem(engine_package._REGISTRY, "ray", f"{__name__}:start_and_keep")
    yield made
    for engine in made:
        assert engine.join(timeout=30), "a Ray engine did not stop"
    assert ray.is_initialized(), "an engine shut down a session it did not start"


made: list[RayEngine] = []


def start_and_keep(spec: EngineSpec) -> RayEngine:
    """A registry entry: ``start_ray_engine``, keeping the engine in ``made``."""
    made.append(start_ray_engine(spec))
    return made[-1]


def _exit_on_three(x: int, attempts: str) -> int:
    if x == 3:
        with open(attempts, "a") as file:  # one line per attempt: Ray must not rerun it
            file.write("attempt\n")
        os._exit(1)
    return x * 10


def _fail(x: int) -> int:
    msg = f"bad item {x}"
    raise KeyError(msg)


def _wait_forever(seconds: float) -> float:
    threading.Event().wait(seconds)  # stands for a task that runs too long
    return seconds


class _Unpicklable:
    def __reduce__(self) -> tuple[object, ...]:
        msg = "not picklable on purpose"
        raise TypeError(msg)


def _unpicklable_result(_: int) -> _Unpicklable:
    return _Unpicklable()


def test_pool_calls_and_callbacks(engines: list[RayEngine]) -> None:
    with corral.Pool(2, backend="ray") as pool:
        assert pool.apply(divmod, (7, 2)) == (3, 1)
        assert pool.map(abs, range(-50, 50), chunksize=7) == [abs(i) for i in range(-50, 50)]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert list(pool.imap(abs, range(-20, 0))) == list(range(20, 0, -1))
        assert sorted(pool.imap_unordered(abs, [-1, -2, -3])) == [1, 2, 3]
        got: list[object] = []
        errors: list[BaseException] = []
        pool.apply_async(abs, (-4,), callback=got.append).wait(30)
        pool.map_async(abs, [-5, -6], callback=got.append).wait(30)
        pool.apply_async(_fail, (1,), error_callback=errors.append).wait(30)
        assert got == [4, [5, 6]]
        assert [type(e) for e in errors] == [KeyError]
        assert pool._pool == []
    assert len(engines) == 1 and engines[0].size == 2


def test_lambdas_and_closures(engines: list[RayEngine]) -> None:
    offset = 100
    with corral.Pool(2, backend="ray") as pool:
        assert pool.map(lambda x: x + offset, range(5)) == [100, 101, 102, 103, 104]
        assert pool.apply(lambda: offset * 2) == 200


def test_exception_keeps_its_type_and_the_remote_traceback(engines: list[RayEngine]) -> None:
    with corral.Pool(2, backend="ray") as pool, pytest.raises(KeyError, match="bad item 7") as info:
        pool.apply(_fail, (7,))
    cause = info.value.__cause__
    assert isinstance(cause, corral.errors.RemoteTraceback)
    assert "_fail" in str(cause) and "raise KeyError" in str(cause)


def test_unpicklable_argument_raises_at_the_call(engines: list[RayEngine]) -> None:
    with corral.Pool(2, backend="ray") as pool:
        with pytest.raises(corral.errors.SerializationError):
            pool.apply_async(abs, (threading.Lock(),))
        with pytest.raises(corral.errors.MaybeEncodingError, match="not picklable on purpose"):
            pool.apply(_unpicklable_result, (1,))
        assert pool.apply(abs, (-1,)) == 1


def test_a_worker_killed_mid_task_fails_only_that_task(
    engines: list[RayEngine], tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    with corral.Pool(2, backend="ray") as pool:
        results = [pool.apply_async(_exit_on_three, (i, str(attempts))) for i in range(8)]
        for i, result in enumerate(results):
            if i == 3:
                with pytest.raises(corral.WorkerLostError, match="died") as info:
                    result.get(60)
                assert isinstance(info.value.__cause__, ray.exceptions.RayError)
            else:
                assert result.get(60) == i * 10
        assert pool.map(abs, range(-4, 0)) == [4, 3, 2, 1]  # the pool keeps working
    assert attempts.read_text() == "attempt\n"  # no silent retry


def test_task_timeout_stops_the_task(engines: list[RayEngine]) -> None:
    with corral.Pool(2, task_timeout=10, backend="ray") as pool:
        late = pool.apply_async(_wait_forever, (300,))
        quick = pool.apply_async(_wait_forever, (0.01,))
        start = time.monotonic()
        with pytest.raises(corral.TaskTimeoutError, match="task_timeout"):
            late.get(60)
        assert time.monotonic() - start < 60
        assert quick.get(60) == 0.01
        assert pool.apply(abs, (-3,)) == 3


def test_terminate_stops_running_tasks(engines: list[RayEngine]) -> None:
    pool = corral.Pool(2, backend="ray")
    results = [pool.apply_async(_wait_forever, (300,)) for _ in range(6)]
    pool.terminate()
    pool.join()
    for result in results:
        with pytest.raises(corral.errors.BrokenProcessPool, match="terminated"):
            result.get(30)


def test_max_memory_per_child_is_refused(engines: list[RayEngine]) -> None:
    with pytest.raises(ValueError, match="max_memory_per_child is not supported on the Ray"):
        corral.Pool(2, backend="ray", max_memory_per_child=2**30)
    with pytest.raises(ValueError, match="max_memory_per_child is not supported"):
        corral.ProcessPoolExecutor(2, backend="ray", max_memory_per_child=2**30)  # at once


def test_cancel_queued_takes_back_tasks_not_yet_in_ray(engines: list[RayEngine]) -> None:
    engine = start_ray_engine(EngineSpec(1, backend=Ray()))
    engines.append(engine)
    outcomes: list[tuple[bool, object]] = []
    first_started = threading.Event()
    first_done = threading.Event()

    def on_first(ok: bool, value: object) -> None:
        outcomes.append((ok, value))
        first_done.set()

    def claim_first() -> bool:
        first_started.set()
        return True

    engine.submit(engine.new_task(0, _wait_forever, (1.0,), None, on_first, claim=claim_first))
    assert first_started.wait(60)
    tasks = [
        engine.new_task(0, abs, (-i,), None, lambda ok, v: outcomes.append((ok, v)))
        for i in range(100)
    ]
    engine.submit_many(tasks)
    taken = engine.cancel_queued()
    assert len(taken) >= 100 - (engine.size + 4)  # at most capacity + window went to Ray
    assert first_done.wait(60)
    engine.close()
    assert engine.join(60)
    assert len(outcomes) == 101 - len(taken)


def test_share_places_the_object_once(engines: list[RayEngine]) -> None:
    with corral.Pool(2, backend="ray") as pool:
        handle = engines[0].share(list(range(1000)))
        assert pool.map(len, [handle] * 4) == [1000] * 4
        assert pool.apply(sum, (handle,)) == sum(range(1000))


def test_executor(engines: list[RayEngine]) -> None:
    with corral.ProcessPoolExecutor(2, backend="ray") as ex:
        assert ex.submit(pow, 2, 10).result(30) == 1024
        assert list(ex.map(pow, [2, 3], [2, 2], timeout=30)) == [4, 9]
        with pytest.raises(KeyError):
            ex.submit(_fail, 1).result(30)


def test_a_session_corral_starts_is_shut_down(tmp_path: Path, ray_session: None) -> None:
    """In a fresh interpreter: no session before, none (and no Ray process) after."""
    code = """
        import psutil, ray
        from corral._engine import EngineSpec
        from corral._engine.ray_engine import start_ray_engine
        from corral.backends import Ray

        engine = start_ray_engine(EngineSpec(1, backend=Ray()))
        done = []
        engine.submit(engine.new_task(0, abs, (-2,), None, lambda ok, v: done.append(v)))
        engine.close()
        assert engine.join(60), "engine did not stop"
        assert done == [2], done
        assert not ray.is_initialized()
        _, alive = psutil.wait_procs(psutil.Process().children(recursive=True), timeout=20)
        assert not alive, alive
        print("ok")
    """
    env_before = dict(os.environ)
    try:
        os.environ.pop("RAY_ADDRESS", None)
        result = run_script(tmp_path, code, timeout=90)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
