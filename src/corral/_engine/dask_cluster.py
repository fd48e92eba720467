"""Find the Dask cluster a pool runs on, or start a local one (and stop only that).

Order: the ``corral.backends.Dask`` object's ``client`` or ``address``; Dask's
configured scheduler address (``scheduler-address`` in ``dask.config``, which
``DASK_SCHEDULER_ADDRESS`` sets); the default client already connected in this
process; else a new ``LocalCluster`` with one single-threaded worker process
per requested worker, started with ``allowed-failures=0`` so that a task whose
worker dies is never rerun on another worker, and ``worker-saturation=1.0`` so
that no other task waits on a worker and shares the blame. A local cluster
that cannot start raises ``WorkerStartupError`` (with the main-guard
explanation for a spawned script), its noise kept out of the output.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_GUARD = (
    "Put the code that starts pools under the main-module guard:\n\n"
    "    if __name__ == '__main__':\n"
    "        ..."
)

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
    _refuse_while_importing_main()
    n = workers or os.cpu_count() or 1
    # allowed-failures=0: a task whose worker died is failed, not rerun elsewhere.
    # worker-saturation=1.0: a worker holds only the task it runs (the default
    # 1.1 sends a single-threaded worker a second one to queue), so its death
    # fails that task alone instead of also the one waiting behind it.
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    try:
        with dask.config.set(settings), _quiet_dask_logging():
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
    except Exception as exc:
        raise _startup_error(exc) from None
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return Connection(client, owns_client=True, cluster=cluster)


def _refuse_while_importing_main() -> None:
    """(In a Dask worker process still importing the user's script) exit with one line.

    Dask starts each worker process with multiprocessing's spawn, which runs
    the main module again; a script that starts a pool at import time, without
    the main guard, lands here. Starting a cluster of its own would fail with
    about a hundred lines of Dask tracebacks per worker; the parent explains.
    """
    from .. import process

    # The stdlib's multiprocessing started this process if it is loaded (corral
    # itself never imports it): read its state without importing it.
    stdlib_process = sys.modules.get("multiprocessing.process")
    stdlib_inheriting = stdlib_process is not None and getattr(
        stdlib_process.current_process(), "_inheriting", False
    )
    if stdlib_inheriting or getattr(process.current_process(), "_inheriting", False):
        # The script's path, as the parent ran it (spawn passes sys.argv on).
        main_path = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "__main__"
        msg = (
            f"corral: a new worker process imported {main_path} again, which starts a "
            "Dask pool at import time (no \"if __name__ == '__main__':\" guard); it exits."
        )
        raise SystemExit(msg)


@contextmanager
def _quiet_dask_logging() -> Iterator[None]:
    """Drop what ``distributed`` logs while corral starts its cluster.

    A cluster that cannot start logs every nanny's failure with a traceback
    (hundreds of lines); corral raises one error that says what happened
    instead (``_startup_error``). The filter sits on the ``distributed``
    logger's handlers, for the start only.
    """
    handlers = list(logging.getLogger("distributed").handlers)
    drop_all = logging.Filter("corral-drops-everything")  # no record has this name
    for handler in handlers:
        handler.addFilter(drop_all)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop_all)


def _startup_error(exc: BaseException) -> BaseException:
    """``WorkerStartupError`` for a local cluster that could not start (Dask's error in it)."""
    from ..errors import WorkerStartupError

    msg = (
        f"the local Dask cluster corral starts could not start its workers "
        f"(Dask: {type(exc).__name__}: {exc}); no pool was started."
    )
    main_path = getattr(sys.modules.get("__main__"), "__file__", None)
    method = dask_start_method()
    if main_path and method in ("spawn", "forkserver"):
        msg += (
            f" Dask starts each worker process with the {method!r} start method, which "
            f"imports the main module {main_path} again: a script that starts a pool at "
            "import time, without the \"if __name__ == '__main__':\" guard, or a main "
            "module that raises when it is imported, kills every worker this way. " + _GUARD
        )
    else:
        msg += " Its workers' output above says why."
    error = WorkerStartupError(msg)
    error.__cause__ = None
    return error


def dask_start_method() -> str:
    """How Dask starts worker processes (``distributed.worker.multiprocessing-method``)."""
    import dask

    return str(dask.config.get("distributed.worker.multiprocessing-method", "spawn"))
