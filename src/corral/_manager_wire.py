"""What a manager and its clients say to each other, and how it is encoded.

Every message is one frame on a ``Connection``: a request from a client, then
one reply from the server. Both are tuples whose first item is their kind.

Requests::

    (CALL, ident, method, args, kwds)   call a method of a shared object
    (CREATE, typeid, args, kwds)        make a new shared object -> (ident, exposed)
    (INCREF, ident) / (DECREF, [ident]) take or drop references
    (METHODS, ident)                    the exposed methods (for AutoProxy)
    (COUNT,) / (INFO,)                  number of shared objects / a description
    (PING,)                             check the server answers (``connect()``)
    (SHUTDOWN,)                         stop the server after replying

Replies::

    (OK, value)                         the result
    (PROXY, typeid, ident, exposed)     the result is a new shared object; the
                                        reply carries one reference for the proxy
    (RAISE, exception, traceback_text)  the method raised
    (ERROR, text)                       the request itself failed (RemoteError)

The serializer is ``'pickle'`` (corral's pickler: lambdas and closures work)
or ``'xmlrpclib'`` (XML-RPC marshalling: plain data only; exceptions travel as
text, as ERROR replies).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import Any

from . import reduction

CALL = "call"
CREATE = "create"
INCREF = "incref"
DECREF = "decref"
METHODS = "methods"
COUNT = "count"
INFO = "info"
PING = "ping"
SHUTDOWN = "shutdown"

OK = "ok"
PROXY = "proxy"
RAISE = "raise"
ERROR = "error"

SERIALIZERS = ("pickle", "xmlrpclib")


class Codec:
    """Turns messages into frames and back, for one serializer."""

    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]

    def __init__(self, name: str) -> None:
        if name not in SERIALIZERS:
            msg = f"unknown serializer {name!r}: use 'pickle' or 'xmlrpclib'"
            raise ValueError(msg)
        self.name = name
        self.can_send_exceptions = name == "pickle"
        if name == "pickle":
            self.dumps = reduction._dumps
            self.loads = reduction._loads
        else:
            self.dumps = _xml_dumps
            self.loads = _xml_loads


def _xml_dumps(message: Any) -> bytes:
    import xmlrpc.client  # only with this serializer: the module costs ~40 ms to import

    return xmlrpc.client.dumps((message,), allow_none=True).encode("utf-8")


def _xml_loads(data: bytes) -> Any:
    import xmlrpc.client

    params, _ = xmlrpc.client.loads(data.decode("utf-8"), use_builtin_types=True)
    return params[0]


_codecs: dict[str, Codec] = {}


def codec(name: str) -> Codec:
    """The codec of serializer ``name``.

    Raises:
        ValueError: name is not 'pickle' or 'xmlrpclib'.
    """
    found = _codecs.get(name)
    if found is None:
        found = _codecs[name] = Codec(name)
    return found


# -- waiting for a reply (or the next request) without falling asleep ------------------

#: Longest busy-poll before a blocking read, in seconds. A blocked reader is
#: woken by the other CPU in ~20-40 us; a reply usually comes sooner than that.
MAX_SPIN = 100e-6
_MIN_SPIN = 5e-6
_SPIN_OK = (os.cpu_count() or 1) > 1  # one CPU: spinning only delays the other side


class SpinWait:
    """Busy-polls one connection for a short, adaptive while before it blocks.

    The budget doubles after a poll that saw data in time and halves after one
    that did not (down to a floor), so a peer that answers fast is met awake
    and a slow one costs little CPU.
    """

    __slots__ = ("_budget", "_poll")

    def __init__(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        self._poll = poller.poll
        self._budget = MAX_SPIN / 2

    def wait(self, _clock: Callable[[], float] = time.perf_counter) -> None:
        """Return once the connection is readable or the budget is spent."""
        if not _SPIN_OK:
            return
        poll = self._poll
        if poll(0):
            return
        deadline = _clock() + self._budget
        while _clock() < deadline:
            if poll(0):
                self._budget = min(MAX_SPIN, self._budget * 2)
                return
        self._budget = max(_MIN_SPIN, self._budget / 2)
