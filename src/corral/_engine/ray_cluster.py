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
import socket
import threading
from typing import Any

from . import session_reaper

INSTALL_HINT = "the Ray backend needs ray: pip install 'corral[ray]'"

_OBJECT_STORE = 200 * 1024 * 1024  # a local session's store: small machines, shared ones
# How long the check that a cluster address answers waits for a TCP connection.
# ray.init itself retries an unreachable GCS for minutes (logging every 40 s).
_REACH_TIMEOUT = 10.0

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

    def check_fits(self, remote_args: dict[str, Any]) -> None:
        """Raise ``ValueError`` if the cluster has less of a resource than one worker asks.

        Such a worker (an actor) could never be placed, and a task handed to it
        would wait forever. The cluster is taken as it is now
        (``ray.cluster_resources()``): nodes an autoscaler might add later do
        not count, so on an autoscaling cluster start the nodes first.

        Raises:
            ValueError: the message names the resource, the amount asked and
                what the cluster has.
        """
        asked: dict[str, float] = {}
        for option, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
            if remote_args.get(option):
                asked[resource] = float(remote_args[option])
        for resource, amount in (remote_args.get("resources") or {}).items():
            if amount:
                asked[str(resource)] = float(amount)
        have = self.ray.cluster_resources()
        for resource, amount in asked.items():
            available = float(have.get(resource, 0))
            if available + 1e-9 < amount:
                msg = (
                    f"each worker asks for {amount:g} {resource} (remote_args), but the Ray "
                    f"cluster has {available:g} {resource} in all, so no worker could start "
                    "and tasks would wait forever. Ask for less, or add nodes that have it "
                    "(an autoscaling cluster: start them first)"
                )
                raise ValueError(msg)

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
        ConnectionError: nothing answers at the address (``address`` or
            ``RAY_ADDRESS``) within ``_REACH_TIMEOUT`` seconds, or Ray's own
            error (``"auto"`` with no cluster running).
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
            check_reachable(
                address or os.environ["RAY_ADDRESS"], "address" if address else "RAY_ADDRESS"
            )
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


def check_reachable(address: str, source: str, timeout: float = _REACH_TIMEOUT) -> None:
    """Raise ``ConnectionError`` unless a TCP connection to ``address`` opens in ``timeout`` s.

    ``"host:port"`` (the cluster's GCS) and ``"ray://host:port"`` (Ray Client)
    are checked; ``"auto"``, ``"local"`` and anything without a port are left
    to Ray (``"auto"`` fails at once when no cluster runs on this machine).
    ``ray.init`` would retry an address where nothing listens for minutes.

    Raises:
        ConnectionError: nothing accepted the connection (the message names the
            address, where it came from, ``source``, and what to check).
    """
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return
    host = host.strip("[]")  # an IPv6 literal: [::1]:6379
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout):
            return
    except OSError as exc:
        msg = (
            f"cannot reach the Ray cluster at {address!r} (from {source}): {exc}. "
            "Check that the cluster runs (ray status on its head node), that the host "
            "and port are right (the head's GCS port, 6379 by default, or 10001 for "
            "ray://), and that no firewall is in the way; or leave the address unset "
            "to start a local session"
        )
        raise ConnectionError(msg) from exc
