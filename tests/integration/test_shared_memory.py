"""SharedMemory: the stdlib's API and names, and who unlinks what."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

from corral import shared_memory

pytestmark = pytest.mark.timeout(60)


def _stdlib(code: str, stdin: str = "") -> str:
    """Run ``code`` in a fresh interpreter using the *stdlib* multiprocessing."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_a_stdlib_process_attaches_to_a_corral_segment():
    shm = shared_memory.SharedMemory(create=True, size=64)
    try:
        shm.buf[:5] = b"hello"
        out = _stdlib(f"""
            from multiprocessing import resource_tracker, shared_memory
            shm = shared_memory.SharedMemory({shm.name!r})
            resource_tracker.unregister(shm._name, "shared_memory")  # its 3.11 bug
            print(bytes(shm.buf[:5]).decode())
            shm.buf[:5] = b"HELLO"
            shm.close()
        """)
        assert out == "hello" and bytes(shm.buf[:5]) == b"HELLO"
        assert shm.name.startswith("psm_") and len(shm.name) == 12
    finally:
        shm.close()
        shm.unlink()


def test_corral_attaches_to_a_stdlib_segment():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
                import sys
                from multiprocessing import shared_memory
                shm = shared_memory.SharedMemory(create=True, size=32)
                shm.buf[:3] = b"std"
                print(shm.name, flush=True)
                sys.stdin.readline()
                print(bytes(shm.buf[:3]).decode(), flush=True)
                shm.close()
                shm.unlink()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        name = proc.stdout.readline().strip()
        shm = shared_memory.SharedMemory(name)
        assert bytes(shm.buf[:3]) == b"std" and shm.size >= 32
        shm.buf[:3] = b"COR"
        shm.close()
        out, _ = proc.communicate("go\n", timeout=30)
        assert out.strip() == "COR"
    finally:
        proc.kill()
        proc.wait()


def test_errors_and_pickling():
    with pytest.raises(ValueError):
        shared_memory.SharedMemory(create=True, size=-1)
    with pytest.raises(ValueError):
        shared_memory.SharedMemory(create=True, size=0)
    with pytest.raises(ValueError):
        shared_memory.SharedMemory()
    shm = shared_memory.SharedMemory(create=True, size=10)
    try:
        with pytest.raises(FileExistsError):
            shared_memory.SharedMemory(shm.name, create=True, size=10)
        copy = pickle.loads(pickle.dumps(shm))
        shm.buf[0] = 7
        assert copy.buf[0] == 7 and copy.name == shm.name
        assert repr(copy) == f"SharedMemory({shm.name!r}, size={shm.size})"
        copy.close()
    finally:
        shm.close()
        shm.unlink()
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(shm.name)
    with pytest.raises(FileNotFoundError):
        shm.unlink()


def _create_and_leave(name_out, track):
    shm = shared_memory.SharedMemory(create=True, size=16, track=track)
    name_out.value = shm.name.encode()
    shm.close()


def _attach_and_leave(name):
    shared_memory.SharedMemory(name).close()


def test_only_the_creator_unlinks_at_exit_and_only_when_tracking(ctx):
    name = ctx.Array("c", 32)
    p = ctx.Process(target=_create_and_leave, args=(name, True))
    p.start()
    p.join(30)
    with pytest.raises(FileNotFoundError):  # its creator exited without unlink()
        shared_memory.SharedMemory(name.value.decode())
    p = ctx.Process(target=_create_and_leave, args=(name, False))
    p.start()
    p.join(30)
    untracked = shared_memory.SharedMemory(name.value.decode())  # still there
    try:
        q = ctx.Process(target=_attach_and_leave, args=(untracked.name,))
        q.start()
        q.join(30)
        shared_memory.SharedMemory(untracked.name).close()  # an attacher unlinks nothing
    finally:
        untracked.close()
        untracked.unlink()
