"""``_segment``: one big message per shared-memory segment (issue 14), in one process."""

from __future__ import annotations

import os
import pickle

import pytest

from corral import _segment, reduction, resource_tracker
from corral.errors import MessageLostError, ProcessError

np = pytest.importorskip("numpy", reason="the segment tests send NumPy arrays")


def _round_trip(obj, min_size=1 << 16):
    data, buffers = reduction.dumps_with_buffers(obj, min_size)
    fd, _ = resource_tracker.message_tracker()
    name = _segment.write("corral-q-", data, buffers, fd)
    assert os.path.exists("/dev/shm" + name)
    got = _segment.read(name, fd)
    assert not os.path.exists("/dev/shm" + name)  # unlinked as soon as it is opened
    return got, len(buffers)


def test_arrays_are_64_byte_aligned_views_and_the_rest_keeps_its_type():
    sent = [np.arange(1 << 15), b"x" * 7, np.ones(1 << 17, dtype=np.uint8)[1:], "tail"]
    got, count = _round_trip(sent)
    assert count == 2
    assert np.array_equal(got[0], sent[0]) and np.array_equal(got[2], sent[2])
    assert got[1:4:2] == [b"x" * 7, "tail"]
    for array in (got[0], got[2]):
        assert array.__array_interface__["data"][0] % 64 == 0
        assert array.flags.writeable


def test_bare_picklebuffers_arrive_as_bytes_and_bytearray():
    got, count = _round_trip(
        [pickle.PickleBuffer(b"r" * 100_000), pickle.PickleBuffer(bytearray(b"w" * 100_000))]
    )
    assert count == 2
    assert type(got[0]) is bytes and got[0] == b"r" * 100_000
    assert type(got[1]) is bytearray and got[1] == b"w" * 100_000


def test_a_missing_segment_is_a_message_lost_error():
    with pytest.raises(MessageLostError, match="is gone: the program that sent it ended") as info:
        _segment.read("/corral-q-0000000000000000", None)
    assert isinstance(info.value, ProcessError) and isinstance(info.value, EOFError)


def test_discard_removes_an_undelivered_segment():
    data, buffers = reduction.dumps_with_buffers(np.ones(1 << 14), 1 << 16)
    fd, _ = resource_tracker.message_tracker()
    name = _segment.write("corral-q-", data, buffers, fd)
    _segment.discard(name, fd)
    assert not os.path.exists("/dev/shm" + name)
    _segment.discard(name, fd)  # twice: nothing to do
