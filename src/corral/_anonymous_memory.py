"""Shared memory with no name: a descriptor, freed with its last fd and mapping.

``heap`` (the arenas of shared ctypes objects) and ``_transfer`` (pool
segments for big buffers) both need memory that other processes can map once
they hold the descriptor (inherited, or sent as ``SCM_RIGHTS``), and that no
crash can leave behind, because nothing names it.
"""

from __future__ import annotations

import os

__all__ = ("anonymous_fd",)


def anonymous_fd(size: int, tag: str) -> int:
    """A close-on-exec descriptor of ``size`` bytes of fresh shared memory with no name.

    ``tag`` names it in ``/proc/PID/fd`` (Linux ``memfd_create``); elsewhere
    (macOS) it is a POSIX shared-memory object unlinked at once.

    Raises:
        OSError: the memory cannot be had (too many files, no space).
    """
    if hasattr(os, "memfd_create"):
        fd: int = os.memfd_create(tag, os.MFD_CLOEXEC)
    else:
        import _posixshmem
        import secrets

        name = f"/crl-{secrets.token_hex(8)}"
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        _posixshmem.shm_unlink(name)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd
