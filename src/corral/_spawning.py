"""The process object being pickled to start a child, seen by reducers.

While a Popen pickles the process object for its child (spawn, forkserver), it
registers itself here for the calling thread. Reducers of objects that can only
cross to a child at its start (locks, queues, shared ctypes, heap blocks) ask
``get_spawning_popen()`` whether they are being pickled for that, and call
``assert_spawning`` to refuse any other pickling. This is the ground floor of
``corral``: it imports nothing of it, so ``reduction`` and every module above it
can use it without an import cycle. ``corral.context`` re-exports the three
functions where the stdlib has them.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    from typing import Any

__all__ = ("assert_spawning", "get_spawning_popen", "set_spawning_popen")

_tls = threading.local()


def get_spawning_popen() -> Any:
    """The Popen pickling a process object in this thread, or None."""
    return getattr(_tls, "spawning_popen", None)


def set_spawning_popen(popen: Any) -> None:
    """Register (or with None, clear) the Popen pickling a process object in this thread."""
    _tls.spawning_popen = popen


def assert_spawning(obj: object) -> None:
    """Raise unless obj is being pickled to start a child process.

    Raises:
        RuntimeError: obj may only be shared by passing it to a child at start.
    """
    if get_spawning_popen() is None:
        msg = (
            f"{type(obj).__name__} objects should only be shared between "
            "processes through inheritance"
        )
        raise RuntimeError(msg)
