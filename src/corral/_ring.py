"""The message ring under corral's queues: pickled messages in shared memory.

A ``Ring`` is a circular buffer in an anonymous shared-memory arena
(``corral.heap.Arena``: a memfd on Linux) plus a few semaphores. Every process
that has the queue maps the same bytes; putting a message copies it in,
getting one copies it out. While both sides are busy no system call is made at
all: the semaphores are only slept on when a consumer finds the ring empty or
a producer finds it full.

Layout (offsets in bytes; one cache line per side)::

    0    powner  i32  pid of the producer holding the producer lock, 0 if none
    4    wwait   u32  producers asleep on ``writable``
    8    tail    u64  bytes ever committed
    16   nput    u64  messages ever accepted
    64   cowner  i32  pid of the consumer holding the consumer lock, 0 if none
    68   rwait   u32  consumers asleep on ``readable``
    72   head    u64  bytes ever consumed
    80   nget    u64  messages ever taken
    88   jwait   u32  processes asleep in ``JoinableQueue.join``
    96   ndone   u64  messages marked ``task_done`` (joinable queues)
    4096 data    ``capacity`` bytes of frames

A frame is a u32 length and that many bytes, padded to 8. ``_SKIP`` in the
length means "wrap to the start". A message larger than ``capacity // 4``, or
with buffers of that size or more kept out of its pickle (NumPy arrays...),
travels out of band: it is written to a POSIX shared-memory segment of its own
(``_segment``: the consumer maps it and gets the arrays as views, no copy) and
the frame holds only its name, with ``_OUT_OF_BAND`` set in the length.

Two locks: producers take the producer lock and write only the first line,
consumers the consumer lock and the second; each reads the other side's
counters without its lock. A stale read is always on the safe side (fewer
bytes or messages than there are, less room than there is), and on x86-64,
whose stores become visible in program order, a frame's bytes are visible
before the ``tail`` that publishes them. On other CPUs the two locks are one
semaphore (and one owner slot), so nothing is read without it. Each process
keeps its last look at the other side's counters and reads that side's line
again only when they show no data (no room): every read of a line the other
CPU has just written is a cache miss. With two
locks a producer and a consumer never wait for each other: with one, they
collided on nearly every message (0.5-0.6M msgs/s against 0.75-0.9M).

Each lock is a semaphore whose holder writes its pid in its owner slot right
after taking it and clears it just before giving it back. A process that has
waited ``_PROBE`` seconds for a lock looks at the slot: if it names a dead
process (or a zombie), or stays 0 over two probes while the lock is held, the
holder was killed with the lock, and the waiter takes it over (under a third
semaphore, ``repair``, so that only one waiter does). The state the dead
holder left is consistent by construction: a producer writes its frame beyond
``tail`` and publishes it by storing ``tail`` and ``nput`` last, in one 16-byte
write; a consumer copies the frame out and then stores ``head`` and ``nget``
the same way. A producer killed before its store loses the message it was
putting; a consumer killed after its store loses the message it was getting;
every other message is still delivered. Header fields are stored by slice
assignment of packed bytes (one ``memcpy``, whose stores a kill cannot split),
never with ``struct.pack_into``, which zero-fills its target before packing: a
process killed in between left ``tail`` at 0 (found by the kill tests under load).

Sleepers count themselves in their own side's line (``rwait``, ``wwait``,
``jwait``), check once more, and sleep; a waker that sees a count and a
semaphore at zero posts it, after giving back its lock (a semaphore operation
is a full memory barrier, so either the sleeper sees the waker's data or the
waker sees the sleeper's count). A consumer that takes a message and sees more
data and other sleepers wakes the next one. Consumers wake a producer sleeping
for room only once half the ring is free (or a slot under ``maxsize`` frees),
so a producer that is ahead refills the ring in bulk. Sleeps last at most
``_PROBE`` seconds, so a wake-up lost with a killed process costs a waiter
that long, never forever.
"""

from __future__ import annotations

import os
import platform
import struct
import time
from typing import Any

from . import _segment, reduction, resource_tracker, util
from ._lifeline import is_dead as _is_dead
from .heap import Arena
from .synchronize import SEM_VALUE_MAX

__all__ = ("Ring",)

_PSIDE = struct.Struct("iIQQ")  # powner, wwait, tail, nput; at 64: cowner, rwait, head, nget
_U32 = struct.Struct("I")
_U64 = struct.Struct("Q")
_PAIR = struct.Struct("QQ")  # (tail, nput) or (head, nget), stored together
_POWNER, _WWAIT, _TAIL, _NPUT = 0, 4, 8, 16
_COWNER, _RWAIT, _HEAD, _NGET, _JWAIT, _NDONE = 64, 68, 72, 80, 88, 96
_DATA = 4096
_NOBODY = b"\0\0\0\0"

_SKIP = 0xFFFFFFFF
_OUT_OF_BAND = 0x80000000
_LENGTH = 0x7FFFFFFF

_DEFAULT_CAPACITY = 1 << 20
# Non-blocking attempts (about 40 us) before sleeping on a lock: a sleeper
# costs the holder a wake-up system call and itself a scheduling delay. A
# spinning thread keeps the GIL, so a holder in the same process waits out the
# spin before it can let go.
_SPINS = 400
_BATCH = 16  # frames stored per hold by a feeder: longer holds make consumers wait
_PROBE = 0.5  # seconds between checks for a dead lock holder / lost wake-up
# Stores become visible to other CPUs in program order (total store order).
_TSO = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")

# What Ring.offer reports.
STORED, FULL, NO_ROOM = 0, 2, 3


class _OwnedLock:
    """One of a ring's locks: a semaphore and the header slot naming its holder."""

    def __init__(self, ring: Ring, semlock: Any, slot: int) -> None:
        self.ring = ring
        self.try_ = semlock.acquire
        self.release = semlock.release
        self.slot = slot

    def hold(self) -> None:
        """Take the lock (taking it over from a holder that was killed)."""
        if not self.try_(False):
            self.hold_slow()
        self.ring._mem[self.slot : self.slot + 4] = self.ring._me

    def drop(self) -> None:
        self.ring._mem[self.slot : self.slot + 4] = _NOBODY
        self.release()

    def hold_slow(self) -> None:
        try_ = self.try_
        for _ in range(_SPINS):
            if try_(False):
                return
        unmarked = False
        while not try_(True, _PROBE):
            (owner,) = struct.unpack_from("i", self.ring._mem, self.slot)
            if owner == 0:
                # Held for a whole probe by a process that has not written its
                # pid: killed between taking the lock and marking it, or
                # between unmarking it and giving it back. Twice in a row: take over.
                if unmarked and self._take_over(0):
                    return
                unmarked = True
                continue
            unmarked = False
            if _is_dead(owner) and self._take_over(owner):
                util.info("took over the lock of a queue from dead process %d", owner)
                return

    def _take_over(self, owner: int) -> bool:
        """Become the holder of a lock that ``owner`` took and will never give back."""
        repair = self.ring._repair._semlock
        if not repair.acquire(False):
            return False  # another waiter is taking it over
        try:
            if self.try_(False):
                return True  # given back meanwhile: ours the ordinary way
            mem = self.ring._mem
            (now,) = struct.unpack_from("i", mem, self.slot)
            if now != owner:
                return False
            mem[self.slot : self.slot + 4] = self.ring._me
            return True
        finally:
            repair.release()


class Ring:
    """A multi-producer, multi-consumer message ring in shared memory.

    Args:
        ctx: the context whose semaphores to use.
        maxsize: most messages accepted and not yet taken (0: no limit).
        joinable: count messages until ``task_done`` (``JoinableQueue``).
        capacity: bytes of the ring (a power of two).
    """

    def __init__(
        self,
        ctx: Any,
        maxsize: int = 0,
        joinable: bool = False,
        capacity: int = _DEFAULT_CAPACITY,
    ) -> None:
        if capacity & (capacity - 1):
            msg = f"ring capacity must be a power of two, not {capacity}"
            raise ValueError(msg)
        self._arena = Arena(_DATA + capacity)
        self._capacity = capacity
        self._maxsize = maxsize if maxsize > 0 else SEM_VALUE_MAX
        self._joinable = joinable
        self._plock_sem = ctx.Lock()
        self._clock_sem = ctx.Lock() if _TSO else self._plock_sem
        self._repair = ctx.Lock()
        self._readable = ctx.Semaphore(0)
        self._writable = ctx.Semaphore(0)
        self._alldone = ctx.Semaphore(0)
        # The tracker that removes segments of big messages nobody took: this
        # process's, shared by every process that gets the ring (inherited by
        # fork, a duplicate of the pipe for spawn), whichever one made them.
        resource_tracker.ensure_running()
        self._tracker_fd = resource_tracker.getfd()
        self._bind()

    _PICKLED = (
        "_arena",
        "_capacity",
        "_maxsize",
        "_joinable",
        "_plock_sem",
        "_clock_sem",
        "_repair",
        "_readable",
        "_writable",
        "_alldone",
    )

    def __getstate__(self) -> tuple[Any, ...]:
        fd = self._tracker_fd
        tracker = None if fd is None else reduction.DupFd(fd)
        return (*(getattr(self, name) for name in self._PICKLED), tracker)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self._PICKLED, state[:-1], strict=True):
            setattr(self, name, value)
        tracker = state[-1]
        self._tracker_fd = None if tracker is None else tracker.detach()
        self._bind()

    def _bind(self) -> None:
        self._mem = self._arena.buffer
        self._mask = self._capacity - 1
        self._inband_max = self._capacity // 4
        shared = self._clock_sem is self._plock_sem
        self._plock = _OwnedLock(self, self._plock_sem._semlock, _POWNER)
        self._clock = _OwnedLock(self, self._clock_sem._semlock, _POWNER if shared else _COWNER)
        self._ptry, self._prelease = self._plock.try_, self._plock.release
        self._ctry, self._crelease = self._clock.try_, self._clock.release
        self._cslot = slice(self._clock.slot, self._clock.slot + 4)
        self._readable_is_zero = self._readable._semlock._is_zero
        self._readable_post = self._readable._semlock.release
        self._writable_is_zero = self._writable._semlock._is_zero
        self._writable_post = self._writable._semlock.release
        self._me = struct.pack("i", os.getpid())
        # This process's last look at the other side's counters (see the hot paths).
        self._consumed = (0, 0)  # head, nget
        self._committed = 0  # tail
        util.register_after_fork(self, Ring._after_fork)

    def _after_fork(self) -> None:
        self._me = struct.pack("i", os.getpid())

    def _wait(
        self, sem: Any, lock: _OwnedLock, field: int, ready: Any, deadline: float | None
    ) -> bool:
        """Sleep on sem, counted in ``field`` (under ``lock``), unless ``ready()``.

        Counts itself, checks ``ready()`` once more (a waker that missed the
        count has published what it woke us for by then), sleeps until posted
        or a probe passes, and takes itself off the count. Returns False when
        the deadline has passed.
        """
        self._count(lock, field, 1)
        if ready():
            self._count(lock, field, -1)
            return True
        wait = _PROBE if deadline is None else min(_PROBE, deadline - time.monotonic())
        woken = wait > 0 and sem._semlock.acquire(True, wait)
        self._count(lock, field, -1)
        return woken or deadline is None or time.monotonic() < deadline

    def _count(self, lock: _OwnedLock, field: int, delta: int) -> None:
        """Add delta to the u32 sleeper count at ``field`` (never below 0)."""
        lock.hold()
        (count,) = _U32.unpack_from(self._mem, field)
        self._mem[field : field + 4] = _U32.pack(max(0, count + delta))
        lock.drop()

    def _wake_readers(self) -> None:
        """After storing (and giving back the producer lock): wake a sleeping consumer."""
        if self._mem[_RWAIT : _RWAIT + 4] != _NOBODY and self._readable_is_zero():
            self._readable_post()

    # -- putting -------------------------------------------------------------

    def frame(self, data: bytes, buffers: list[memoryview]) -> bytes:
        """What to store for a pickled message: itself, or (a ``SegmentName``) its segment's.

        ``buffers``: the message's out-of-band buffers (``dumps_with_buffers``);
        a message with any, or too big for the ring, goes to a segment.
        """
        if not buffers and len(data) <= self._inband_max:
            return data
        name = _segment.write("corral-q-", data, buffers, self._tracker_fd)
        return SegmentName(name.encode())

    # The two hot paths below take module constants as keyword defaults: a local
    # lookup instead of a global one.

    def offer_fast(
        self,
        data: bytes,
        _pside: Any = _PSIDE,
        _u32: Any = _U32,
        _pair: Any = _PAIR,
        _nobody: bytes = _NOBODY,
    ) -> int:
        """Store an in-band frame if it fits without wrapping and maxsize allows; never waits.

        The common case of ``offer``, kept short; anything else (wrapping,
        joinable queues, out-of-band frames, maxsize reached) reports NO_ROOM
        for the caller to retry with ``offer``.
        """
        mem = self._mem
        if not self._ptry(False):
            self._plock.hold_slow()
        mem[0:4] = self._me  # _POWNER
        _, _, tail, nput = _pside.unpack_from(mem)
        head, nget = self._consumed  # as last seen: stale shows less room, never more
        n = len(data)
        need = (n + 11) & ~7
        pos = tail & self._mask
        capacity = self._capacity
        if tail + need - head > capacity or nput - nget >= self._maxsize:
            # Look at the consumers' line only now: reading it on every put
            # costs a cache miss each time they have moved on.
            head, nget = self._consumed = _pair.unpack_from(mem, 72)  # _HEAD, _NGET
        if (
            pos + need > capacity
            or tail + need - head > capacity
            or nput - nget >= self._maxsize
            or n > self._inband_max
            or self._joinable
        ):
            mem[0:4] = _nobody
            self._prelease()
            return NO_ROOM
        start = 4096 + pos  # _DATA
        _u32.pack_into(mem, start, n)  # unpublished bytes: pack_into is safe here
        mem[start + 4 : start + 4 + n] = data
        mem[8:24] = _pair.pack(tail + need, nput + 1)  # _TAIL, _NPUT
        mem[0:4] = _nobody
        self._prelease()
        if mem[68:72] != _nobody and self._readable_is_zero():  # _RWAIT
            self._readable_post()
        return 0  # STORED

    def offer(self, data: bytes) -> int:
        """Store a frame (wrapping if needed) if maxsize and the free bytes allow; never waits.

        Returns STORED, FULL (maxsize messages already accepted) or NO_ROOM
        (not enough free bytes).
        """
        mem = self._mem
        self._plock.hold()
        _, _, tail, nput = _PSIDE.unpack_from(mem)
        head, nget = _PAIR.unpack_from(mem, _HEAD)
        if nput - nget >= self._maxsize:
            self._plock.drop()
            return FULL
        end = self._write_frame(data, tail, head)
        if end < 0:
            self._plock.drop()
            return NO_ROOM
        mem[_TAIL : _TAIL + 16] = _PAIR.pack(end, nput + 1)
        self._plock.drop()
        self._wake_readers()
        return STORED

    def _write_frame(self, data: bytes, tail: int, head: int) -> int:
        """Write a frame beyond ``tail`` (wrapping if needed), unpublished.

        Returns the new tail, or -1 when it does not fit.
        """
        n = len(data)
        need = (n + 11) & ~7
        pos = tail & self._mask
        skip = self._capacity - pos if pos + need > self._capacity else 0
        if tail + skip + need - head > self._capacity:
            return -1
        mem = self._mem
        if skip:
            _U32.pack_into(mem, _DATA + pos, _SKIP)  # unpublished bytes: pack_into is safe
            pos = 0
        start = _DATA + pos
        _U32.pack_into(mem, start, n if type(data) is bytes else n | _OUT_OF_BAND)
        mem[start + 4 : start + 4 + n] = data
        return tail + skip + need

    def offer_batch(self, frames: Any, counted: bool) -> int:
        """Store frames from the left of a deque while they fit, up to ``_BATCH`` per hold.

        Each frame is removed from the deque once written, before the lock is
        given back; stops at the first item that is not a frame (a sentinel).
        ``counted``: the messages were already accepted (``reserve``: bounded
        and joinable queues), so ``nput`` is not raised again. Returns how many
        were stored.
        """
        mem = self._mem
        self._plock.hold()
        _, _, tail, nput = _PSIDE.unpack_from(mem)
        (head,) = _U64.unpack_from(mem, _HEAD)
        stored = 0
        while frames and stored < _BATCH:
            data = frames[0]
            if not isinstance(data, bytes):
                break
            end = self._write_frame(data, tail, head)
            if end < 0:
                break
            tail = end
            frames.popleft()
            stored += 1
        if stored:
            mem[_TAIL : _TAIL + 16] = _PAIR.pack(tail, nput + (0 if counted else stored))
        self._plock.drop()
        if stored:
            self._wake_readers()
        return stored

    def reserve(self) -> bool:
        """Accept a message without storing it (False when maxsize are already accepted)."""
        mem = self._mem
        self._plock.hold()
        (nput,) = _U64.unpack_from(mem, _NPUT)
        (nget,) = _U64.unpack_from(mem, _NGET)
        room = nput - nget < self._maxsize
        if room:
            mem[_NPUT : _NPUT + 8] = _U64.pack(nput + 1)
        self._plock.drop()
        return room

    def wait_writable(self, deadline: float | None) -> bool:
        """Sleep until a consumer frees room (or a probe passes); False past the deadline."""
        return self._wait(self._writable, self._plock, _WWAIT, self._roomy, deadline)

    def _roomy(self) -> bool:
        """A slot under maxsize is free and half the ring is (what consumers wake us for)."""
        _, _, tail, nput = _PSIDE.unpack_from(self._mem)
        _, _, head, nget = _PSIDE.unpack_from(self._mem, _COWNER)
        return nput - nget < self._maxsize and tail - head <= self._capacity >> 1

    # -- getting -------------------------------------------------------------

    def take(
        self,
        _pside: Any = _PSIDE,
        _u32: Any = _U32,
        _u64: Any = _U64,
        _pair: Any = _PAIR,
        _nobody: bytes = _NOBODY,
    ) -> bytes | _segment.Loaded | None:
        """The oldest message's pickled bytes, or None when the ring is empty; never waits.

        A message that came through a segment is returned unpickled, as a
        ``_segment.Loaded`` (its buffers are views into the segment's mapping).
        """
        mem = self._mem
        cslot = self._cslot
        if not self._ctry(False):
            self._clock.hold_slow()
        mem[cslot] = self._me
        _, rwait, head, nget = _pside.unpack_from(mem, 64)  # _COWNER: the same four fields
        tail = self._committed  # as last seen by this process: never more than there is
        if head >= tail:  # other consumers may have gone past what we saw
            # Look at the producers' line only now (a cache miss each time
            # they have moved on), without their lock.
            (tail,) = _u64.unpack_from(mem, 8)  # _TAIL
            self._committed = tail
            if head == tail:
                mem[cslot] = _nobody
                self._crelease()
                return None
        pos = head & self._mask
        (n,) = _u32.unpack_from(mem, 4096 + pos)  # _DATA
        if n == 0xFFFFFFFF:  # _SKIP
            head += self._capacity - pos
            pos = 0
            (n,) = _u32.unpack_from(mem, 4096)
        length = n & 0x7FFFFFFF  # _LENGTH
        start = 4100 + pos  # _DATA + 4
        data = mem[start : start + length]
        head += (length + 11) & ~7
        mem[72:88] = _pair.pack(head, nget + 1)  # _HEAD, _NGET
        mem[cslot] = _nobody
        self._crelease()
        if rwait and head < tail and self._readable_is_zero():
            self._readable_post()  # more data and other sleepers: wake the next
        # A producer sleeps for room (_WWAIT), and a slot under maxsize or half
        # the ring has just been freed.
        if mem[4:8] != _nobody and self._writable_is_zero():
            _, _, tail, nput = _pside.unpack_from(mem)
            if nput - nget >= self._maxsize or tail - head <= self._capacity >> 1:
                self._writable_post()
        if n & 0x80000000:  # _OUT_OF_BAND
            return _segment.Loaded(_segment.read(data.decode(), self._tracker_fd))
        return data

    def wait_readable(self, deadline: float | None) -> bool:
        """Take nothing, but sleep until a producer commits (or a probe passes).

        Returns False past the deadline. Call after ``take()`` returned None.
        """
        return self._wait(self._readable, self._clock, _RWAIT, self._not_empty, deadline)

    def _not_empty(self) -> bool:
        return not self.empty()

    # -- looking (without a lock) --------------------------------------------

    def empty(self) -> bool:
        """No committed message waits in the ring."""
        (tail,) = _U64.unpack_from(self._mem, _TAIL)
        (head,) = _U64.unpack_from(self._mem, _HEAD)
        return head == tail

    def count(self) -> int:
        """Messages accepted and not yet taken."""
        (nput,) = _U64.unpack_from(self._mem, _NPUT)
        (nget,) = _U64.unpack_from(self._mem, _NGET)
        return max(0, nput - nget)

    def full(self) -> bool:
        return self.count() >= self._maxsize

    # -- JoinableQueue (under the consumer lock) -----------------------------

    def task_done(self) -> None:
        """Count one message as processed; wake ``join()`` when none is left.

        Raises:
            ValueError: more calls than messages accepted.
        """
        mem = self._mem
        self._clock.hold()
        (nput,) = _U64.unpack_from(mem, _NPUT)
        (ndone,) = _U64.unpack_from(mem, _NDONE)
        if ndone >= nput:
            self._clock.drop()
            msg = "task_done() called too many times"
            raise ValueError(msg)
        mem[_NDONE : _NDONE + 8] = _U64.pack(ndone + 1)
        (jwait,) = _U32.unpack_from(mem, _JWAIT)
        self._clock.drop()
        if ndone + 1 == nput:
            for _ in range(jwait):  # each sleeper takes itself off the count
                self._alldone._semlock.release()

    def join(self) -> None:
        """Wait until every accepted message has been marked ``task_done``."""
        while not self._all_done():
            self._wait(self._alldone, self._clock, _JWAIT, self._all_done, None)

    def _all_done(self) -> bool:
        return self.unfinished() == 0

    def unfinished(self) -> int:
        (nput,) = _U64.unpack_from(self._mem, _NPUT)
        (ndone,) = _U64.unpack_from(self._mem, _NDONE)
        return max(0, nput - ndone)


# -- messages too big for the ring ---------------------------------------------


class SegmentName(bytes):
    """The frame of an out-of-band message: the name of the segment holding it."""


def discard(frame: bytes, tracker_fd: int | None) -> None:
    """Remove the segment of an out-of-band frame that will never be stored."""
    _segment.discard(frame.decode(), tracker_fd)
