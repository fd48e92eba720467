"""Start a child as a fresh interpreter (``posix_spawn``), fed through a pipe.

The process object is pickled *before* the child exists, with this Popen set
as the spawning popen: file descriptors inside it (connections, sockets) are
listed by ``duplicate_for_child`` and handed to the child under the same
numbers.
"""

from __future__ import annotations

import io
import os
from typing import Any

from . import _spawn, _spawning, reduction, resource_tracker, util
from ._popen_fork import HAVE_PIDFD
from ._popen_fork import Popen as _ForkPopen


class _InheritedFd:
    """A file descriptor the child inherits under the same number."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        return self.fd


class Popen(_ForkPopen):
    """A child started by spawn."""

    method = "spawn"
    DupFd = _InheritedFd

    def __init__(self, process_obj: Any) -> None:
        self._fds: list[int] = []
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _launch(self, process_obj: Any) -> None:
        prep_data = _spawn.get_preparation_data(process_obj._name)
        payload = io.BytesIO()
        _spawning.set_spawning_popen(self)
        try:
            # Big messages the child sends outlive it: they go to our tracker.
            tracker = resource_tracker.for_child()
            if tracker is not None:
                prep_data["message_tracker"] = tracker
            reduction.dump(prep_data, payload)
            reduction.dump(process_obj, payload)
        finally:
            _spawning.set_spawning_popen(None)

        child_r, parent_w = os.pipe()
        passfds = [*self._fds, child_r]
        to_close = [child_r]
        if not HAVE_PIDFD:
            # The child holds exit_w until it exits: that is our sentinel.
            exit_r, exit_w = os.pipe()
            passfds.append(exit_w)
            to_close.append(exit_w)
        try:
            # The child is told how we watch each other: importing _popen_fork
            # there to find out cost ~1 ms of its start-up.
            cmd = _spawn.get_command_line(pipe_handle=child_r, parent_pidfd=int(HAVE_PIDFD))
            self.pid = _spawn.spawn_posix(_spawn.get_executable(), cmd, passfds)
        except BaseException:
            util.close_fds(parent_w, *to_close, *([] if HAVE_PIDFD else [exit_r]))
            raise
        util.close_fds(*to_close)
        try:
            write_all(parent_w, payload.getbuffer())
        except BrokenPipeError:
            pass  # the child died first; its exit code tells why
        if HAVE_PIDFD:
            # The child watches our pid for its parent_process().sentinel.
            os.close(parent_w)
            self.sentinel = os.pidfd_open(self.pid)
            keep = [self.sentinel]
        else:
            # parent_w stays open until we are gone: EOF is the child's sign.
            self.sentinel = exit_r
            keep = [exit_r, parent_w]
        self.finalizer = util.Finalize(self, util.close_fds, keep)


def write_all(fd: int, data: memoryview) -> None:
    """Write all of data to a blocking fd."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]
