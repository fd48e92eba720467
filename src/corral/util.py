"""Logging, finalizers, after-fork hooks and small OS helpers shared by every layer.

Mirrors ``multiprocessing.util``: ``get_logger``, ``log_to_stderr``,
``Finalize``, ``register_after_fork``, ``is_exiting``, ``get_temp_dir`` and the
fork-aware helpers. The logger is named ``"multiprocessing"`` like the stdlib's,
so logging configuration written for the stdlib applies unchanged.
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

# logging, tempfile and shutil are imported on first use: every process that
# starts a child imports this module, and tempfile brings in random, whose
# at-fork hook reseeds (a 2.5 KB getrandom) in every forked child; logging's
# at-fork hooks take and re-create its locks around every fork.
if TYPE_CHECKING:
    import logging

__all__ = (
    "DEFAULT_LOGGING_FORMAT",
    "LOGGER_NAME",
    "MAXFD",
    "SUBDEBUG",
    "SUBWARNING",
    "Finalize",
    "ForkAwareLocal",
    "ForkAwareThreadLock",
    "close_all_fds_except",
    "close_fds",
    "debug",
    "get_logger",
    "get_temp_dir",
    "info",
    "is_abstract_socket_namespace",
    "is_exiting",
    "log_to_stderr",
    "register_after_fork",
    "sub_debug",
    "sub_warning",
)

NOTSET = 0
SUBDEBUG = 5
DEBUG = 10
INFO = 20
SUBWARNING = 25

LOGGER_NAME = "multiprocessing"
DEFAULT_LOGGING_FORMAT = "[%(levelname)s/%(processName)s] %(message)s"

try:
    MAXFD = os.sysconf("SC_OPEN_MAX")
except (AttributeError, ValueError, OSError):  # pragma: no cover - every POSIX has it
    MAXFD = 256

_logger: logging.Logger | None = None
_log_to_stderr = False
_logger_lock = threading.Lock()


# ---------------------------------------------------------------------------
# logging


def sub_debug(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(SUBDEBUG, msg, *args, stacklevel=2)


def debug(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(DEBUG, msg, *args, stacklevel=2)


def info(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(INFO, msg, *args, stacklevel=2)


def sub_warning(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(SUBWARNING, msg, *args, stacklevel=2)


def get_logger() -> logging.Logger:
    """Return the package logger, creating it (without handlers) on first use.

    The logger does not propagate to the root logger, like the stdlib's, so
    nothing is printed until a handler is added (see ``log_to_stderr``).
    """
    global _logger
    import logging

    with _logger_lock:
        if _logger is None:
            logging.addLevelName(SUBDEBUG, "SUBDEBUG")
            logging.addLevelName(SUBWARNING, "SUBWARNING")
            logger = logging.getLogger(LOGGER_NAME)
            logger.propagate = False
            logger.addFilter(_ProcessNameFilter())
            _logger = logger
    return _logger


class _ProcessNameFilter:
    """Fill ``%(processName)s`` with corral's process name.

    The logging module asks ``sys.modules['multiprocessing']`` for the name,
    which is not corral (and usually not imported at all).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from .process import current_process

        record.processName = current_process().name
        return True


def log_to_stderr(level: int | str | None = None) -> logging.Logger:
    """Attach a stderr handler with the stdlib's format to the package logger.

    Args:
        level: if given, the logger's new level. Children started with spawn or
            forkserver inherit the handler and the level.

    Returns:
        The package logger.
    """
    global _log_to_stderr
    import logging

    logger = get_logger()
    if not any(getattr(h, "_corral_stderr", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(DEFAULT_LOGGING_FORMAT))
        handler._corral_stderr = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if level:
        logger.setLevel(level)
    _log_to_stderr = True
    return logger


# ---------------------------------------------------------------------------
# temporary directory owned by this process


_temp_dir: str | None = None


def get_temp_dir() -> str:
    """Return a private (mode 0700) directory of this process, removed at exit.

    Unix socket addresses of listeners and the forkserver live here, so no
    other local user can reach them.
    """
    global _temp_dir
    if _temp_dir is None or not os.path.isdir(_temp_dir):
        import shutil
        import tempfile

        path = tempfile.mkdtemp(prefix="corral-")
        info("created temp directory %s", path)
        Finalize(None, _remove_temp_dir, args=(shutil.rmtree, path), exitpriority=-100)
        _temp_dir = path
    return _temp_dir


def _remove_temp_dir(rmtree: Callable[..., None], path: str) -> None:
    global _temp_dir
    rmtree(path, ignore_errors=True)
    _temp_dir = None


# ---------------------------------------------------------------------------
# after-fork hooks


_afterfork_registry: weakref.WeakValueDictionary[tuple[int, int, Any], Any] = (
    weakref.WeakValueDictionary()
)
_afterfork_counter = itertools.count()


def register_after_fork(obj: Any, func: Callable[[Any], None]) -> None:
    """Call ``func(obj)`` in every child started by ``Process.start()``, if obj is alive.

    Hooks run in registration order, before the child's ``run()``.
    """
    _afterfork_registry[(next(_afterfork_counter), id(obj), func)] = obj


def _run_after_forkers() -> None:
    if not _afterfork_registry:
        # The common case: iterating a WeakValueDictionary (its guard, the
        # sort) writes to pages that are copy-on-write in a forked child.
        return
    for (_index, _ident, func), obj in sorted(_afterfork_registry.items(), key=_first):
        try:
            func(obj)
        except Exception as exc:
            info("after forker raised exception %s", exc)


def _first(item: tuple[tuple[int, int, Any], Any]) -> int:
    return item[0][0]


# ---------------------------------------------------------------------------
# finalizers


_finalizer_registry: dict[tuple[int | None, int], Finalize] = {}
_finalizer_counter = itertools.count()


class Finalize:
    """Run ``callback(*args, **kwargs)`` once: when obj is collected, when called, or at exit.

    Args:
        obj: the object whose collection triggers the callback; None for a
            finalizer that only runs at exit (then ``exitpriority`` is required).
        callback: the function to run.
        args, kwargs: its arguments.
        exitpriority: None for "not at exit"; otherwise finalizers run at exit in
            decreasing priority order (equal priorities: newest first).

    Raises:
        TypeError: obj is not weak-referenceable, or obj is None and no
            exitpriority is given.
    """

    def __init__(
        self,
        obj: Any,
        callback: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        exitpriority: int | None = None,
    ) -> None:
        if exitpriority is not None and not isinstance(exitpriority, int):
            msg = f"Exitpriority ({exitpriority!r}) must be None or int, not {type(exitpriority)}"
            raise TypeError(msg)
        if obj is not None:
            self._weakref: weakref.ref[Any] | None = weakref.ref(obj, self)
        elif exitpriority is None:
            msg = "Without object, exitpriority cannot be None"
            raise ValueError(msg)
        else:
            self._weakref = None
        self._callback: Callable[..., Any] | None = callback
        self._args = tuple(args)
        self._kwargs = kwargs or {}
        self._key: tuple[int | None, int] | None = (exitpriority, next(_finalizer_counter))
        self._pid = os.getpid()
        _finalizer_registry[self._key] = self

    def __call__(
        self,
        wr: Any = None,
        # Bound at definition: a finalizer may run during interpreter teardown,
        # after this module's globals have been set to None.
        _registry: dict[tuple[int | None, int], Finalize] = _finalizer_registry,
        sub_debug: Callable[..., None] = sub_debug,
        getpid: Callable[[], int] = os.getpid,
    ) -> Any:
        """Run the callback if it has not run yet, and return its result."""
        try:
            del _registry[self._key]  # type: ignore[arg-type]
        except KeyError:
            sub_debug("finalizer no longer registered")
            return None
        if self._pid != getpid():
            sub_debug("finalizer ignored because different process")
            res = None
        else:
            sub_debug(
                "finalizer calling %s with args %s and kwargs %s",
                self._callback,
                self._args,
                self._kwargs,
            )
            res = self._callback(*self._args, **self._kwargs)  # type: ignore[misc]
        self._weakref = self._callback = self._key = None
        self._args = ()
        self._kwargs = {}
        return res

    def cancel(self) -> None:
        """Unregister the callback without running it."""
        try:
            del _finalizer_registry[self._key]  # type: ignore[arg-type]
        except KeyError:
            pass
        else:
            self._weakref = self._callback = self._key = None
            self._args = ()
            self._kwargs = {}

    def still_active(self) -> bool:
        """True while the callback has neither run nor been cancelled."""
        return self._key in _finalizer_registry

    def __repr__(self) -> str:
        obj = self._weakref() if self._weakref is not None else None
        if self._key is None:
            return "<Finalize object, dead>"
        name = getattr(self._callback, "__qualname__", None) or getattr(
            self._callback, "__name__", repr(self._callback)
        )
        text = f"<Finalize object, callback={name}"
        if obj is not None:
            text += f", obj={type(obj).__name__}"
        if self._args:
            text += f", args={self._args!r}"
        if self._kwargs:
            text += f", kwargs={self._kwargs!r}"
        if self._key[0] is not None:
            text += f", exitpriority={self._key[0]!r}"
        return text + ">"


def _after_fork_in_child() -> None:
    """Drop the finalizers inherited through fork: they belong to the parent.

    Finalizers registered by ``os.register_at_fork`` hooks, which run in the
    child before this, are the child's own and stay.
    """
    pid = os.getpid()
    for key, finalizer in list(_finalizer_registry.items()):
        if finalizer._pid != pid:
            del _finalizer_registry[key]


def _run_finalizers(minpriority: int | None = None) -> None:
    """Run registered finalizers, highest priority first.

    With ``minpriority`` None every finalizer with a priority runs; otherwise
    only those whose priority is at least ``minpriority``.
    """
    if not _finalizer_registry:  # none registered, or interpreter teardown
        return
    if minpriority is None:

        def wanted(priority: int | None) -> bool:
            return priority is not None
    else:

        def wanted(priority: int | None) -> bool:
            return priority is not None and priority >= minpriority

    keys = sorted((k for k in list(_finalizer_registry) if wanted(k[0])), reverse=True)
    for key in keys:
        finalizer = _finalizer_registry.get(key)
        if finalizer is None:
            continue
        sub_debug("calling %s", finalizer)
        try:
            finalizer()
        except Exception:
            import traceback

            traceback.print_exc()
    if minpriority is None:
        _finalizer_registry.clear()


# ---------------------------------------------------------------------------
# process exit


_exiting = False


def is_exiting() -> bool:
    """True once this process has started its exit sequence (or during interpreter shutdown)."""
    return _exiting or _exiting is None


def _exit_function() -> None:
    """Exit sequence of every corral process (atexit in the main one, after run() in children).

    Runs the finalizers with priority >= 0, terminates daemonic children, joins
    the others, then runs the remaining finalizers.
    """
    global _exiting
    if _exiting:
        return
    _exiting = True
    from . import process

    info("process shutting down")
    debug("running all 'atexit' finalizers with priority >= 0")
    _run_finalizers(0)
    if process.current_process() is not None:
        # A pool's engine thread may close a worker's Process object while this
        # runs (shutdown(wait=False) just before exit): skip the ones it closed.
        for child in process.active_children():
            if child.daemon:
                info("calling terminate() for daemon %s", child.name)
                popen = child._popen
                if popen is not None:
                    popen.terminate()
        for child in process.active_children():
            info("calling join() for process %s", child.name)
            try:
                child.join()
            except ValueError:  # closed meanwhile: it has been reaped already
                pass
    debug("running the remaining 'atexit' finalizers")
    _run_finalizers()


atexit.register(_exit_function)


# ---------------------------------------------------------------------------
# fork-aware helpers


class ForkAwareThreadLock:
    """A ``threading.Lock`` that is replaced by a fresh one in children."""

    def __init__(self) -> None:
        self._at_fork_reinit()
        register_after_fork(self, ForkAwareThreadLock._at_fork_reinit)

    def _at_fork_reinit(self) -> None:
        self._lock = threading.Lock()
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *args: Any) -> None:
        self._lock.__exit__(*args)


class ForkAwareLocal(threading.local):
    """A ``threading.local`` that is emptied in children."""

    def __init__(self) -> None:
        register_after_fork(self, lambda obj: obj.__dict__.clear())

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return type(self), ()


# ---------------------------------------------------------------------------
# file descriptors and sockets


def close_fds(*fds: int) -> None:
    """Close each fd, ignoring ones that are already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def close_all_fds_except(fds: Iterable[int]) -> None:
    """Close every fd of this process except those listed."""
    keep = sorted({-1, *fds, MAXFD})
    for low, high in itertools.pairwise(keep):
        os.closerange(low + 1, high)


def is_abstract_socket_namespace(address: object) -> bool:
    """True for a Linux abstract-namespace AF_UNIX address (leading NUL)."""
    if not address:
        return False
    if isinstance(address, bytes):
        return address[0] == 0
    if isinstance(address, str):
        return address[0] == "\0"
    msg = f"address type of {address!r} unrecognized"
    raise TypeError(msg)


abstract_sockets_supported = sys.platform == "linux"


def _close_stdin() -> None:
    """Point stdin at /dev/null in a child, so it never competes for the terminal."""
    if sys.stdin is None:
        return
    try:
        sys.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            sys.stdin = open(fd, encoding="utf-8", closefd=False)  # noqa: SIM115
        except BaseException:
            os.close(fd)
            raise
    except (OSError, ValueError):
        pass


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _cleanup_tests() -> None:
    """Hook of the stdlib's test-suite fixture: stop the helper processes of this process."""
    from . import _forkserver

    _forkserver._forkserver.stop()
    _run_finalizers()
