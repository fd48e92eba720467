"""``Listener``, ``Client`` and ``Pipe`` between threads, over ``queue.Queue``."""

from __future__ import annotations

from queue import Queue
from typing import Any

__all__ = ("Client", "Listener", "Pipe")

families = [None]


class Listener:
    """Accepts connections from ``Client`` in the same process."""

    def __init__(self, address: Any = None, family: Any = None, backlog: int = 1) -> None:
        self._backlog_queue: Queue[tuple[Queue[Any], Queue[Any]]] | None = Queue(backlog)

    def accept(self) -> Connection:
        """Wait for a client and return the connection to it."""
        if self._backlog_queue is None:
            msg = "listener is closed"
            raise OSError(msg)
        return Connection(*self._backlog_queue.get())

    def close(self) -> None:
        self._backlog_queue = None

    @property
    def address(self) -> Queue[Any] | None:
        return self._backlog_queue

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def Client(address: Queue[Any]) -> Connection:
    """Connect to a ``Listener`` (whose ``address`` is its queue)."""
    _in: Queue[Any] = Queue()
    _out: Queue[Any] = Queue()
    address.put((_out, _in))
    return Connection(_in, _out)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Two connected ends (both directions share one pair of queues)."""
    a: Queue[Any] = Queue()
    b: Queue[Any] = Queue()
    return Connection(a, b), Connection(b, a)


class Connection:
    """One end: ``send``/``recv`` move objects (not copies) through queues."""

    def __init__(self, _in: Queue[Any], _out: Queue[Any]) -> None:
        self._out = _out
        self._in = _in
        self.send = self.send_bytes = _out.put
        self.recv = self.recv_bytes = _in.get

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if an object is waiting (waits up to timeout seconds)."""
        if self._in.qsize() > 0:
            return True
        if timeout is not None and timeout <= 0.0:
            return False
        with self._in.not_empty:
            # The predicate runs with the queue's lock held: qsize() would take it again.
            self._in.not_empty.wait_for(lambda: len(self._in.queue) > 0, timeout)
        return self._in.qsize() > 0

    def close(self) -> None:
        pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
