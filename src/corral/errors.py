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
    │   └── AuthenticationError       the HMAC handshake failed or was malformed
    └── pickle.PicklingError
        └── SerializationError        (also a TypeError) an object cannot be sent
                                      to another process; names the object
"""

from __future__ import annotations

import pickle

__all__ = (
    "AuthenticationError",
    "BufferTooShort",
    "ProcessError",
    "SerializationError",
    "TimeoutError",
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


class SerializationError(pickle.PicklingError, TypeError):
    """An object cannot be pickled to be sent to another process.

    The message names the object that failed (for example
    ``args[1].handle -> <_thread.lock object ...>``) and the original error is
    chained as ``__cause__``. It is both a ``pickle.PicklingError`` and a
    ``TypeError`` so that code written against either stdlib behaviour catches it.
    Fix: pass a picklable object (plain data, a module-level function), or
    create the resource inside the worker.
    """
