"""The ``Process`` object and the process-tree bookkeeping of this interpreter.

``BaseProcess`` holds the stdlib's API; *how* a child is started is the job of
the ``_Popen`` class the context plugs in (``_popen_fork``, ``_popen_spawn``,
``_popen_forkserver``). ``_bootstrap`` is what every child runs, whatever
started it.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from _weakrefset import WeakSet  # what weakref.WeakSet is, without importing weakref
from collections.abc import Callable, Iterable, Mapping

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    from typing import Any

__all__ = ("BaseProcess", "active_children", "current_process", "parent_process")

_children: set[BaseProcess] = set()
_process_counter = itertools.count(1)
# Every Process object created here; the stdlib's test fixtures inspect it.
_dangling: WeakSet[BaseProcess] = WeakSet()


def current_process() -> BaseProcess:
    """Return the ``Process`` object of the process running this code."""
    return _current_process


def parent_process() -> BaseProcess | None:
    """Return the parent's ``Process`` object, or None in the main process."""
    return _parent_process


def active_children() -> list[BaseProcess]:
    """Return the children of this process still alive, reaping finished ones."""
    _cleanup()
    return list(_children)


def _cleanup() -> None:
    # Reap children that have finished, so no zombies pile up.
    for child in list(_children):
        popen = child._popen
        if popen is not None and popen.poll() is not None:
            _children.discard(child)


def _check(condition: bool, msg: str) -> None:
    """The stdlib signals misuse with AssertionError; keep that type, even under -O."""
    if not condition:
        raise AssertionError(msg)


class BaseProcess:
    """A process that runs ``target(*args, **kwargs)`` (or an overridden ``run``).

    Subclass and override ``run`` as with ``threading.Thread``. The start method
    is chosen by the context that created the class (``corral.Process`` uses the
    default context's).
    """

    _start_method: str | None = None
    _identity: tuple[int, ...]
    _config: dict[str, Any]
    _parent_pid: int | None

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any:
        raise NotImplementedError

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        _check(group is None, "group argument must be None for now")
        count = next(_process_counter)
        self._identity = (*_current_process._identity, count)
        self._config = _current_process._config.copy()
        self._parent_pid = os.getpid()
        self._parent_name = _current_process.name
        self._popen: Any = None
        self._closed = False
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs) if kwargs else {}
        self._name = name or (type(self).__name__ + "-" + ":".join(str(i) for i in self._identity))
        if daemon is not None:
            self.daemon = daemon
        _dangling.add(self)

    def _check_closed(self) -> None:
        if self._closed:
            msg = "process object is closed"
            raise ValueError(msg)

    def run(self) -> None:
        """Run in the child: call the target. Override in subclasses."""
        if self._target:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        """Start the child process.

        Raises:
            AssertionError: the process was already started, was created by
                another process, or this process is daemonic (as the stdlib).
            ValueError: the process object is closed.
        """
        self._check_closed()
        _check(self._popen is None, "cannot start a process twice")
        _check(
            self._parent_pid == os.getpid(),
            "can only start a process object created by current process",
        )
        _check(
            not _current_process._config.get("daemon"),
            "daemonic processes are not allowed to have children",
        )
        _cleanup()
        self._popen = self._Popen(self)
        self._sentinel = self._popen.sentinel
        # Drop the references to the target and its arguments in the parent:
        # the child has its own copy (bpo-30775 describes the leak otherwise).
        del self._target, self._args, self._kwargs
        _children.add(self)

    def terminate(self) -> None:
        """Send SIGTERM to the process."""
        self._check_closed()
        self._popen.terminate()

    def kill(self) -> None:
        """Send SIGKILL to the process."""
        self._check_closed()
        self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process ends, or until ``timeout`` seconds pass.

        Raises:
            AssertionError: the process was not started, or is not our child.
            ValueError: the process object is closed.
        """
        self._check_closed()
        _check(self._parent_pid == os.getpid(), "can only join a child process")
        _check(self._popen is not None, "can only join a started process")
        if self._popen.wait(timeout) is not None:
            _children.discard(self)

    def is_alive(self) -> bool:
        """True from ``start()`` until the process ends."""
        self._check_closed()
        if self is _current_process:
            return True
        _check(self._parent_pid == os.getpid(), "can only test a child process")
        if self._popen is None:
            return False
        if self._popen.poll() is None:
            return True
        _children.discard(self)
        return False

    def close(self) -> None:
        """Release the OS resources of a finished process.

        Raises:
            ValueError: the process is still running.
        """
        if self._popen is not None:
            if self._popen.poll() is None:
                msg = (
                    "Cannot close a process while it is still running. "
                    "You should first call join() or terminate()."
                )
                raise ValueError(msg)
            self._popen.close()
            self._popen = None
            self.__dict__.pop("_sentinel", None)
            _children.discard(self)
        self._closed = True

    def _release(self) -> None:
        """Release the OS resources of the child once it is reaped; keep the object usable.

        Pools call this for the workers they are done with instead of
        ``close()``: code written for the stdlib joins ``pool._pool`` or
        ``executor._processes`` after shutdown, and the stdlib never closes
        those. ``join()``, ``is_alive()`` and ``exitcode`` keep working (the
        exit code is kept); ``sentinel`` raises ValueError once released. A
        child not reaped yet is released when it is.
        """
        if self._popen is not None:
            self._popen.release_when_reaped()

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        if not isinstance(name, str):
            msg = "name must be a string"
            raise TypeError(msg)
        self._name = name

    @property
    def daemon(self) -> bool:
        """Whether the process is daemonic; it is terminated when its parent exits."""
        return self._config.get("daemon", False)

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        _check(self._popen is None, "process has already started")
        self._config["daemon"] = daemonic

    @property
    def authkey(self) -> bytes:
        return self._config["authkey"]

    @authkey.setter
    def authkey(self, authkey: bytes) -> None:
        self._config["authkey"] = AuthenticationString(authkey)

    @property
    def exitcode(self) -> int | None:
        """The exit code, negative -N if killed by signal N, None while running."""
        self._check_closed()
        if self._popen is None:
            return None
        return self._popen.poll()

    @property
    def ident(self) -> int | None:
        """The pid of the process (None before it starts)."""
        self._check_closed()
        if self is _current_process:
            return os.getpid()
        return self._popen and self._popen.pid

    pid = ident

    @property
    def sentinel(self) -> int:
        """An fd that becomes ready (readable) when the process ends.

        Raises:
            ValueError: the process was not started, or it is a pool's worker
                that has ended and been released (see ``_release``).
        """
        self._check_closed()
        if self._popen is not None and self._popen.released:
            msg = (
                "the process has ended and its pool released its sentinel; "
                "use join(), is_alive() or exitcode to learn how it ended"
            )
            raise ValueError(msg)
        try:
            return self._sentinel
        except AttributeError:
            msg = "process not started"
            raise ValueError(msg) from None

    def __repr__(self) -> str:
        exitcode = None
        if self is _current_process:
            status = "started"
        elif self._closed:
            status = "closed"
        elif self._parent_pid != os.getpid():
            status = "unknown"
        elif self._popen is None:
            status = "initial"
        else:
            exitcode = self._popen.poll()
            status = "started" if exitcode is None else "stopped"
        info = [type(self).__name__, f"name={self._name!r}"]
        if self._popen is not None:
            info.append(f"pid={self._popen.pid}")
        info.append(f"parent={self._parent_pid}")
        info.append(status)
        if exitcode is not None:
            info.append(f"exitcode={_exitcode_name(exitcode)}")
        if self.daemon:
            info.append("daemon")
        return "<" + " ".join(info) + ">"

    # -- in the child ---------------------------------------------------------

    def _bootstrap(self, parent_sentinel: int | None = None) -> int:
        """Run in the new child: set up the process globals, run, and return the exit code."""
        from . import util

        global _current_process, _parent_process, _process_counter, _children
        try:
            if self._start_method is not None:
                from . import _contexts

                _contexts._force_start_method(self._start_method)
            _process_counter = itertools.count(1)
            _children = set()
            util._close_stdin()
            old_process = _current_process
            _current_process = self
            _parent_process = _ParentProcess(self._parent_name, self._parent_pid, parent_sentinel)
            if threading._HAVE_THREAD_NATIVE_ID:  # type: ignore[attr-defined]
                threading.main_thread()._set_native_id()  # type: ignore[attr-defined]
            # Finalizers inherited through fork were dropped right after the
            # fork (see util._after_fork_in_child); the ones registered here,
            # while preparing a spawned child, are the child's own and stay.
            try:
                util._run_after_forkers()
            finally:
                del old_process
            util.info("child process calling self.run()")
            self.run()
            exitcode = 0
        except SystemExit as exc:
            exitcode = _exit_code_of(exc)
        except BaseException:
            exitcode = 1
            import traceback

            sys.stderr.write(f"Process {self.name}:\n")
            traceback.print_exc()
        finally:
            try:
                threading._shutdown()  # type: ignore[attr-defined]
            except BaseException:
                pass
            util.info("process exiting with exitcode %d", exitcode)
            try:
                util._exit_function()
            except BaseException:
                pass
            util._flush_std_streams()
        return exitcode

    # Process objects are pickled only to be sent to a spawn/forkserver child.
    def __reduce__(self) -> Any:
        from ._spawning import assert_spawning

        assert_spawning(self)
        return object.__reduce__(self)


def _exit_code_of(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(str(code) + "\n")
    return 1


class AuthenticationString(bytes):
    """The authkey: bytes that refuse to be pickled except to start a child."""

    def __reduce__(self) -> Any:
        from ._spawning import get_spawning_popen

        if get_spawning_popen() is None:
            msg = "Pickling an AuthenticationString object is disallowed for security reasons"
            raise TypeError(msg)
        return AuthenticationString, (bytes(self),)


class _MainProcess(BaseProcess):
    def __init__(self) -> None:
        self._identity = ()
        self._name = "MainProcess"
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._config = {"authkey": AuthenticationString(os.urandom(32)), "semprefix": "/mp"}

    def close(self) -> None:
        pass


class _ParentProcess(BaseProcess):
    """The parent, as seen from a child: only name, pid, sentinel, is_alive and join."""

    _sentinel_fd: int | None

    def __init__(self, name: str, pid: int | None, sentinel: int | None) -> None:
        self._identity = ()
        self._name = name
        self._pid = pid
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._config = {}
        self._sentinel_fd = sentinel

    @property
    def sentinel(self) -> int:
        if self._sentinel_fd is None:
            self._sentinel_fd = _open_parent_sentinel(self._pid)
        return self._sentinel_fd

    def is_alive(self) -> bool:
        from .connection import wait

        return not wait([self.sentinel], timeout=0)

    @property
    def ident(self) -> int | None:
        return self._pid

    pid = ident

    def join(self, timeout: float | None = None) -> None:
        from .connection import wait

        wait([self.sentinel], timeout=timeout)


def _open_parent_sentinel(pid: int | None) -> int:
    """Return an fd that is readable once our parent has exited.

    A pidfd refers to exactly one process, so it cannot be fooled by pid reuse
    as long as we check, after opening it, that the parent is still ours.
    """
    if pid is not None and hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = None
        if fd is not None:
            if os.getppid() == pid:
                return fd
            os.close(fd)
    # The parent is gone (or there is no pidfd): an fd that is always readable.
    r, w = os.pipe()
    os.close(w)
    return r


_exitcode_names = {-sig: f"-{sig.name}" for sig in signal.Signals}


def _exitcode_name(exitcode: int) -> str:
    return _exitcode_names.get(exitcode, str(exitcode))


_current_process: BaseProcess = _MainProcess()
_parent_process: BaseProcess | None = None
