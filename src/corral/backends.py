"""Where a pool's tasks run: ``backend=`` of ``Pool`` and ``ProcessPoolExecutor``.

``backend=None`` (or ``"process"``) runs tasks in worker processes of this
machine. ``backend="dask"`` or ``backend=Dask(...)`` runs them on a Dask
cluster through the same front ends (see ``docs/architecture.md``, "Backends").
Nothing here imports a cluster package; a backend's package is imported when a
pool first uses it, and a missing one raises ``ImportError`` naming the extra
to install.
"""

from __future__ import annotations

from typing import Any

__all__ = ("BACKEND_NAMES", "Dask", "as_backend")

# The names ``backend=`` accepts as strings; ``None`` means "process".
BACKEND_NAMES = ("process", "dask")


class Dask:
    """Run a pool's tasks on a Dask cluster.

    Args:
        client: a ``distributed.Client`` to use; corral never closes it.
        address: a scheduler address (``"tcp://host:8786"``) to connect to;
            corral closes its own client, never the cluster.

    With neither, the cluster is, in order: Dask's configured scheduler address
    (``distributed.scheduler-address`` / ``DASK_SCHEDULER_ADDRESS``), the
    default client already connected in this process, else a new local cluster
    that corral starts and stops with the pool.

    On the cluster corral starts, a task whose worker dies fails alone with
    ``WorkerLostError`` and is never rerun; on a cluster the user started, the
    scheduler's ``allowed-failures`` (Dask's default 3) reruns it first, so a
    task may run more than once there. ``share()`` and arguments of 1 MiB or
    more go to the workers through ``scatter``. ``maxtasksperchild`` and
    ``max_memory_per_child`` are refused (``ValueError``). The workers must be
    able to import corral and the task's modules (functions of ``__main__``
    travel by value).

    Raises:
        ValueError: both ``client`` and ``address`` are given.
    """

    name = "dask"

    def __init__(self, client: Any = None, address: str | None = None) -> None:
        if client is not None and address is not None:
            msg = "give Dask(client=...) or Dask(address=...), not both"
            raise ValueError(msg)
        self.client = client
        self.address = address

    def __repr__(self) -> str:
        return f"corral.backends.Dask(client={self.client!r}, address={self.address!r})"


def as_backend(backend: Any) -> Any:
    """Normalise a ``backend=`` argument: ``"process"``, or a backend object.

    Raises:
        ValueError: an unknown backend name.
        TypeError: neither None, a name, nor a backend object.
    """
    if backend is None or backend == "process":
        return "process"
    if backend == "dask":
        return Dask()
    if isinstance(backend, Dask):
        return backend
    if isinstance(backend, str):
        msg = f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_NAMES)}"
        raise ValueError(msg)
    msg = f"backend must be None, a name or a corral.backends object, not {type(backend).__name__}"
    raise TypeError(msg)
