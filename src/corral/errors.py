"""Every exception corral raises, in one place.

The stdlib-compatible names are re-exported where ``multiprocessing`` has them
(``corral.ProcessError``, ``corral.AuthenticationError``, ...), so code that
catches the stdlib's types keeps working. corral's own errors subclass the
nearest stdlib-compatible class.

Hierarchy::

    Exception
    ├── ProcessError                  base of the multiprocessing errors
    │   ├── BufferTooShort            recv_bytes_into(): the buffer is too small;
    │   │                             .args[0] holds the whole message
    │   ├── TimeoutError              a timed wait on a result ran out
    │   ├── AuthenticationError       the HMAC handshake failed or was malformed
    │   └── MessageLostError          (also EOFError) a big message's shared-memory
    │                                 segment was removed before it was read
    ├── pickle.PicklingError
    │   └── SerializationError        (also a TypeError) an object cannot be sent
    │       │                         to another process; names the object
    │       └── MaybeEncodingError    a task's result or exception could not be
    │                                 pickled in the worker (only that task fails)
    ├── RemoteTraceback               the worker-side traceback, attached as the
    │                                 ``__cause__`` of a task's re-raised exception
    ├── RemoteError                   a manager refused a proxy's request (method
    │                                 not exposed, object released, result not
    │                                 serializable); the text says which
    └── RuntimeError
        └── concurrent.futures.BrokenExecutor
            └── BrokenProcessPool     a pool cannot run a task (stdlib name)
                ├── WorkerLostError   the worker holding the task died; names pid,
                │   │                 exit code and signal; the pool lives on
                │   └── TaskExitError (also SystemExit) the task called sys.exit()
                ├── InitializerError  the pool's initializer raised; the pool is
                │                     broken for good, every call fails at once
                ├── WorkerStartupError    new workers kept dying before they were
                │                     ready (3 in a row): broken for good, as above
                ├── TaskUnpicklingError   the worker could not unpickle the task
                └── ResultUnpicklingError the parent could not unpickle a result

    ManagerConnectionError            (ConnectionError and EOFError) a proxy or manager
                                      lost its manager: shut down, or its process died

    NotOnBackendError                 (NotImplementedError) a backend context (Ray,
                                      Dask) was asked for something that lives in
                                      this machine's processes: Process, Queue, Lock

    TaskTimeoutError                  (ProcessError's TimeoutError and the builtin
                                      TimeoutError) a task ran past ``task_timeout``;
                                      its worker was stopped and replaced

    subprocess.CalledProcessError
    └── CommandFailedError            run_commands(check=True): a command failed
                                      (status, signal or timeout); .results holds
                                      every command's outcome (defined in _commands)

The pool errors that are not "the pool is broken" still derive from
``BrokenProcessPool`` because the stdlib's executor raises that type in the same
situations (it breaks the whole pool there), so code catching it keeps working.
"""

from __future__ import annotations

import builtins
import pickle

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:  # defined in _pool_errors, found here through __getattr__ below
    from ._commands import CommandFailedError as CommandFailedError
    from ._pool_errors import BrokenProcessPool as BrokenProcessPool
    from ._pool_errors import InitializerError as InitializerError
    from ._pool_errors import ResultUnpicklingError as ResultUnpicklingError
    from ._pool_errors import TaskExitError as TaskExitError
    from ._pool_errors import TaskUnpicklingError as TaskUnpicklingError
    from ._pool_errors import WorkerLostError as WorkerLostError
    from ._pool_errors import WorkerStartupError as WorkerStartupError
    from ._pool_errors import describe_exitcode as describe_exitcode

__all__ = (
    "AuthenticationError",
    "BrokenProcessPool",
    "BufferTooShort",
    "CommandFailedError",
    "InitializerError",
    "ManagerConnectionError",
    "MaybeEncodingError",
    "MessageLostError",
    "NotOnBackendError",
    "ProcessError",
    "RemoteError",
    "RemoteTraceback",
    "ResultUnpicklingError",
    "SerializationError",
    "TaskExitError",
    "TaskTimeoutError",
    "TaskUnpicklingError",
    "TimeoutError",
    "WorkerLostError",
    "WorkerStartupError",
)


class ProcessError(Exception):
    """Base class of the errors raised by the process machinery."""


class BufferTooShort(ProcessError):
    """``Connection.recv_bytes_into()`` got a message larger than the buffer.

    The complete message is available as ``e.args[0]``.
    """


class TimeoutError(ProcessError):
    """A timed wait on a result ran out (``AsyncResult.get(timeout)``, ...)."""


class AuthenticationError(ProcessError):
    """The peer failed the HMAC challenge, or sent something that is not a handshake."""


class MessageLostError(ProcessError, EOFError):
    """A big message's shared-memory segment was gone when its receiver opened it.

    Big messages (large NumPy arrays...) travel in a segment of their own; the
    resource tracker of the sending program removes it when that program has
    ended, read or not. The message says which segment and what to do.
    """


class SerializationError(pickle.PicklingError, TypeError):
    """An object cannot be pickled to be sent to another process.

    The message names the object that failed (for example
    ``args[1].handle -> <_thread.lock object ...>``) and the original error is
    chained as ``__cause__``. It is both a ``pickle.PicklingError`` and a
    ``TypeError`` so that code written against either stdlib behaviour catches it.
    Fix: pass a picklable object (plain data, a module-level function), or
    create the resource inside the worker.
    """


class MaybeEncodingError(SerializationError):
    """A task's result (or the exception it raised) could not be pickled in the worker.

    Only that task fails; the worker and the pool keep running. ``exc`` is the
    repr of the pickling error and ``value`` the repr of the object, as in the
    stdlib's ``multiprocessing.pool.MaybeEncodingError``; the worker-side
    traceback, when there is one, is chained as ``__cause__``.
    Fix: return plain data (or make the type picklable).
    """

    def __init__(self, exc: object, value: object) -> None:
        self.exc = exc if isinstance(exc, str) else repr(exc)
        self.value = value if isinstance(value, str) else repr(value)
        super().__init__(self.exc, self.value)

    def __str__(self) -> str:
        return f"Error sending result: '{self.value}'. Reason: '{self.exc}'"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text.

    Attached as ``__cause__`` of the re-raised exception so that printing the
    error shows where it happened in the worker.
    """

    def __init__(self, tb: str) -> None:
        self.tb = tb
        super().__init__(tb)

    def __str__(self) -> str:
        return self.tb


class RemoteError(Exception):
    """A manager could not carry out a proxy's request (``multiprocessing.managers.RemoteError``).

    Raised for failures of the request itself, not of the method it calls
    (those are re-raised with their own type): the method is not in the
    proxy's exposed list, the shared object was already released, the typeid
    is unknown to the server, or the result could not be serialized. The
    message says which, and what to change.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ManagerConnectionError(ConnectionError, EOFError):
    """The connection to a manager is gone: it was shut down, or its process died.

    Raised by proxy calls and manager requests instead of a hang. It is both a
    ``ConnectionError`` (an ``OSError``) and an ``EOFError``, the two kinds the
    stdlib raises here, so code written against either keeps working. The
    objects the manager owned are gone with it; start a new manager.
    """


class TaskTimeoutError(TimeoutError, builtins.TimeoutError):
    """A task ran longer than its ``task_timeout``.

    Its worker was stopped (SIGTERM, then SIGKILL), the task failed with this
    error, a replacement worker started, and the other tasks continue. It is both
    ``corral.TimeoutError`` and the builtin ``TimeoutError``.
    """


# -- describing an error that happened in another process ----------------------
# One implementation for the pool engine, the manager server and the proxies, so
# the text a user sees does not depend on which of them carried the error.

_REPR_LIMIT = 300


def short_repr(obj: object) -> str:
    """``repr(obj)`` cut to 300 characters, for error messages; never raises.

    A ``__repr__`` that raises is replaced by ``<Type object (repr failed: ...)>``,
    so a broken repr cannot hide the error being reported.
    """
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<{type(obj).__name__} object (repr failed: {exc!r})>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return text


def format_exception_text(exc: BaseException) -> str:
    """The full traceback of ``exc`` as text, as the process that caught it saw it."""
    import traceback  # not at import: ``import corral`` stays light

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def remote_traceback(tb_text: str) -> RemoteTraceback:
    """A ``RemoteTraceback`` holding another process's traceback text.

    The text is framed in triple quotes on lines of their own, as the stdlib's
    pools and executor frame it.
    """
    return RemoteTraceback(f'\n"""\n{tb_text}"""')


def attach_remote_traceback(exc: BaseException, tb_text: str | None) -> BaseException:
    """Chain another process's traceback text to ``exc`` as its ``__cause__``; return ``exc``.

    Does nothing when ``tb_text`` is empty or None. Use it as
    ``raise attach_remote_traceback(exc, text)``: printing the error then shows
    where it happened in the other process, as ``raise exc from ...`` would.
    """
    if tb_text:
        exc.__cause__ = remote_traceback(tb_text)
    return exc


# The pool's errors derive from concurrent.futures.BrokenExecutor, and importing
# concurrent.futures costs more than all of ``import multiprocessing`` (it pulls
# in logging): they are defined in _pool_errors, imported on first use. They
# are still ``corral.errors.X`` (their __module__ says so; pickle finds them here).
_POOL_ERRORS = frozenset(
    {
        "BrokenProcessPool",
        "InitializerError",
        "ResultUnpicklingError",
        "TaskExitError",
        "TaskUnpicklingError",
        "WorkerLostError",
        "WorkerStartupError",
        "describe_exitcode",
    }
)


def __getattr__(name: str) -> object:
    if name in _POOL_ERRORS:
        from . import _pool_errors

        value = getattr(_pool_errors, name)
        globals()[name] = value
        return value
    if name == "CommandFailedError":  # subprocess is imported only by run_commands
        from ._commands import CommandFailedError

        globals()[name] = CommandFailedError
        return CommandFailedError
    msg = f"module 'corral.errors' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | _POOL_ERRORS | {"CommandFailedError"})


class NotOnBackendError(NotImplementedError):
    """A backend context cannot make this object: it needs this machine's processes.

    ``corral.backends.Ray().get_context()`` and ``Dask().get_context()`` give a
    context whose ``Pool`` (and ``ProcessPoolExecutor(mp_context=...)``) run on
    the cluster. A ``Process``, queue, pipe, lock, shared value or manager of
    that context would have to be shared between this process and tasks on
    other machines, which the cluster cannot do: they raise this error. Use
    ``corral.get_context()`` for them, or pass data through task arguments and
    results. It is a ``NotImplementedError``, as the stdlib raises for features
    a platform lacks.
    """
