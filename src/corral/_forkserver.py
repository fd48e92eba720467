"""The forkserver: one single-threaded process that forks children on request.

Started once (spawned) by the first forkserver ``Process.start()``. It listens
on a Unix socket in this process's private (0700) temp directory and accepts a
request only after the client passed an HMAC challenge with a key that the
server received through a pipe at start-up: no other local user can reach the
socket, and no process without the key can make it fork (CVE-2022-42919 was a
forkserver reachable through the abstract socket namespace).

A request is: the handshake, then the file descriptors (the pipe the child
reads its preparation data from, then the fds it inherits) sent with
``SCM_RIGHTS``. The server forks; the child runs ``_spawn._main`` on the pipe.
The server writes the child's pid, and later its exit code, to the request
socket, which is the client's sentinel. The server exits when the process that
started it closes its end of the ``alive`` pipe (exits).
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

from . import _handshake, _spawn, connection, process, reduction, util

__all__ = ("ForkServer", "set_forkserver_preload")

# At most this many fds per request (the data pipe + the inherited ones).
MAXFDS_TO_SEND = 256
_SIGNED = struct.Struct("q")


class ForkServer:
    """The client side: starts the server once and asks it for children."""

    def __init__(self) -> None:
        self._address: str | None = None
        self._alive_w: int | None = None
        self._pid: int | None = None
        self._authkey: bytes | None = None
        self._preload_modules: list[str] = ["__main__"]
        self._lock = threading.Lock()

    def set_forkserver_preload(self, modules_names: Sequence[str]) -> None:
        if not all(isinstance(name, str) for name in modules_names):
            msg = "module_names must be a list of strings"
            raise TypeError(msg)
        self._preload_modules = list(modules_names)

    def get_inherited_fds(self) -> list[int] | None:
        return _inherited_fds

    def connect_to_new_process(self, fds: Sequence[int]) -> tuple[int, int]:
        """Ask the server for a child; return (status fd, data pipe write end).

        The caller writes the preparation data and process object to the data
        pipe; the status fd yields the pid and later the exit code.
        """
        if len(fds) + 1 >= MAXFDS_TO_SEND:
            msg = "too many fds"
            raise ValueError(msg)
        self.ensure_running()
        assert self._address is not None and self._authkey is not None
        child_r, parent_w = os.pipe()
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(None)  # blocking, whatever socket.setdefaulttimeout() says
        try:
            sock.connect(self._address)
            conn = connection.Connection(os.dup(sock.fileno()))
            try:
                _answer_and_send_fds(conn, sock, self._authkey, [child_r, *fds])
            finally:
                conn.close()
            return sock.detach(), parent_w
        except BaseException:
            sock.close()
            os.close(parent_w)
            raise
        finally:
            os.close(child_r)

    def ensure_running(self) -> None:
        """Start the server unless it runs already (restarting it if it died)."""
        with self._lock:
            if self._alive_w is not None:
                pid, _status = os.waitpid(self._pid, os.WNOHANG)  # type: ignore[arg-type]
                if not pid:
                    return
                self._forget()
            self._start()

    def _start(self) -> None:
        address = connection.arbitrary_address("AF_UNIX")
        authkey = os.urandom(32)
        listener = socket.socket(socket.AF_UNIX)
        config_r, config_w = os.pipe()
        alive_r, alive_w = os.pipe()
        try:
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            config = {
                "authkey": authkey,
                "preload": self._preload_modules,
                "prep": _spawn.get_preparation_data("ForkServer"),
            }
            call = f"main({listener.fileno()}, {alive_r}, {config_r})"
            code = (
                f"import sys; sys.path.insert(0, {_spawn._PACKAGE_PARENT!r}); "
                f"from corral._forkserver import main; {call}"
            )
            cmd = [_spawn.get_executable(), *_spawn.interpreter_flags(), "-c", code]
            pid = _spawn.spawn_posix(cmd[0], cmd, [listener.fileno(), alive_r, config_r])
        except BaseException:
            util.close_fds(alive_w, config_w)
            raise
        finally:
            util.close_fds(alive_r, config_r)
            listener.close()
        try:
            with open(config_w, "wb", closefd=True) as pipe:
                pickle.dump(config, pipe)
        except BrokenPipeError:
            pass
        self._address, self._alive_w, self._pid, self._authkey = address, alive_w, pid, authkey

    def _forget(self) -> None:
        if self._alive_w is not None:
            util.close_fds(self._alive_w)
        if self._address is not None:
            try:
                os.unlink(self._address)
            except OSError:
                pass
        self._address = self._alive_w = self._pid = self._authkey = None

    def stop(self) -> None:
        """Stop the server (it exits when its alive pipe closes) and reap it."""
        with self._lock:
            pid = self._pid
            self._forget()
            if pid is not None:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def _after_fork(self) -> None:
        # A forked child must not share (or later wait for) the parent's server.
        if self._alive_w is not None:
            util.close_fds(self._alive_w)
        self._address = self._alive_w = self._pid = self._authkey = None
        self._lock = threading.Lock()


def _answer_and_send_fds(
    conn: connection.Connection, sock: socket.socket, authkey: bytes, fds: list[int]
) -> None:
    """Answer the server's challenge and send the fds without waiting for its verdict.

    The server reads the fds only after it has checked the answer (a refused
    client's fds are dropped unread with the socket), so waiting for
    ``#WELCOME#`` first only cost a round trip per start.

    Raises:
        AuthenticationError: the server refused our answer.
        EOFError: the server closed the connection.
    """
    steps = _handshake.answer_steps(authkey)
    steps.send(None)  # wait for the challenge
    response, _ = steps.send(conn.recv_bytes(_handshake.MAX_FRAME))
    conn.send_bytes(response)
    send_error = None
    try:
        reduction.sendfds(sock, fds)
    except OSError as exc:  # a refusing server may have closed already: say why
        send_error = exc
    try:
        steps.send(conn.recv_bytes(_handshake.MAX_FRAME))  # the verdict
    except StopIteration:
        pass
    if send_error is not None:
        raise send_error


_forkserver = ForkServer()
ensure_running = _forkserver.ensure_running
connect_to_new_process = _forkserver.connect_to_new_process
set_forkserver_preload = _forkserver.set_forkserver_preload
get_inherited_fds = _forkserver.get_inherited_fds
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forkserver._after_fork)

_inherited_fds: list[int] | None = None


# ---------------------------------------------------------------------------
# the server process


def main(listener_fd: int, alive_r: int, config_r: int) -> None:
    """Run the forkserver until the alive pipe closes."""
    with open(config_r, "rb", closefd=True) as pipe:
        config = pickle.load(pipe)
    authkey: bytes = config["authkey"]
    prep = config["prep"]
    without_main = {k: v for k, v in prep.items() if not k.startswith("init_main")}
    process.current_process()._inheriting = True  # type: ignore[attr-defined]
    try:
        if "__main__" in config["preload"]:
            try:
                _spawn.prepare(prep)
            except Exception as exc:
                # The child re-imports __main__ itself and reports the error
                # (e.g. the missing main guard); the server keeps serving.
                util.info("forkserver could not preload __main__: %r", exc)
                _spawn.prepare(without_main)
        else:
            _spawn.prepare(without_main)
        for name in config["preload"]:
            if name != "__main__":
                try:
                    __import__(name)
                except ImportError:
                    pass
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]
    util._close_stdin()

    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    handlers: dict[signal.Signals, Any] = {signal.SIGCHLD: _noop, signal.SIGINT: signal.SIG_IGN}
    old_handlers = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    signal.set_wakeup_fd(sig_w)
    pid_to_status: dict[int, socket.socket] = {}
    listener = socket.socket(socket.AF_UNIX, fileno=listener_fd)
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        selector.register(alive_r, selectors.EVENT_READ)
        selector.register(sig_r, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if alive_r in ready:
                # EOF: the process that started us is gone.
                break
            if sig_r in ready:
                _drain(sig_r)
                _reap(pid_to_status)
            if listener in ready:
                request = _accept_request(listener, authkey)
                if request is None:
                    continue
                status_sock, fds = request
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        util._after_fork_in_child()
                        listener.close()
                        selector.close()
                        status_sock.close()
                        # Siblings' status sockets: a child must hold none of them.
                        for sibling in pid_to_status.values():
                            sibling.close()
                        util.close_fds(alive_r, sig_r, sig_w)
                        signal.set_wakeup_fd(-1)
                        for sig, handler in old_handlers.items():
                            signal.signal(sig, handler)
                        code = _serve_one(fds)
                    except BaseException:
                        import traceback

                        traceback.print_exc()
                    finally:
                        util._flush_std_streams()
                        os._exit(code)
                util.close_fds(*fds)
                try:
                    status_sock.sendall(_SIGNED.pack(pid))
                    pid_to_status[pid] = status_sock
                except OSError:
                    status_sock.close()
    sys.exit(0)


def _noop(*args: Any) -> None:
    pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _reap(pid_to_status: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_sock = pid_to_status.pop(pid, None)
        if status_sock is not None:
            try:
                status_sock.sendall(_SIGNED.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass
            status_sock.close()


def _accept_request(
    listener: socket.socket, authkey: bytes
) -> tuple[socket.socket, list[int]] | None:
    try:
        sock, _ = listener.accept()
    except OSError:
        return None
    sock.settimeout(None)
    # A kernel receive timeout keeps the fd blocking but bounds every read, so
    # a client that goes silent cannot stall this single-threaded server.
    seconds = int(connection.HANDSHAKE_TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))
    try:
        conn = connection.Connection(os.dup(sock.fileno()))
        try:
            _handshake.run_blocking(conn, _handshake.deliver_steps(authkey))
        finally:
            conn.close()
        fds = reduction.recvfds(sock, MAXFDS_TO_SEND + 1)
    except Exception:
        sock.close()
        return None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
    return sock, fds


def _serve_one(fds: list[int]) -> int:
    global _inherited_fds
    child_r, *_inherited_fds = fds
    parent_sentinel = os.dup(child_r)
    return _spawn._main(child_r, parent_sentinel)


def read_signed(fd: int) -> int:
    """Read one status integer written by the server.

    Raises:
        EOFError: the server closed the socket first.
    """
    data = b""
    while len(data) < _SIGNED.size:
        chunk = os.read(fd, _SIGNED.size - len(data))
        if not chunk:
            msg = "unexpected EOF"
            raise EOFError(msg)
        data += chunk
    return _SIGNED.unpack(data)[0]
