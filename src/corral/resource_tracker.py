"""Tracking of named OS resources (semaphores, shared memory) for cleanup.

The stdlib's API names: ``register(name, rtype)``, ``unregister(name, rtype)``,
``ensure_running()``, ``getfd()``. This first version tracks names in the
creating process and unlinks whatever is still registered when that process
exits normally. (Issue 4 replaces it with a tracker that also cleans up after
processes that were killed.)
"""

from __future__ import annotations

import _multiprocessing
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


def ensure_running() -> None:
    """Kept for compatibility: tracking needs no helper process in this version."""


def getfd() -> None:
    """Kept for compatibility: there is no tracker pipe in this version."""


def register(name: str, rtype: str) -> None:
    """Remember that ``name`` (of type rtype) must be unlinked if still present at exit."""
    if rtype not in _CLEANUP_FUNCS:
        msg = f"unknown resource type {rtype!r}"
        raise ValueError(msg)
    with _lock:
        _registered[(name, rtype)] = None


def unregister(name: str, rtype: str) -> None:
    """Forget ``name``: its owner unlinked it."""
    with _lock:
        _registered.pop((name, rtype), None)


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
    # up its own (fork also dropped the parent's finalizer, see util).
    global _lock
    _lock = threading.Lock()
    _registered.clear()
    util.Finalize(None, _cleanup, exitpriority=0)


util.Finalize(None, _cleanup, exitpriority=0)
import os  # noqa: E402

os.register_at_fork(after_in_child=_forget_after_fork)
