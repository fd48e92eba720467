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


ITEMS = [1, 2.5, b"ab", "xyz", None, True, -7, "héllo wörld"]


def test_shareable_list_api():
    sl = shared_memory.ShareableList(ITEMS)
    try:
        assert list(sl) == ITEMS and len(sl) == len(ITEMS)
        assert sl.format.startswith("qd8s8s") and sl[-1] == "héllo wörld"
        sl[0], sl[3], sl[4] = "x", None, 1.25
        assert (sl[0], sl[3], sl[4]) == ("x", None, 1.25)
        assert sl.count(None) == 1 and sl.index(True) == 5
        with pytest.raises(ValueError, match="exceeds available storage"):
            sl[2] = b"far more than eight bytes"
        with pytest.raises(IndexError):
            sl[len(ITEMS)]
        with pytest.raises(ValueError, match="not in this container"):
            sl.index("absent")
        with pytest.raises(TypeError, match="not list"):
            shared_memory.ShareableList([[1]])
        copy = pickle.loads(pickle.dumps(sl))
        assert list(copy) == list(sl) and copy.shm.name == sl.shm.name
        copy.shm.close()
        accents = shared_memory.ShareableList(["ééééé", "encodés"])
        assert list(accents) == ["ééééé", "encodés"]  # the stdlib would cut the first short
        assert accents.format == "16s8s"  # and sizes the second exactly as the stdlib does
        accents.shm.close()
        accents.shm.unlink()
        empty = shared_memory.ShareableList()
        assert list(empty) == []
        empty.shm.close()
        empty.shm.unlink()
    finally:
        sl.shm.close()
        sl.shm.unlink()


def test_shareable_lists_cross_between_corral_and_the_stdlib():
    ours = shared_memory.ShareableList(ITEMS)
    try:
        out = _stdlib(f"""
            from multiprocessing import resource_tracker, shared_memory
            sl = shared_memory.ShareableList(name={ours.shm.name!r})
            resource_tracker.unregister(sl.shm._name, "shared_memory")
            print(list(sl) == {ITEMS!r})
            sl[0] = 42
            sl.shm.close()
        """)
        assert out == "True" and ours[0] == 42
    finally:
        ours.shm.close()
        ours.shm.unlink()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
                import sys
                from multiprocessing import shared_memory
                sl = shared_memory.ShareableList([10, "abc", b"z", None, 3.5, False])
                print(sl.shm.name, flush=True)
                sys.stdin.readline()
                print(list(sl), flush=True)
                sl.shm.close()
                sl.shm.unlink()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        theirs = shared_memory.ShareableList(name=proc.stdout.readline().strip())
        assert list(theirs) == [10, "abc", b"z", None, 3.5, False]
        theirs[1], theirs[2] = "xy", 5
        theirs.shm.close()
        out, _ = proc.communicate("go\n", timeout=30)
        assert out.strip() == "[10, 'xy', 5, None, 3.5, False]"
    finally:
        proc.kill()
        proc.wait()
