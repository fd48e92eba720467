"""Connections between processes: ``Pipe``, ``Listener``, ``Client``, ``wait``.

The stdlib's ``multiprocessing.connection``, name for name. The machinery lives
in ``_wire.py`` (Connection, Pipe, wait: framing and I/O), ``_listener.py``
(Listener, Client, addresses) and ``_handshake.py`` (the HMAC handshake).
"""

from __future__ import annotations

from . import _handshake
from ._listener import HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT
from ._listener import (
    Client,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from ._listener import address_type as address_type
from ._listener import arbitrary_address as arbitrary_address
from ._listener import default_family as default_family
from ._listener import families as families
from ._wire import Connection, Pipe, wait
from .errors import AuthenticationError, BufferTooShort

__all__ = (
    "AuthenticationError",
    "BufferTooShort",
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "answer_challenge",
    "deliver_challenge",
    "wait",
)

BUFSIZE = 8192
# The handshake's constants, under the stdlib's names.
CHALLENGE = _handshake.CHALLENGE
WELCOME = _handshake.WELCOME
FAILURE = _handshake.FAILURE
MESSAGE_LENGTH = _handshake.MESSAGE_LENGTH
