"""Start a child through the forkserver (see ``_forkserver``).

The child is the server's child, not ours: its pid and exit code arrive on the
request socket, which is therefore the sentinel. File descriptors pickled with
the process object are sent along with the request and found in the child by
their index (``_forkserver._inherited_fds``).
"""

from __future__ import annotations

import io
import os
from typing import Any

from . import _forkserver, _spawn, _spawning, reduction, resource_tracker, util
from ._popen_fork import Popen as _ForkPopen
from ._popen_spawn import write_all


class _ForwardedFd:
    """The index of an fd sent to the child along with the fork request."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        return _forkserver._inherited_fds[self.index]  # type: ignore[index]


class Popen(_ForkPopen):
    """A child started by the forkserver."""

    method = "forkserver"
    DupFd = _ForwardedFd

    def __init__(self, process_obj: Any) -> None:
        self._fds: list[int] = []
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

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
        self.sentinel, data_w = _forkserver.connect_to_new_process(self._fds)
        # data_w stays open while this Popen lives: its EOF tells the child
        # that we are gone (parent_process().sentinel).
        self.finalizer = util.Finalize(self, util.close_fds, (self.sentinel, data_w))
        try:
            write_all(data_w, payload.getbuffer())
        except BrokenPipeError:
            pass
        self.pid = _forkserver.read_signed(self.sentinel)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is not None:
            return self.returncode
        from .connection import wait

        timeout = 0 if flag == os.WNOHANG else None
        try:
            if not wait([self.sentinel], timeout):  # blocking: outside the lock
                return None
        except (OSError, ValueError):  # released by the thread that read the status
            pass
        with self._reap_lock:  # one thread reads the status; the others see it
            if self.returncode is None:
                try:
                    self.returncode = _forkserver.read_signed(self.sentinel)
                except (OSError, EOFError):
                    # The server died without reporting: the child's fate is unknown.
                    self.returncode = 255
                self._reaped()
        return self.returncode
