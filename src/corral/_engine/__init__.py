"""The worker-pool engine under ``corral.pool`` and ``corral.futures``.

Front ends import only what this package exports: the contract (``Engine``,
``EngineSpec``, ``Task``, the task kinds) and ``start_engine``.

``contract`` what a front end may use of an engine (the ``Engine`` protocol)
``engine``   the local engine: its thread, queue, dispatch, deaths, deadlines
``lending``  idle workers a blocked caller may borrow; ``direct`` runs the call
``handles``  the engine's side of a worker (process or thread) and its channel
``worker``   the loop that runs inside a worker
``protocol`` the messages between them and how tasks and results are encoded
"""

from .contract import CALL, MAP, STARMAP, Engine, EngineSpec, Task

__all__ = ("CALL", "MAP", "STARMAP", "Engine", "EngineSpec", "Task", "start_engine")


def start_engine(spec: EngineSpec) -> Engine:
    """Start an engine with the workers ``spec`` describes; return it once they are started.

    Raises:
        ValueError: ``spec.backend`` names no known backend.
        OSError: a first worker could not be started (none is left running).
    """
    from .engine import LocalEngine
    from .handles import ProcessSpawner, ThreadSpawner

    spawner: ProcessSpawner | ThreadSpawner
    if spec.backend == "process":
        spawner = ProcessSpawner(
            spec.context,
            spec.initializer,
            spec.initargs,
            spec.max_tasks,
            spec.max_memory,
            spec.logger_name,
            spec.worker_name,
        )
    elif spec.backend == "thread":
        spawner = ThreadSpawner(
            spec.initializer, spec.initargs, spec.max_tasks, spec.logger_name, spec.worker_name
        )
    else:
        msg = f"unknown engine backend {spec.backend!r}; expected 'process' or 'thread'"
        raise ValueError(msg)
    engine = LocalEngine(
        spawner, spec.workers, isolate_failures=spec.isolate_failures, name=spec.name
    )
    engine.start()
    return engine
