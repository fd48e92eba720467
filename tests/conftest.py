"""Shared fixtures: start-method parametrisation, leak checks, fresh-interpreter runs.

Every test is checked for leaks by ``no_leaks`` (autouse): after the test, no
child process, thread, file descriptor or /dev/shm entry it created may remain.
Long-lived helpers that corral keeps on purpose (the forkserver process and its
fd, the resource-sharer thread and its listener, the heap's first arena, the
resource tracker and its pipe) are not counted.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import corral
from corral import _forkserver, _resource_sharer, resource_tracker

START_METHODS = corral.get_all_start_methods()


def _private_dev_shm() -> bool:
    """Give this test run a /dev/shm of its own: a tmpfs, in a mount namespace of its own.

    The machine may be shared with other programs (other test runs among them) that
    create and remove /dev/shm entries while a test runs; in a private /dev/shm every
    entry is made by this process or its children, so the leak check below cannot
    blame a test for someone else's segment. Needs CAP_SYS_ADMIN and a single-threaded
    process (unshare(2) refuses CLONE_NEWNS once threads share the filesystem
    context); otherwise the run keeps the machine's /dev/shm and ``_not_foreign``
    tells other programs' entries apart as well as it can.
    """
    if os.environ.get("CORRAL_TESTS_SHARED_DEV_SHM") or threading.active_count() > 1:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 0x4000, 0x40000
    if libc.unshare(clone_newns) != 0:
        return False
    # Private propagation first, so the new mount does not leak to the host.
    if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
        return False
    return libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", 0, b"mode=1777") == 0


PRIVATE_DEV_SHM = os.path.isdir("/dev/shm") and _private_dev_shm()

# The shared-memory heap keeps its first arena (a memfd, plus the duplicate fd
# that mmap holds) for the life of the process, as the stdlib's heap does.
# Make it now, so that it predates every test's fd snapshot.
_HEAP_WARM_UP = corral.RawValue("i", 0)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what exists once the tests are collected: the leak check's gc runs stay short.

    Modules, test items and their fixtures' definitions live as long as the run;
    frozen, they are no longer traversed by each of the two full collections a test
    costs (70 ms each on an idle machine, most of a unit test's time). Objects that
    tests create are collected as before.
    """
    gc.freeze()


@pytest.fixture(params=START_METHODS)
def ctx(request: pytest.FixtureRequest) -> corral.context.BaseContext:
    """A context for each start method (fork, spawn, forkserver)."""
    return corral.get_context(request.param)


def _helper_fds() -> set[int]:
    fds = set()
    if _forkserver._forkserver._alive_w is not None:
        fds.add(_forkserver._forkserver._alive_w)
    listener = _resource_sharer._resource_sharer._listener
    if listener is not None and listener._socket is not None:
        fds.add(listener._socket.fileno())
    if resource_tracker._tracker_fd is not None:
        fds.add(resource_tracker._tracker_fd)
    return fds


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")} - _helper_fds()


def _helper_pids() -> set[int]:
    pids = {_forkserver._forkserver._pid, resource_tracker._tracker_pid}
    return {pid for pid in pids if pid}


def _shm_entries() -> set[str]:
    """/dev/shm entries, minus corral ones made by live processes outside this tree.

    corral names carry the creator's pid (``sem.corral-<pid>-...``): an entry of
    a live process that is neither this one nor a descendant belongs to some
    other program running beside the tests.
    """
    try:
        names = set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()
    kept = set()
    mine: set[int] | None = None  # looked up only when needed: it reads all of /proc
    for name in names:
        match = re.match(r"(?:sem\.)?corral-(\d+)-", name)
        if match:
            pid = int(match.group(1))
            if mine is None:
                mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
            if pid not in mine and psutil.pid_exists(pid):
                continue
        kept.add(name)
    return kept


def _not_foreign(names: set[str]) -> set[str]:
    """Of new /dev/shm names, those that may be this test's: not another program's.

    The machine is shared: other programs (other test runs among them) create and
    remove entries while a test runs. Two kinds are theirs, not ours: an entry that
    goes away by itself within a moment (glibc's sem_open makes a ``sem.XXXXXX``
    temporary and renames it; another test run unlinks its segment), and one that a
    live process outside this process tree has mapped or open. A leak of ours is
    neither: every process this test started is gone, and nothing removes it.
    """
    deadline = time.monotonic() + 1.0
    while names and time.monotonic() < deadline:
        names = {name for name in names if os.path.exists(f"/dev/shm/{name}")}
        if names:
            threading.Event().wait(0.05)  # no event announces another program's unlink
    if not names:
        return names
    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    paths = {f"/dev/shm/{name}": name for name in names}
    foreign = set()
    for pid in psutil.pids():
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/maps") as maps:
                used = {line.split(maxsplit=5)[-1].strip() for line in maps if "/dev/shm/" in line}
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to look into
        for fd in fds:
            try:
                used.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
        foreign |= {paths[path] for path in used.intersection(paths)}
    return names - foreign


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name != "corral-resource-sharer"}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a process, thread, fd or /dev/shm entry behind."""
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    threads_before = _threads()
    gc.collect()
    fds_before = _open_fds()
    shm_before = _shm_entries()
    yield
    helpers = _helper_pids()
    new_children = [
        p
        for p in me.children(recursive=True)
        if p.pid not in children_before and p.pid not in helpers
    ]
    # Give exiting children a bounded moment (an event wait, not a sleep).
    _gone, alive = psutil.wait_procs(new_children, timeout=5)
    for proc in alive:
        proc.kill()
    corral.active_children()  # reap what the test started and joined late
    assert not alive, f"test left processes behind: {alive}"
    for thread in _threads() - threads_before:
        thread.join(timeout=5)
    leaked_threads = [t for t in _threads() - threads_before if t.is_alive()]
    assert not leaked_threads, f"test left threads behind: {leaked_threads}"
    gc.collect()
    leaked_fds = _open_fds() - fds_before
    assert not leaked_fds, f"test left fds open: {_describe_fds(leaked_fds)}"
    leaked_shm = _not_foreign(_shm_entries() - shm_before)
    assert not leaked_shm, f"test left /dev/shm entries: {leaked_shm}"


def _describe_fds(fds: set[int]) -> dict[int, str]:
    out = {}
    for fd in fds:
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            out[fd] = "?"
    return out


def run_script(
    tmp_path: Path,
    code: str,
    *args: str,
    timeout: float = 60,
    module: str | None = None,
    cwd: Path | None = None,
    flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run code as a script (or as ``-m module``) in a fresh interpreter, with a hard timeout.

    On timeout the whole process group gets SIGTERM, then SIGKILL, and the test fails.
    """
    script = tmp_path / ((module or "script") + ".py")
    script.write_text(textwrap.dedent(code))
    cmd = [sys.executable, *flags]
    cmd += ["-m", module] if module else [str(script)]
    proc = subprocess.Popen(
        cmd + list(args),
        cwd=cwd or tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"script timed out after {timeout}s\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue
