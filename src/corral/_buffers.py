"""Receive a large message straight into the ``bytes`` object that is returned.

``recv_bytes`` must return ``bytes``, which Python cannot fill in place. On
CPython a fresh, uninitialised ``bytes`` object is made with
``PyBytes_FromStringAndSize(NULL, n)`` and written through a ctypes view of its
storage *before anyone else holds a reference to it* (CPython's own readers do
the same in C). The kernel then copies a 64 MiB message once, into its final
place, instead of into a temporary buffer that is copied again. Elsewhere a
bytearray is filled and copied.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ("new_bytes",)

_CPYTHON = sys.implementation.name == "cpython"
if _CPYTHON:
    _from_size = ctypes.pythonapi.PyBytes_FromStringAndSize
    _from_size.restype = ctypes.py_object
    _from_size.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    # ob_sval: where a bytes object's data starts (its fixed size minus the NUL byte).
    _DATA_OFFSET = sys.getsizeof(b"") - 1


def new_bytes(size: int) -> tuple[bytes | bytearray, memoryview]:
    """Return (an object of ``size`` bytes, a writable view of its storage).

    Fill the view completely, then drop it, before the object is handed out.
    On CPython the object is ``bytes``; elsewhere it is a ``bytearray``.
    """
    if _CPYTHON and size > 0:
        data = _from_size(None, size)
        storage = (ctypes.c_char * size).from_address(id(data) + _DATA_OFFSET)
        return data, memoryview(storage).cast("B")
    data = bytearray(size)
    return data, memoryview(data)
