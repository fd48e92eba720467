"""Big messages in shared memory leave nothing behind (issue 14).

A message with large buffers travels in a /dev/shm segment of its own. Whatever
happens to its sender or receiver (SIGKILLed while writing it, while reading
it, never read at all), no segment outlives the program: the resource tracker
removes the ones nobody opened once every process of the program has ended.
And a message that was fully sent is not lost. Each scenario runs in a fresh
interpreter in its own session, with a hard timeout.
"""

from __future__ import annotations

import os

import psutil
import pytest

from tests.robustness.scenario import Scenario

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm to look into"),
]
np = pytest.importorskip("numpy", reason="the scenarios send NumPy arrays")

METHODS = ["fork", "spawn", "forkserver"]

CHANNELS = """
import numpy as np
from corral import _segment, resource_tracker

BIG = 4 << 20

def big(seed):
    return np.full(BIG // 8, seed, dtype=np.float64)

def channel(ctx, kind):
    # (sending end, receiving end) of a Queue or a one-way Pipe
    if kind == "Queue":
        q = ctx.Queue()
        return q, q
    r, w = ctx.Pipe(duplex=False)
    return w, r

def send(end, obj):
    (end.put if hasattr(end, "put") else end.send)(obj)

def receive(end):
    return end.get(timeout=30) if hasattr(end, "get") else end.recv()

def segments():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(("corral-q-", "corral-c-")))

def announce_tracker():
    fd, pid = resource_tracker.message_tracker()
    say("tracker", pid)
"""

SENDER_KILLED_WHILE_WRITING = """
def send_two(end, writing):
    send(end, big(1))  # sent whole: must arrive
    def write_half_and_wait(fd, pieces):
        os.write(fd, b"the first bytes")
        writing.set()
        threading.Event().wait(60)  # SIGKILLed here
    _segment._write_all = write_half_and_wait
    send(end, big(2))

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    announce_tracker()
    writing = ctx.Event()
    tx, rx = channel(ctx, sys.argv[2])
    p = ctx.Process(target=send_two, args=(tx, writing))
    p.start()
    first = receive(rx)
    say("first", bool((first == 1).all()))
    assert writing.wait(30)
    say("half-written", *segments())
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    say("exitcode", p.exitcode)
"""


def _run(tmp_path, body: str, *args: str) -> tuple[dict[str, list[str]], str]:
    """Run a scenario; wait for its tracker to end; return its lines by first word, and stderr."""
    before = _segments()
    scenario = Scenario(tmp_path, CHANNELS + body, *args)
    status, out, err = scenario.finish(timeout=90)
    assert status == 0, err
    lines = {}
    for line in out.splitlines():
        word, *rest = line.split()
        lines[word] = rest
    try:
        # The tracker is in a session of its own: it outlives the scenario, cleans up, exits.
        psutil.Process(int(lines["tracker"][0])).wait(30)
    except psutil.NoSuchProcess:
        pass
    assert _segments() - before == set(), "segments left in /dev/shm"
    return lines, err


def _segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(("corral-q-", "corral-c-"))}


@pytest.mark.parametrize("kind", ["Queue", "Pipe"])
@pytest.mark.parametrize("method", METHODS)
def test_a_sender_killed_while_writing_leaves_nothing_and_loses_nothing_sent(
    tmp_path, method, kind
):
    lines, _err = _run(tmp_path, SENDER_KILLED_WHILE_WRITING, method, kind)
    assert lines["first"] == ["True"]
    assert len(lines["half-written"]) == 1  # the segment existed when it was killed
    assert lines["exitcode"] == ["-9"]


RECEIVER_KILLED_WHILE_READING = """
def receive_and_be_killed(end, reading):
    def announce_and_wait(*args):
        reading.set()
        threading.Event().wait(60)  # SIGKILLed here, the frame taken, the segment not opened
    _segment.read = announce_and_wait
    receive(end)

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    announce_tracker()
    reading = ctx.Event()
    tx, rx = channel(ctx, sys.argv[2])
    p = ctx.Process(target=receive_and_be_killed, args=(rx, reading))
    p.start()
    send(tx, big(1))
    assert reading.wait(30)
    say("reading", *segments())
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    send(tx, big(2))  # the channel still works
    say("after", bool((receive(rx) == 2).all()))
"""


@pytest.mark.parametrize("kind", ["Queue", "Pipe"])
@pytest.mark.parametrize("method", METHODS)
def test_a_receiver_killed_while_reading_leaves_nothing(tmp_path, method, kind):
    lines, _err = _run(tmp_path, RECEIVER_KILLED_WHILE_READING, method, kind)
    assert len(lines["reading"]) == 1
    assert lines["after"] == ["True"]


NEVER_RECEIVED = """
def send_and_exit(tx):
    send(tx, big(3))

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    announce_tracker()
    unread = [channel(ctx, kind) for kind in ("Queue", "Pipe", "Queue", "Pipe")]
    send(unread[0][0], big(1))  # from this process
    send(unread[1][0], big(2))
    for tx, _rx in unread[2:]:  # from a child that exits at once
        p = ctx.Process(target=send_and_exit, args=(tx,))
        p.start()
        p.join()
        assert p.exitcode == 0
    say("unread", *segments())
"""


@pytest.mark.parametrize("method", METHODS)
def test_messages_never_received_are_removed_when_the_program_ends(tmp_path, method):
    lines, err = _run(tmp_path, NEVER_RECEIVED, method)
    assert len(lines["unread"]) == 4  # all still there while the program lived
    assert "4 leaked shared_memory objects" in err


SENT_BY_A_CHILD_THAT_EXITED = """
import select

def send_and_exit(tx):
    send(tx, big(5))
    with open("tracker", "w") as f:  # where the message was handed
        f.write(str(resource_tracker.message_tracker()[1]))

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    tx, rx = channel(ctx, sys.argv[2])  # the first thing this program makes
    p = ctx.Process(target=send_and_exit, args=(tx,))
    p.start()
    p.join()  # gone before its message is read
    say("exitcode", p.exitcode)
    with open("tracker") as f:
        tracker = int(f.read())
    if resource_tracker.fd_of(tracker) is None:  # not ours: it may end without us
        try:
            # Read only once the tracker the child used has ended.
            select.select([os.pidfd_open(tracker)], [], [], 10)
        except ProcessLookupError:
            pass
    say("got", bool((receive(rx) == 5).all()))
    announce_tracker()
"""


@pytest.mark.parametrize("kind", ["Queue", "Pipe"])
@pytest.mark.parametrize("method", METHODS)
def test_a_message_outlives_the_child_that_sent_it_in_a_fresh_program(tmp_path, method, kind):
    """No tracker runs before the channel is made: the child's message must still survive it."""
    lines, err = _run(tmp_path, SENT_BY_A_CHILD_THAT_EXITED, method, kind)
    assert lines["exitcode"] == ["0"]
    assert lines["got"] == ["True"], err
    assert "leaked" not in err
