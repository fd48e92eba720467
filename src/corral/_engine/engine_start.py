"""Start the local engine (worker processes or threads) for an ``EngineSpec``."""

from __future__ import annotations

from .contract import EngineSpec
from .engine import LocalEngine
from .handles import ProcessSpawner, ThreadSpawner


def start_local_engine(spec: EngineSpec) -> LocalEngine:
    """The local engine with ``spec.workers`` process or thread workers, started.

    Raises:
        OSError: a first worker could not be started (none is left running).
    """
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
    else:
        spawner = ThreadSpawner(
            spec.initializer, spec.initargs, spec.max_tasks, spec.logger_name, spec.worker_name
        )
    engine = LocalEngine(
        spawner, spec.workers, isolate_failures=spec.isolate_failures, name=spec.name
    )
    engine.start()
    return engine
