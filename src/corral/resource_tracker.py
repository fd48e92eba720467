"""Tracking of named OS resources (semaphores, shared memory) for cleanup.

The stdlib's API names: ``register(name, rtype)``, ``unregister(name, rtype)``,
``ensure_running()``, ``getfd()``. Two layers make sure that no name a process
registered outlives it:

- in the process: whatever is still registered when it exits normally is
  unlinked by its exit sequence;
- outside it: on the first registration a tracker process is started in its
  own session (so a Ctrl-C or a kill of the program's process group does not
  reach it). Registrations are written to it over a pipe; when the pipe's last
  writer has gone (the registering process and the forked children that
  inherited the pipe have all exited, normally or killed by SIGKILL), the
  tracker unlinks what is still registered, says so on stderr (as the stdlib's
  tracker does; only for names it really had to remove, so a process that
  exited normally and cleaned up causes no warning) and exits. Children started by
  spawn or forkserver do not inherit the pipe; they start a tracker of their
  own if they register anything. They do get a duplicate of it for big
  messages only (``message_tracker``): a segment a child hands over must
  outlive the child until it is read.

The tracker is a few lines of plain Python run with ``-I -S``: it imports
nothing of corral (only ``_multiprocessing`` and ``_posixshmem``), so it starts
fast and does not depend on how corral was installed.
"""

from __future__ import annotations

import _multiprocessing
import os
import sys
import threading
from collections.abc import Callable

from . import util

__all__ = ("ensure_running", "getfd", "register", "unregister")


def _unlink_shared_memory(name: str) -> None:
    import _posixshmem

    _posixshmem.shm_unlink(name)


_CLEANUP_FUNCS: dict[str, Callable[[str], None]] = {
    "noop": lambda name: None,
    "semaphore": _multiprocessing.sem_unlink,
    "shared_memory": _unlink_shared_memory,
}

_registered: dict[tuple[str, str], None] = {}
_lock = threading.Lock()


_TRACKER_CODE = r"""
import os, signal, sys, _multiprocessing, _posixshmem
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
unlink = {"semaphore": _multiprocessing.sem_unlink, "shared_memory": _posixshmem.shm_unlink}
fd, held, pending = int(sys.argv[1]), set(), b""
while True:
    data = os.read(fd, 65536)
    if not data:
        break
    *lines, pending = (pending + data).split(b"\n")
    for line in lines:
        op, rtype, name = line.decode().split(" ", 2)
        (held.add if op == "R" else held.discard)((rtype, name))
removed = {}
for rtype, name in held:
    try:
        unlink[rtype](name)
    except Exception:
        continue  # already gone: its owner cleaned up
    removed[rtype] = removed.get(rtype, 0) + 1
for rtype, count in sorted(removed.items()):
    sys.stderr.write(
        f"resource_tracker: There appear to be {count} leaked {rtype} objects to clean up at "
        f"shutdown (their creator was killed, or a big message was never received); "
        f"removed them\n"
    )
"""

_tracker_fd: int | None = None  # the write end of the pipe to this process tree's tracker
_tracker_pid: int | None = None  # the tracker, if this process started it
_tracker_ident: int | None = None  # the pid of the tracker behind _tracker_fd (kept across fork)
# The tracker of the process that started this one by spawn or forkserver
# (write end, pid): big messages are handed to it (``message_tracker``).
_inherited: tuple[int, int] | None = None


def ensure_running() -> None:
    """Start this process's tracker if it has none (registering does it too)."""
    with _lock:
        _start_tracker()


def getfd() -> int | None:
    """The write end of the pipe to the tracker (None until one is running)."""
    return _tracker_fd


def _start_tracker() -> None:
    global _tracker_fd, _tracker_pid, _tracker_ident
    if _tracker_fd is not None:
        return
    read_end, write_end = os.pipe()
    try:
        os.set_inheritable(read_end, True)
        argv = [sys.executable, "-I", "-S", "-c", _TRACKER_CODE, str(read_end)]
        # stdin and stdout from /dev/null; stderr is the caller's, for the one
        # line it writes when it had to remove names a killed process left.
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1)]
        env = dict(os.environ)
        try:
            pid = os.posix_spawn(sys.executable, argv, env, file_actions=quiet, setsid=True)
        except NotImplementedError:  # no POSIX_SPAWN_SETSID: at least its own group
            pid = os.posix_spawn(sys.executable, argv, env, file_actions=quiet, setpgroup=0)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _tracker_fd, _tracker_pid, _tracker_ident = write_end, pid, pid


def _tell_tracker(op: str, name: str, rtype: str, fd: int | None = None) -> None:
    fd = _tracker_fd if fd is None else fd
    if fd is None:
        return
    try:
        os.write(fd, f"{op} {rtype} {name}\n".encode())
    except OSError:
        pass  # the tracker is gone; the exit sequence still unlinks


def hand_over(name: str, rtype: str, tracker_fd: int | None) -> None:
    """Have the tracker behind tracker_fd remove name if still there when its processes end.

    For a name that changes hands between processes (a big queue message: made
    by a producer, unlinked by whichever consumer takes it): unlike
    ``register``, the process that made it does not unlink it at its exit.
    """
    _tell_tracker("R", name, rtype, tracker_fd)


def taken_over(name: str, rtype: str, tracker_fd: int | None) -> None:
    """The name given with ``hand_over`` was unlinked by whoever took it."""
    _tell_tracker("U", name, rtype, tracker_fd)


def message_tracker() -> tuple[int | None, int | None]:
    """(write end, pid) of the tracker that big messages are handed to.

    The program's: the one this process inherited from the process that
    started it (fork, spawn or forkserver), else this process's own (started
    if needed). A child that sends a big message and exits before it is read
    must not take the message with it: a tracker removes what it holds only
    when every process writing to it has ended. (None, None) when no tracker
    can be started; the message is then removed only by its receiver.
    """
    if _inherited is not None:
        return _inherited
    try:
        ensure_running()
    except OSError:
        return None, None
    return _tracker_fd, _tracker_ident


def fd_of(ident: int | None) -> int | None:
    """This process's write end to the tracker whose pid is ident, or None if it has none."""
    if ident is None:
        return None
    if _inherited is not None and _inherited[1] == ident:
        return _inherited[0]
    return _tracker_fd if _tracker_ident == ident else None


def for_child() -> tuple[object, int] | None:
    """What a spawn/forkserver child needs to adopt ``message_tracker()`` (while spawning)."""
    from . import reduction

    fd, ident = message_tracker()
    if fd is None or ident is None:
        return None
    return reduction.DupFd(fd), ident


def adopt(token: object, ident: int) -> None:
    """In a spawn/forkserver child: hand big messages to the parent's tracker (``for_child``)."""
    global _inherited
    fd = token.detach()  # type: ignore[attr-defined]
    os.set_inheritable(fd, False)  # ours, not our own children's
    _inherited = (fd, ident)


def register(name: str, rtype: str) -> None:
    """Make sure ``name`` (of type rtype) is unlinked if still there when this process ends.

    Raises:
        ValueError: an unknown resource type.
    """
    if rtype not in _CLEANUP_FUNCS:
        msg = f"unknown resource type {rtype!r}"
        raise ValueError(msg)
    global _cleanup_pid
    with _lock:
        if _cleanup_pid != os.getpid():
            # A forked child registers its exit cleanup with its first name
            # (the parent's was dropped at the fork): a child that registers
            # nothing, the common case, has nothing to run at exit.
            util.Finalize(None, _cleanup, exitpriority=0)
            _cleanup_pid = os.getpid()
        _registered[(name, rtype)] = None
        if rtype != "noop":
            try:
                _start_tracker()
            except OSError:
                util.debug("could not start the resource tracker; cleanup at exit only")
            _tell_tracker("R", name, rtype)


def unregister(name: str, rtype: str) -> None:
    """Forget ``name``: its owner unlinked it."""
    with _lock:
        _registered.pop((name, rtype), None)
        _tell_tracker("U", name, rtype)


def _cleanup() -> None:
    with _lock:
        leftovers = list(_registered)
        _registered.clear()
    for name, rtype in leftovers:
        try:
            _CLEANUP_FUNCS[rtype](name)
        except OSError:
            pass


def _forget_after_fork() -> None:
    # Resources of the parent are the parent's to clean up; the child cleans
    # up its own (fork also dropped the parent's finalizer, see util). The
    # child keeps the pipe to the tracker: the tracker waits for it as well.
    global _lock, _tracker_pid
    _lock = threading.Lock()
    _registered.clear()
    _tracker_pid = None  # not this child's own child


util.Finalize(None, _cleanup, exitpriority=0)
_cleanup_pid = os.getpid()  # the process whose exit sequence runs _cleanup

os.register_at_fork(after_in_child=_forget_after_fork)
