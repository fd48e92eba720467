"""The message ring under corral's queues: pickled messages in shared memory.

A ``Ring`` is a circular buffer in an anonymous shared-memory arena
(``corral.heap.Arena``: a memfd on Linux) plus four semaphores. Every process
that has the queue maps the same bytes; putting a message copies it in,
getting one copies it out. While both sides are busy no system call is made at
all: the semaphores are only slept on when a consumer finds the ring empty or
a producer finds it full.

Layout (offsets in bytes)::

    0    owner   i32  pid of the process holding the ring lock, 0 if none
    4    jwait   u32  processes asleep in ``JoinableQueue.join``
    8    tail    u64  bytes ever committed (producers write it)
    16   nput    u64  messages ever accepted
    24   rwait   u32  consumers asleep on ``readable``
    28   wwait   u32  producers asleep on ``writable``
    32   head    u64  bytes ever consumed (consumers write it)
    40   nget    u64  messages ever taken
    48   undone  u64  messages not yet marked ``task_done`` (joinable queues)
    4096 data    ``capacity`` bytes of frames

Only the lock holder touches the header, so it is packed into one cache line:
each hold moves one line between the CPUs, not two. Header fields are stored
by slice assignment of packed bytes (one ``memcpy``, a store a kill cannot
split), never with ``struct.pack_into``, which zero-fills its target before
packing: a process killed in between left ``tail`` at 0 and the ring reading
garbage (found by the kill tests under load).

A frame is a u32 length and that many bytes, padded to 8. ``_SKIP`` in the
length means "wrap to the start". A message larger than ``capacity // 4``
travels out of band: it is written to a POSIX shared-memory segment of its own
(registered with the resource tracker) and the frame holds only its name, with
``_OUT_OF_BAND`` set in the length.

The ring lock is a binary semaphore, whose owner is written in ``owner`` right
after it is taken and cleared just before it is given back. A process that has
waited ``_PROBE`` seconds for the lock looks at ``owner``: if it names a dead
process (or a zombie), or stays 0 over two probes while the lock is held, the
holder was killed with the lock, and the waiter takes the lock over (under a
second semaphore, ``repair``, so that only one waiter does). The state the dead
holder left is consistent by construction: a producer writes its frame beyond
``tail`` and publishes it by storing ``tail`` and ``nput`` last, in one 16-byte
write; a consumer copies the frame out and then stores ``head`` and ``nget``
the same way. A producer killed before its store loses the message it was
putting; a consumer killed after its store loses the message it was getting;
every other message is still delivered.

Sleepers count themselves (``rwait``, ``wwait``, ``jwait``) under the lock; a
waker decrements the count and posts the semaphore after letting the lock go.
Consumers wake a producer sleeping for room only once half the ring is free
(or a slot under ``maxsize`` frees), so a producer that is ahead refills the
ring in bulk instead of being woken for every message taken.
Sleeps last at most ``_PROBE`` seconds, so a wake-up lost with a killed process
costs a waiter that long, never forever.
"""

from __future__ import annotations

import mmap
import os
import secrets
import struct
import time
from typing import Any

from . import reduction, resource_tracker, util
from .heap import Arena
from .synchronize import SEM_VALUE_MAX

__all__ = ("Ring",)

_STATE = struct.Struct("iIQQIIQQ")  # owner, jwait, tail, nput, rwait, wwait, head, nget
_U32 = struct.Struct("I")
_U64 = struct.Struct("Q")
_PAIR = struct.Struct("QQ")  # (tail, nput) or (head, nget), stored together
_OWNER, _JWAIT, _TAIL, _NPUT = 0, 4, 8, 16
_RWAIT, _WWAIT, _HEAD, _NGET, _UNDONE = 24, 28, 32, 40, 48
_DATA = 4096
_NOBODY = b"\0\0\0\0"

_SKIP = 0xFFFFFFFF
_OUT_OF_BAND = 0x80000000
_LENGTH = 0x7FFFFFFF

_DEFAULT_CAPACITY = 1 << 20
# Non-blocking attempts (about 40 us) before sleeping on the lock. Producer
# and consumer collide on nearly every message, each holding the lock for well
# under a microsecond; a sleeper costs the holder a wake-up system call and
# itself a scheduling delay (with 30 spins, a Queue whose feeder thread was
# running slept thousands of times per 100,000 messages and ran at 270-400k
# msgs/s; with 400, a few times, at 360-620k). A spinning thread keeps the GIL,
# so a holder in the same process waits out the spin before it can let go.
_SPINS = 400
_BATCH = 16  # frames stored per hold by a feeder: longer holds make consumers sleep
_PROBE = 0.5  # seconds between checks for a dead lock holder / lost wake-up

# What Ring.offer reports.
STORED, RESERVED, FULL, NO_ROOM = 0, 1, 2, 3


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
        self._lock = ctx.Lock()
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
        "_lock",
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
        self._try = self._lock._semlock.acquire
        self._release = self._lock._semlock.release
        self._me = struct.pack("i", os.getpid())
        util.register_after_fork(self, Ring._after_fork)

    def _after_fork(self) -> None:
        self._me = struct.pack("i", os.getpid())

    # -- the ring lock -------------------------------------------------------

    def _hold(self) -> None:
        """Take the ring lock (taking it over from a holder that was killed)."""
        if not self._try(False):
            self._hold_slow()
        self._mem[0:4] = self._me

    def _drop(self) -> None:
        self._mem[0:4] = _NOBODY
        self._release()

    def _hold_slow(self) -> None:
        try_ = self._try
        for _ in range(_SPINS):
            if try_(False):
                return
        unmarked = False
        while not try_(True, _PROBE):
            (owner,) = struct.unpack_from("i", self._mem, _OWNER)
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
        if not self._repair._semlock.acquire(False):
            return False  # another waiter is taking it over
        try:
            if self._try(False):
                return True  # given back meanwhile: ours the ordinary way
            (now,) = struct.unpack_from("i", self._mem, _OWNER)
            if now != owner:
                return False
            self._mem[0:4] = self._me
            return True
        finally:
            self._repair._semlock.release()

    def _sleep(self, sem: Any, field: int, deadline: float | None) -> bool:
        """Sleep on sem (counted in field, already incremented) until woken or a probe passes.

        Returns False when the deadline has passed.
        """
        wait = _PROBE if deadline is None else min(_PROBE, deadline - time.monotonic())
        if wait > 0 and sem._semlock.acquire(True, wait):
            return True  # the waker took us off the count
        self._hold()
        (count,) = _U32.unpack_from(self._mem, field)
        if count:
            self._mem[field : field + 4] = _U32.pack(count - 1)
        self._drop()
        return deadline is None or time.monotonic() < deadline

    # -- putting -------------------------------------------------------------

    def frame(self, data: bytes) -> bytes:
        """What to store for a pickled message: itself, or (a ``SegmentName``) its segment's."""
        if len(data) <= self._inband_max:
            return data
        return _to_segment(data, self._tracker_fd)

    # The two hot paths below take module constants as keyword defaults: a local
    # lookup instead of a global one, some 100 ns of a 700 ns call.

    def offer_fast(
        self,
        data: bytes,
        _state: Any = _STATE,
        _u32: Any = _U32,
        _pair: Any = _PAIR,
        _nobody: bytes = _NOBODY,
    ) -> int:
        """Store an in-band frame if it fits without wrapping and maxsize allows; never waits.

        The common case of ``offer``, kept short; anything else (wrapping,
        joinable counting, out-of-band frames) reports NO_ROOM for the caller
        to retry with ``offer``.
        """
        mem = self._mem
        if not self._try(False):
            self._hold_slow()
        mem[0:4] = self._me
        _, _, tail, nput, rwait, _, head, nget = _state.unpack_from(mem)
        n = len(data)
        need = (n + 11) & ~7
        pos = tail & self._mask
        capacity = self._capacity
        if (
            pos + need > capacity
            or tail + need - head > capacity
            or nput - nget >= self._maxsize
            or n > self._inband_max
            or self._joinable
        ):
            mem[0:4] = _nobody
            self._release()
            return NO_ROOM
        start = 4096 + pos  # _DATA
        _u32.pack_into(mem, start, n)
        mem[start + 4 : start + 4 + n] = data
        mem[8:24] = _pair.pack(tail + need, nput + 1)  # _TAIL, _NPUT
        if rwait:
            mem[24:28] = _u32.pack(rwait - 1)  # _RWAIT
            mem[0:4] = _nobody
            self._release()
            self._readable._semlock.release()
        else:
            mem[0:4] = _nobody
            self._release()
        return 0  # STORED

    def offer(self, data: bytes, counted: bool = False, reserve: bool = False) -> int:
        """Commit a frame if there is room; never waits.

        Args:
            data: the frame (see ``frame``).
            counted: the message was already accepted (``nput``) by a reserve.
            reserve: when the bytes do not fit, accept the message anyway (the
                caller keeps it and offers it again later with ``counted``).

        Returns:
            STORED; RESERVED (accepted, not stored: only with reserve); FULL
            (maxsize messages already accepted); NO_ROOM (not enough free bytes).
        """
        mem = self._mem
        self._hold()
        _, _, tail, nput, rwait, _, head, nget = _STATE.unpack_from(mem)
        if not counted and nput - nget >= self._maxsize:
            self._drop()
            return FULL
        n = len(data)
        need = (n + 11) & ~7
        pos = tail & self._mask
        skip = self._capacity - pos if pos + need > self._capacity else 0
        if tail + skip + need - head > self._capacity:
            if reserve and not counted:
                self._accept(nput)
                self._drop()
                return RESERVED
            self._drop()
            return NO_ROOM
        if skip:
            _U32.pack_into(mem, _DATA + pos, _SKIP)
            pos = 0
        start = _DATA + pos
        _U32.pack_into(mem, start, n if type(data) is bytes else n | _OUT_OF_BAND)
        mem[start + 4 : start + 4 + n] = data
        mem[_TAIL : _TAIL + 8] = _U64.pack(tail + skip + need)
        if not counted:
            self._accept(nput)
        if rwait:
            mem[_RWAIT : _RWAIT + 4] = _U32.pack(rwait - 1)
        self._drop()
        if rwait:
            self._readable._semlock.release()
        return STORED

    def offer_batch(self, frames: Any, counted: bool) -> int:
        """Store frames from the left of a deque while they fit, up to ``_BATCH`` per hold.

        Each frame is removed from the deque once written, before the lock is
        given back; stops at the first item that is not a frame (a sentinel).
        Returns how many were stored.
        """
        mem = self._mem
        self._hold()
        _, _, tail, nput, rwait, _, head, _ = _STATE.unpack_from(mem)
        capacity = self._capacity
        stored = 0
        while frames and stored < _BATCH:
            data = frames[0]
            if not isinstance(data, bytes):
                break
            n = len(data)
            need = (n + 11) & ~7
            pos = tail & self._mask
            skip = capacity - pos if pos + need > capacity else 0
            if tail + skip + need - head > capacity:
                break
            if skip:
                _U32.pack_into(mem, _DATA + pos, _SKIP)
                pos = 0
            start = _DATA + pos
            _U32.pack_into(mem, start, n if type(data) is bytes else n | _OUT_OF_BAND)
            mem[start + 4 : start + 4 + n] = data
            tail += skip + need
            frames.popleft()
            stored += 1
        if stored:
            mem[_TAIL : _TAIL + 8] = _U64.pack(tail)
            if not counted:
                self._accept(nput, stored)
            if rwait:
                mem[_RWAIT : _RWAIT + 4] = _U32.pack(rwait - 1)
        else:
            rwait = 0
        self._drop()
        if rwait:
            self._readable._semlock.release()
        return stored

    def reserve(self) -> bool:
        """Accept a message without storing it (False when maxsize are already accepted)."""
        self._hold()
        _, _, _, nput, _, _, _, nget = _STATE.unpack_from(self._mem)
        room = nput - nget < self._maxsize
        if room:
            self._accept(nput)
        self._drop()
        return room

    def _accept(self, nput: int, count: int = 1) -> None:
        """Count messages as accepted (called with the lock held; nput as read under it)."""
        self._mem[_NPUT : _NPUT + 8] = _U64.pack(nput + count)
        if self._joinable:
            (undone,) = _U64.unpack_from(self._mem, _UNDONE)
            self._mem[_UNDONE : _UNDONE + 8] = _U64.pack(undone + count)

    def wait_writable(self, deadline: float | None) -> bool:
        """Sleep until a consumer frees room (or a probe passes); False past the deadline."""
        self._hold()
        (wwait,) = _U32.unpack_from(self._mem, _WWAIT)
        self._mem[_WWAIT : _WWAIT + 4] = _U32.pack(wwait + 1)
        self._drop()
        return self._sleep(self._writable, _WWAIT, deadline)

    # -- getting -------------------------------------------------------------

    def take(
        self,
        _state: Any = _STATE,
        _u32: Any = _U32,
        _pair: Any = _PAIR,
        _nobody: bytes = _NOBODY,
    ) -> bytes | None:
        """The oldest message's pickled bytes, or None when the ring is empty; never waits."""
        mem = self._mem
        if not self._try(False):
            self._hold_slow()
        mem[0:4] = self._me
        _, _, tail, nput, _, wwait, head, nget = _state.unpack_from(mem)
        if head == tail:
            mem[0:4] = _nobody
            self._release()
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
        mem[32:48] = _pair.pack(head, nget + 1)  # _HEAD, _NGET
        # Wake a producer when a slot under maxsize frees, or when half the
        # ring is free (any frame then fits): not at every message, which
        # would cost a wake-up per message while producers are ahead.
        if wwait and (nput - nget >= self._maxsize or tail - head <= self._capacity >> 1):
            mem[28:32] = _u32.pack(wwait - 1)  # _WWAIT
            mem[0:4] = _nobody
            self._release()
            self._writable._semlock.release()
        else:
            mem[0:4] = _nobody
            self._release()
        if n & 0x80000000:  # _OUT_OF_BAND
            return _from_segment(data, self._tracker_fd)
        return data

    def wait_readable(self, deadline: float | None) -> bool:
        """Take nothing, but sleep until a producer commits (or a probe passes).

        Returns False past the deadline. Call after ``take()`` returned None.
        """
        self._hold()
        _, _, tail, _, rwait, _, head, _ = _STATE.unpack_from(self._mem)
        if head != tail:
            self._drop()
            return True
        self._mem[_RWAIT : _RWAIT + 4] = _U32.pack(rwait + 1)
        self._drop()
        return self._sleep(self._readable, _RWAIT, deadline)

    # -- looking -------------------------------------------------------------

    def empty(self) -> bool:
        """No committed message waits in the ring."""
        _, _, tail, _, _, _, head, _ = _STATE.unpack_from(self._mem)
        return head == tail

    def count(self) -> int:
        """Messages accepted and not yet taken."""
        _, _, _, nput, _, _, _, nget = _STATE.unpack_from(self._mem)
        return max(0, nput - nget)

    def full(self) -> bool:
        return self.count() >= self._maxsize

    # -- JoinableQueue -------------------------------------------------------

    def task_done(self) -> None:
        """Count one message as processed; wake ``join()`` when none is left.

        Raises:
            ValueError: more calls than messages accepted.
        """
        self._hold()
        (undone,) = _U64.unpack_from(self._mem, _UNDONE)
        if undone == 0:
            self._drop()
            msg = "task_done() called too many times"
            raise ValueError(msg)
        self._mem[_UNDONE : _UNDONE + 8] = _U64.pack(undone - 1)
        (jwait,) = _U32.unpack_from(self._mem, _JWAIT)
        if undone == 1 and jwait:
            self._mem[_JWAIT : _JWAIT + 4] = _U32.pack(0)
        else:
            jwait = 0
        self._drop()
        for _ in range(jwait):
            self._alldone._semlock.release()

    def join(self) -> None:
        """Wait until every accepted message has been marked ``task_done``."""
        while True:
            self._hold()
            (undone,) = _U64.unpack_from(self._mem, _UNDONE)
            if undone == 0:
                self._drop()
                return
            (jwait,) = _U32.unpack_from(self._mem, _JWAIT)
            self._mem[_JWAIT : _JWAIT + 4] = _U32.pack(jwait + 1)
            self._drop()
            self._sleep(self._alldone, _JWAIT, None)

    def unfinished(self) -> int:
        (undone,) = _U64.unpack_from(self._mem, _UNDONE)
        return int(undone)


def _is_dead(pid: int) -> bool:
    """Whether pid has ended (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (macOS): alive as far as kill() can tell
    return state in (b"Z", b"X")


# -- messages too big for the ring ---------------------------------------------


class SegmentName(bytes):
    """The frame of an out-of-band message: the name of the segment holding it."""


def _to_segment(data: bytes, tracker_fd: int | None) -> SegmentName:
    """Write data to a new shared-memory segment; the frame is its name."""
    import _posixshmem

    while True:
        name = f"/corral-q-{secrets.token_hex(8)}"
        try:
            fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:
            continue
        break
    resource_tracker.hand_over(name, "shared_memory", tracker_fd)
    try:
        os.ftruncate(fd, len(data))
        with mmap.mmap(fd, len(data)) as segment:
            segment[:] = data
    except BaseException:
        _posixshmem.shm_unlink(name)
        resource_tracker.taken_over(name, "shared_memory", tracker_fd)
        raise
    finally:
        os.close(fd)
    return SegmentName(name.encode())


def _from_segment(frame: bytes, tracker_fd: int | None) -> bytes:
    """Read and remove the segment a frame names."""
    import _posixshmem

    name = frame.decode()
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        _posixshmem.shm_unlink(name)
        resource_tracker.taken_over(name, "shared_memory", tracker_fd)
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as segment:
            return segment[:]
    finally:
        os.close(fd)


def discard(frame: bytes, tracker_fd: int | None) -> None:
    """Remove the segment of an out-of-band frame that will never be stored."""
    import _posixshmem

    name = frame.decode()
    try:
        _posixshmem.shm_unlink(name)
    except FileNotFoundError:
        pass
    resource_tracker.taken_over(name, "shared_memory", tracker_fd)
