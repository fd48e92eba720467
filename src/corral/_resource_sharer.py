"""Hand file descriptors to other processes after they started.

When a connection or socket is pickled outside ``Process.start()`` (sent over
a Pipe or a Queue), the sender keeps a duplicate of its fd here and the pickle
carries ``(address, key)``. The receiver connects to this process's sharer
thread, authenticates with the shared authkey, asks for ``key`` and gets the fd
with ``SCM_RIGHTS``. Each duplicate is handed out once, then closed here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from . import process, reduction, util

__all__ = ("DupFd", "stop")


class DupFd:
    """A picklable token for a duplicate of fd, redeemable once by another process."""

    def __init__(self, fd: int) -> None:
        new_fd = os.dup(fd)

        def send(conn: Any, pid: int) -> None:
            reduction.send_handle(conn, new_fd, pid)

        def close() -> None:
            os.close(new_fd)

        self._id = _resource_sharer.register(send, close)

    def detach(self) -> int:
        """Fetch the fd from the process that pickled it.

        Raises:
            ConnectionError or EOFError: that process is gone or no longer holds it.
        """
        with _ResourceSharer.get_connection(self._id) as conn:
            return reduction.recv_handle(conn)


class _ResourceSharer:
    """The sharer thread of this process and the duplicates it still holds."""

    def __init__(self) -> None:
        self._key = 0
        self._cache: dict[int, tuple[Callable[[Any, int], None], Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._listener: Any = None
        self._address: Any = None
        self._thread: threading.Thread | None = None
        util.register_after_fork(self, _ResourceSharer._after_fork)

    def register(
        self, send: Callable[[Any, int], None], close: Callable[[], None]
    ) -> tuple[Any, int]:
        with self._lock:
            if self._address is None:
                self._start()
            self._key += 1
            self._cache[self._key] = (send, close)
            return self._address, self._key

    @staticmethod
    def get_connection(ident: tuple[Any, int]) -> Any:
        from .connection import Client

        address, key = ident
        conn = Client(address, authkey=process.current_process().authkey)
        conn.send((key, os.getpid()))
        return conn

    def stop(self, timeout: float | None = None) -> None:
        """Stop the sharer thread and close the duplicates nobody fetched."""
        from .connection import Client

        with self._lock:
            address, thread, listener = self._address, self._thread, self._listener
            self._address = self._thread = None
            cache, self._cache = self._cache, {}
        if address is not None:
            with Client(address, authkey=process.current_process().authkey) as conn:
                conn.send(None)
            assert thread is not None
            thread.join(timeout)
            if thread.is_alive():
                util.sub_warning("_ResourceSharer thread did not stop when asked")
            listener.close()
            with self._lock:
                if self._listener is listener:
                    self._listener = None
        for _send, close in cache.values():
            close()

    def _after_fork(self) -> None:
        for _send, close in self._cache.values():
            close()
        self._cache.clear()
        self._lock = threading.Lock()
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self._address = None
        self._thread = None

    def _start(self) -> None:
        from .connection import Listener

        assert self._listener is None, "Already have Listener"
        util.debug("starting listener and thread for sending handles")
        self._listener = Listener(authkey=process.current_process().authkey, backlog=128)
        self._address = self._listener.address
        thread = threading.Thread(target=self._serve, name="corral-resource-sharer", daemon=True)
        thread.start()
        self._thread = thread

    def _serve(self) -> None:
        listener = self._listener
        while True:
            try:
                with listener.accept() as conn:
                    msg = conn.recv()
                    if msg is None:
                        return
                    key, destination_pid = msg
                    with self._lock:
                        send, close = self._cache.pop(key)
                    try:
                        send(conn, destination_pid)
                    finally:
                        close()
            except Exception:
                if listener._socket is None:  # closed under us
                    return
                if not util.is_exiting():
                    import sys

                    sys.excepthook(*sys.exc_info())


_resource_sharer = _ResourceSharer()
stop = _resource_sharer.stop
