"""Where a pool's tasks run: ``backend=`` of ``Pool`` and ``ProcessPoolExecutor``.

``backend=None`` (or ``"process"``) runs tasks in worker processes of this
machine. ``backend="dask"`` or ``backend=Dask(...)`` runs them on a Dask
cluster, ``backend="ray"`` or ``backend=Ray(...)`` on a Ray cluster, through
the same front ends (see ``docs/architecture.md``, "Backends").
Nothing here imports a cluster package; a backend's package is imported when a
pool first uses it, and a missing one raises ``ImportError`` naming the extra
to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backend_context import BackendContext

__all__ = ("BACKEND_NAMES", "RAY_ACTOR_OPTIONS", "ClusterBackend", "Dask", "Ray", "as_backend")

# The names ``backend=`` accepts as strings; ``None`` means "process".
BACKEND_NAMES = ("process", "dask", "ray")

# The Ray actor options (``.options(...)``) that ``Ray(remote_args=...)`` accepts:
# where a worker runs and what it reserves. Checked at ``Ray(...)``, so a typo
# fails before a session starts. Left out: the options corral sets itself
# (restarts, retries, ``max_calls``) and those that would break a pool of many
# same-class actors (``name``, ``get_if_exists``, ``lifetime``,
# ``max_concurrency``, ``concurrency_groups``, ``namespace``).
RAY_ACTOR_OPTIONS = (
    "accelerator_type",
    "enable_task_events",
    "fallback_strategy",
    "label_selector",
    "memory",
    "num_cpus",
    "num_gpus",
    "object_store_memory",
    "placement_group",
    "placement_group_bundle_index",
    "placement_group_capture_child_tasks",
    "resources",
    "runtime_env",
    "scheduling_strategy",
)


class ClusterBackend:
    """What the cluster backends share: a ``name`` for the engine registry, and a context."""

    name: str

    def get_context(self) -> BackendContext:
        """A context whose ``Pool`` (and ``ProcessPoolExecutor(mp_context=)``) run here.

        Code written against a context runs on the cluster unchanged; what a
        cluster cannot provide (``ctx.Process``, ``Queue()``, ``Lock()``,
        ``Value()``, ``Manager()``...) raises ``corral.errors.NotOnBackendError``
        when made.
        """
        from ._backend_context import BackendContext

        return BackendContext(self)

    def validate(self, spec: Any) -> None:
        """Refuse what this backend cannot do, before anything starts (nothing is refused here).

        Front ends call it (through ``corral._engine.check_spec``) as they are
        made, so that ``ProcessPoolExecutor``, which starts its engine only at the
        first submit, refuses at construction as ``Pool`` does.

        Raises:
            ValueError: ``spec`` (an ``EngineSpec``) asks for what the backend lacks.
        """


class Dask(ClusterBackend):
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
    task may run more than once there; a task that only waited on a dying
    worker, never started, is run again (once) rather than failed. ``share()``
    and arguments of 1 MiB or more go to the workers through ``scatter``; a
    shared NumPy array arrives read-only, other shared objects as the task's
    own copy. ``maxtasksperchild`` and ``max_memory_per_child`` are refused
    (``ValueError``, when the pool or executor is made). The workers must be
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

    def validate(self, spec: Any) -> None:
        """Refuse ``maxtasksperchild`` and ``max_memory_per_child``: see the class docstring.

        Raises:
            ValueError: ``spec`` sets either.
        """
        if spec.max_tasks is not None:
            msg = (
                "maxtasksperchild / max_tasks_per_child is not supported on the Dask backend: "
                "Dask's scheduler, not corral, hands a worker its next task, so a worker cannot "
                "be replaced after exactly N tasks without rerunning the one it was given next. "
                "Leave it None (a Dask cluster can recycle workers itself: dask worker --lifetime)."
            )
            raise ValueError(msg)
        if spec.max_memory is not None:
            msg = (
                "max_memory_per_child is not supported on the Dask backend: Dask limits memory "
                "per worker when the cluster starts (dask worker --memory-limit, "
                "distributed.worker.memory.terminate). Leave it None and set the limit there."
            )
            raise ValueError(msg)

    def __repr__(self) -> str:
        return f"corral.backends.Dask(client={self.client!r}, address={self.address!r})"


class Ray(ClusterBackend):
    """Run a pool's tasks on a Ray cluster.

    Args:
        address: a cluster address (``"10.0.0.5:6379"``, ``"ray://host:10001"``
            or ``"auto"``) to connect to; corral disconnects at the end and never
            stops the cluster.
        remote_args: options of every worker, a Ray actor (``.options(...)``):
            ``num_cpus``, ``num_gpus``, ``memory``, ``resources``,
            ``runtime_env``, ``scheduling_strategy``... (``RAY_ACTOR_OPTIONS``
            lists them all). ``processes``/``max_workers`` default to the
            cluster's CPUs divided by ``num_cpus`` (1 by default). A pool refuses
            (``ValueError``) to start when the cluster has less of a resource
            than one worker asks for, autoscaling or not: start the nodes first.

    With no address the cluster is, in order: ``RAY_ADDRESS``, the session
    already initialised in this process (``ray.init``, left running), else a
    new local session that corral starts and shuts down with the pool.

    Raises:
        TypeError: ``remote_args`` is not a dict with string keys.
        ValueError: ``remote_args`` sets ``max_retries``, ``retry_exceptions``,
            ``max_restarts`` or ``max_task_retries`` (corral never lets Ray rerun
            a task: a lost task fails with ``WorkerLostError``) or ``max_calls``
            (use ``maxtasksperchild``), or a key that is not in
            ``RAY_ACTOR_OPTIONS``.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, remote_args: dict[str, Any] | None = None
    ) -> None:
        if remote_args is None:
            remote_args = {}
        if not isinstance(remote_args, dict) or not all(isinstance(k, str) for k in remote_args):
            msg = f"remote_args must be a dict of Ray task options, not {remote_args!r}"
            raise TypeError(msg)
        for key in ("max_retries", "retry_exceptions", "max_restarts", "max_task_retries"):
            if key in remote_args:
                msg = (
                    f"remote_args may not set {key!r}: corral never lets Ray rerun a task "
                    "(a task whose worker died fails alone with WorkerLostError); remove it"
                )
                raise ValueError(msg)
        if "max_calls" in remote_args:
            msg = "remote_args may not set 'max_calls'; use maxtasksperchild / max_tasks_per_child"
            raise ValueError(msg)
        for key in remote_args:
            if key not in RAY_ACTOR_OPTIONS:
                msg = (
                    f"remote_args has {key!r}, which corral does not pass to Ray's actors; "
                    f"the accepted options are: {', '.join(RAY_ACTOR_OPTIONS)}"
                )
                raise ValueError(msg)
        self.address = address
        self.remote_args = dict(remote_args)

    def validate(self, spec: Any) -> None:
        """Refuse ``max_memory_per_child``: Ray's own memory monitor kills workers.

        Raises:
            ValueError: ``spec`` sets it.
        """
        if spec.max_memory is not None:
            msg = (
                "max_memory_per_child is not supported on the Ray backend (Ray's own memory "
                "monitor kills workers that use too much); leave it None"
            )
            raise ValueError(msg)

    def __repr__(self) -> str:
        return f"corral.backends.Ray(address={self.address!r}, remote_args={self.remote_args!r})"


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
    if backend == "ray":
        return Ray()
    if isinstance(backend, ClusterBackend):
        return backend
    if isinstance(backend, str):
        msg = f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_NAMES)}"
        raise ValueError(msg)
    msg = f"backend must be None, a name or a corral.backends object, not {type(backend).__name__}"
    raise TypeError(msg)
