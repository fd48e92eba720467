"""Find the Ray cluster a pool runs on, or start a local session (and stop only that).

Order: the ``corral.backends.Ray`` object's ``address``; ``RAY_ADDRESS``; a
session already initialised in this process (``ray.init`` by the user, left
running); else a new local session sized for the requested workers (or the
CPUs), with the dashboard off, a 200 MiB object store and no usage reporting.

Ray connects a process to one session at a time, so corral counts the pools
using a session it started (or connected) itself and calls ``ray.shutdown``
when the last one stops; a session the user initialised is never shut down.
Connecting to a cluster by address and shutting down only disconnects this
driver: the cluster, started by ``ray start``, keeps running.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from . import session_reaper

INSTALL_HINT = "the Ray backend needs ray: pip install 'corral[ray]'"

_OBJECT_STORE = 200 * 1024 * 1024  # a local session's store: small machines, shared ones

_lock = threading.Lock()
_users = 0  # pools using the session corral initialised; 0 when corral has none
_generation = 0  # counts the sessions corral initialised (one shut down under it is over)
_watcher: session_reaper.Watcher | None = None  # stops corral's session if the program dies


def import_ray() -> Any:
    """Return the ``ray`` module.

    Raises:
        ImportError: Ray is not installed (the message names the pip command).
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


class Session:
    """The Ray session a pool uses, and whether corral must release it at the end."""

    def __init__(self, ray: Any, owned: bool) -> None:
        self.ray = ray
        self.owned = owned  # corral called ray.init for it (counted in _users)
        self._generation = _generation
        self._closed = False

    def capacity(self, cpus_per_task: float = 1.0) -> int:
        """How many tasks of ``cpus_per_task`` CPUs the cluster runs at once (at least 1)."""
        cpus = float(self.ray.cluster_resources().get("CPU", 1))
        if cpus_per_task > 0:
            cpus /= cpus_per_task
        return max(1, int(cpus + 1e-9))

    def close(self) -> None:
        """Release the session; shut it down if corral started it and no pool still uses it."""
        global _users, _watcher
        if self._closed or not self.owned:
            return
        self._closed = True
        with _lock:
            if self._generation != _generation:
                return  # that session was shut down and replaced meanwhile
            _users -= 1
            if _users == 0 and self.ray.is_initialized():
                self.ray.shutdown()
            if _users == 0 and _watcher is not None:
                _watcher.stop()
                _watcher = None


def connect(backend: Any, workers: int) -> Session:
    """Connect to the cluster ``backend`` points at (see the module docstring).

    Raises:
        ImportError: Ray is not installed (the message names the extra).
        ValueError: ``address`` names another cluster than the one this process
            is already connected to (Ray allows one per process).
        ConnectionError: the address cannot be reached (Ray's error).
    """
    global _users, _generation, _watcher
    ray = import_ray()
    address = getattr(backend, "address", None)
    with _lock:
        if ray.is_initialized():
            if address and address != "auto" and not _same_cluster(ray, address):
                current = ray.get_runtime_context().gcs_address
                msg = (
                    f"this process is already connected to the Ray cluster at {current}, "
                    f"not {address}; Ray connects a process to one cluster. "
                    "Call ray.shutdown() first, or leave address=None to use it"
                )
                raise ValueError(msg)
            if _users == 0:
                return Session(ray, owned=False)  # the user's session: never shut down
            _users += 1
            return Session(ray, owned=True)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file in $HOME
        # A task the memory monitor kills is a lost task too: never rerun (Ray
        # counts OOM retries apart from max_retries).
        os.environ.setdefault("RAY_task_oom_retries", "0")
        watcher = None
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, log_to_driver=False)
        else:
            before = session_reaper.descendants(os.getpid())
            ray.init(
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=_OBJECT_STORE,
                log_to_driver=False,
            )
            # If this program is killed, the session's processes go with it at
            # once (Ray's agents would linger about 60 s).
            watcher = session_reaper.start(before)
        _users = 1
        _generation += 1
        if _watcher is not None:  # of a session shut down under corral
            _watcher.stop()
        _watcher = watcher
        return Session(ray, owned=True)


def _same_cluster(ray: Any, address: str) -> bool:
    """Whether ``address`` (``host:port`` or ``ray://...``) is the connected cluster's."""
    current = str(ray.get_runtime_context().gcs_address)
    return address.split("://")[-1] == current
