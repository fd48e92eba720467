"""Find the Dask cluster a pool runs on, or start a local one (and stop only that).

Order: the ``corral.backends.Dask`` object's ``client`` or ``address``; Dask's
configured scheduler address (``scheduler-address`` in ``dask.config``, which
``DASK_SCHEDULER_ADDRESS`` sets); the default client already connected in this
process; else a new ``LocalCluster`` with one single-threaded worker process
per requested worker, started with ``allowed-failures=0`` so that a task whose
worker dies is never rerun on another worker, and ``worker-saturation=1.0`` so
that no other task waits on a worker and shares the blame.
"""

from __future__ import annotations

import os
from typing import Any

INSTALL_HINT = "the Dask backend needs the distributed package: pip install 'corral[dask]'"


class Connection:
    """A client to use, and what corral started itself (and so must close)."""

    def __init__(self, client: Any, owns_client: bool, cluster: Any = None) -> None:
        self.client = client
        self.owns_client = owns_client
        self.cluster = cluster  # a LocalCluster corral started, or None

    def capacity(self) -> int:
        """The cluster's worker threads (at least 1)."""
        return max(1, sum(self.client.nthreads().values()))

    def close(self) -> None:
        """Close the client and cluster corral started; leave the user's alone."""
        try:
            if self.owns_client:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def connect(backend: Any, workers: int) -> Connection:
    """Connect to the cluster ``backend`` points at (see the module docstring).

    Raises:
        ImportError: ``distributed`` is not installed (the message names the extra).
        OSError: the scheduler address cannot be reached.
    """
    try:
        import dask
        import distributed
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    client = getattr(backend, "client", None)
    if client is not None:
        return Connection(client, owns_client=False)
    address = getattr(backend, "address", None) or dask.config.get("scheduler-address", None)
    if address:
        return Connection(distributed.Client(address, set_as_default=False), owns_client=True)
    try:
        return Connection(distributed.default_client(), owns_client=False)
    except ValueError:  # no client connected in this process
        pass
    n = workers or os.cpu_count() or 1
    # allowed-failures=0: a task whose worker died is failed, not rerun elsewhere.
    # worker-saturation=1.0: a worker holds only the task it runs (the default
    # 1.1 sends a single-threaded worker a second one to queue), so its death
    # fails that task alone instead of also the one waiting behind it.
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings):
        cluster = distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # With the dashboard off the scheduler still serves /health and
            # /metrics, by default on port 8787: a second cluster on the machine
            # would warn (an error under -W error) and move. Any free port.
            scheduler_kwargs={"dashboard_address": ":0"},
        )
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return Connection(client, owns_client=True, cluster=cluster)
