"""The process pool's errors (see the hierarchy in ``corral.errors``, where they are found).

Apart because they derive from ``concurrent.futures.BrokenExecutor``: importing
``concurrent.futures`` (and the logging it imports) is left to the first use of
a pool error, not paid by ``import corral``. Each class says ``corral.errors``
as its module: that is where users, tracebacks and pickle find it.
"""

from __future__ import annotations

import signal
from concurrent.futures import BrokenExecutor

from .errors import _POOL_ERRORS

# The names are listed once, in errors (which must know them without importing
# this module).
__all__ = tuple(sorted(_POOL_ERRORS))


class BrokenProcessPool(BrokenExecutor):
    """A process pool could not run a task (the stdlib's name and base class).

    corral raises its subclasses below; ``BrokenProcessPool`` itself is raised
    only when a pool was shut down by force (``terminate``/``kill_workers``)
    with the task still pending, or, with ``isolate_failures=False``, when any
    worker died.
    """

    __module__ = "corral.errors"


def describe_exitcode(exitcode: int | None) -> str:
    """Render an exit code as ``"exit code 3"`` or ``"signal SIGKILL(-9)"``."""
    if exitcode is None:
        return "an unknown exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"signal {name}({exitcode})"
    return f"exit code {exitcode}"


class WorkerLostError(BrokenProcessPool):
    """The worker process that held this task died before returning its result.

    Only the task(s) the worker was running fail; tasks it had been sent but had
    not started are run by other workers, a replacement worker starts, and the
    pool keeps accepting work. Attributes: ``pid``, ``exitcode`` (negative for a
    signal, as ``Process.exitcode``).
    Likely causes: a crash in C code (segfault), ``os._exit()``, the out-of-memory
    killer, or someone sending the worker a signal.
    """

    __module__ = "corral.errors"

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    @classmethod
    def for_worker(cls, pid: int | None, exitcode: int | None, what: str) -> WorkerLostError:
        """Build the error for a worker ``pid`` that ended with ``exitcode``."""
        msg = (
            f"worker process {pid} died with {describe_exitcode(exitcode)} while {what}; "
            "the pool replaced it and runs the other tasks. A crash in native code, "
            "os._exit(), the out-of-memory killer or an outside kill can cause this."
        )
        return cls(msg, pid, exitcode)


class TaskExitError(WorkerLostError, SystemExit):
    """The task called ``sys.exit()`` (or raised ``SystemExit``); its worker exited.

    It is also a ``SystemExit``, which is what the stdlib's executor re-raises in
    this case; ``code`` holds the exit status the task asked for.
    """

    __module__ = "corral.errors"

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message, pid, exitcode)
        self.code = exitcode


class InitializerError(BrokenProcessPool):
    """The pool's ``initializer`` raised in a worker.

    The pool is then broken for good: every pending and later call fails at once
    with this error (no respawn loop). The initializer's traceback is chained as
    ``__cause__``. Fix the initializer, then create a new pool.
    """

    __module__ = "corral.errors"


class WorkerStartupError(BrokenProcessPool):
    """New worker processes kept dying before they were ready to run tasks.

    Raised (for every pending and later call) once three workers in a row have
    died during their start-up with none ready in between: the pool would
    otherwise restart them forever. The usual causes: a spawn or forkserver
    script that starts the pool without the ``if __name__ == '__main__':``
    guard, a main module that raises when a child imports it, or workers killed
    as they start (out of memory). The message names the start method and the
    last worker's exit status; the workers' own tracebacks are on stderr.
    """

    __module__ = "corral.errors"


class TaskUnpicklingError(BrokenProcessPool):
    """The worker could not unpickle the task's function or arguments.

    Only this task fails. The worker-side traceback is chained as ``__cause__``.
    Likely cause: an object whose ``__reduce__`` fails or whose class is not
    importable in the worker (with spawn/forkserver, define it in a module).
    """

    __module__ = "corral.errors"


class ResultUnpicklingError(BrokenProcessPool):
    """The parent could not unpickle a task's result (or its exception).

    Only this task fails. The message carries the pickled object's type name and
    the error raised while unpickling it.
    """

    __module__ = "corral.errors"
