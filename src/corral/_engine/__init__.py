"""The worker-pool engine under ``corral.pool`` and ``corral.futures``.

Front ends import only what this package exports: the contract (``Engine``,
``EngineSpec``, ``Task``, the task kinds) and ``start_engine``.

``contract`` what a front end may use of an engine (the ``Engine`` protocol)
``engine``   the local engine: its thread, queue, dispatch, deaths, deadlines
``engine_start`` starts the local engine (process or thread workers)
``dask_engine`` the engine on a Dask cluster; ``dask_cluster`` finds or starts it
``ray_engine`` the engine on a Ray cluster; ``ray_cluster`` finds or starts it
``lending``  idle workers a blocked caller may borrow; ``direct`` runs the call
``handles``  the engine's side of a worker (process or thread) and its channel
``worker``   the loop that runs inside a worker
``protocol`` the messages between them and how tasks and results are encoded
``metering`` what a worker measures of its work; chunks that report progress
``insights`` the numbers and advice of ``Pool.insights()``
"""

from .contract import CALL, MAP, STARMAP, Engine, EngineSpec, Task
from .insights import Insights, WorkerInsight

__all__ = (
    "CALL",
    "MAP",
    "STARMAP",
    "Engine",
    "EngineSpec",
    "Insights",
    "Task",
    "WorkerInsight",
    "check_spec",
    "start_engine",
)


# Engines by backend name: "module:function", imported on first
# use (a cluster backend's package is imported only then). A new backend adds one
# entry; the front ends do not change. ``spec.backend`` is a name, or a backend
# object (``corral.backends.Dask(...)``) whose ``name`` picks the entry.
_REGISTRY = {
    "process": "corral._engine.engine_start:start_local_engine",
    "thread": "corral._engine.engine_start:start_local_engine",
    "dask": "corral._engine.dask_engine:start_dask_engine",
    "ray": "corral._engine.ray_engine:start_ray_engine",
}


def check_spec(spec: EngineSpec) -> None:
    """Let the backend object refuse what it cannot do (its ``validate``), starting nothing.

    Raises:
        ValueError: the backend does not support something ``spec`` asks for.
    """
    validate = getattr(spec.backend, "validate", None)
    if validate is not None:
        validate(spec)


def start_engine(spec: EngineSpec) -> Engine:
    """Start an engine with the workers ``spec`` describes; return it once they are started.

    Raises:
        ValueError: ``spec.backend`` names no known backend, or refuses ``spec``.
        ImportError: the backend's package is not installed (the message names the extra).
        OSError: a first worker could not be started (none is left running).
    """
    import importlib

    name = spec.backend if isinstance(spec.backend, str) else getattr(spec.backend, "name", None)
    target = _REGISTRY.get(name) if isinstance(name, str) else None
    if target is None:
        known = ", ".join(repr(n) for n in _REGISTRY)
        msg = f"unknown engine backend {spec.backend!r}; expected one of {known}"
        raise ValueError(msg)
    check_spec(spec)
    module_name, function = target.split(":")
    module = importlib.import_module(module_name)
    engine: Engine = getattr(module, function)(spec)
    return engine
