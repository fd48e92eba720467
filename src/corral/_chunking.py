"""``chunksize="auto"``: chunk sizes from the observed time per item (issue #16, part 3).

A ``ChunkSizer`` is the policy alone, with no clock and no threads: the lazy
producer (``Feed``) asks it for the size of the next chunk and tells it how long
each finished chunk took (from the moment the engine handed it to a worker,
``Task.claim``, to its outcome), so a test can feed it durations and check the
sizes it answers.

The policy, for ``workers`` workers:

* Probe: until a first chunk has finished, chunks have one item. The producer
  keeps ``in_flight`` (two per worker) chunks out at once, so the probes
  start every worker at once instead of measuring on one of them first.
* Target: a chunk should take about ``target`` seconds (tens of milliseconds,
  against a round trip of about 0.1 ms per chunk on the local engine). The time
  per item is the ratio of recent seconds to recent items (sums that decay by
  half at each observation, so the bigger, recent chunks weigh most and a
  change of pace in the input shows within a few chunks).
* Growth: a chunk is at most ``GROWTH`` times the largest chunk measured so
  far, so one lucky measurement never hands a worker a huge chunk. Tiny items
  still reach thousands per chunk within a few round trips (1, 8, 64, 512 ...).
* Tail: when the number of items is known, a chunk is at most the remaining
  items divided by twice the workers (guided scheduling), so the last chunks
  shrink and all workers finish together; but never below ``target / 16`` of
  work (a few milliseconds), where the overhead per chunk would dominate.
"""

from __future__ import annotations

from typing import Any

__all__ = ("GROWTH", "TARGET_SECONDS", "ChunkSizer", "is_auto")

TARGET_SECONDS = 0.05  # the time a chunk should take in a worker
GROWTH = 8  # a chunk is at most this many times the largest chunk measured
_DECAY = 0.5  # weight of the past in the time-per-item sums, at each observation
_TAIL_FLOOR = 16  # the tail splits no chunk below target / _TAIL_FLOOR seconds of work


def is_auto(chunksize: Any, *, none: bool = True) -> bool:
    """Whether ``chunksize`` asks for automatic sizes; check it is an int otherwise.

    Ints (whatever their value: the caller checks the range, with the stdlib's
    message) give False, and so does ``None`` where it is allowed (``none``:
    ``map``'s default; ``imap`` and ``Executor.map`` refuse it, as the stdlib's
    do, but with a message).

    Raises:
        ValueError: a string other than ``"auto"``.
        TypeError: neither an int, ``None`` (if allowed) nor ``"auto"`` (a float, for example).
    """
    if isinstance(chunksize, int) or (none and chunksize is None):
        return False
    if isinstance(chunksize, str):
        if chunksize == "auto":
            return True
        msg = f'chunksize must be an int >= 1 or "auto", not {chunksize!r}'
        raise ValueError(msg)
    msg = f'chunksize must be an int >= 1 or "auto", not {type(chunksize).__name__} {chunksize!r}'
    raise TypeError(msg)


class ChunkSizer:
    """The sizes of the chunks of one map-like call (see the module docstring).

    Args:
        workers: the engine's workers (its ``size``).
        total: the number of items, if known (enables the tail rule).
        target: seconds a chunk should take.

    Not thread-safe: one thread (the producer) calls both methods.
    """

    def __init__(self, workers: int, total: int | None = None, target: float = TARGET_SECONDS):
        self.workers = max(1, workers)
        self.in_flight = 2 * self.workers  # chunks the producer keeps out at once
        self.target = target
        self._remaining = total  # items not yet handed out, if known
        self._seconds = 0.0  # decayed sums over finished chunks
        self._items = 0.0
        self._largest = 0  # the largest chunk measured

    def observe(self, items: int, seconds: float) -> None:
        """A chunk of ``items`` items took ``seconds`` seconds in a worker."""
        if items < 1:
            return
        self._seconds = _DECAY * self._seconds + max(seconds, 1e-6)
        self._items = _DECAY * self._items + items
        self._largest = max(self._largest, items)

    def seconds_per_item(self) -> float | None:
        """The current estimate of a worker's time per item, None before any measurement."""
        return self._seconds / self._items if self._items else None

    def next_size(self) -> int:
        """The size of the next chunk (>= 1); counts it as handed out."""
        per_item = self.seconds_per_item()
        if per_item is None:
            size = 1
        else:
            size = min(int(self.target / per_item), GROWTH * self._largest)
            remaining = self._remaining
            if remaining is not None:
                share = -(-remaining // (2 * self.workers))
                floor = int(self.target / _TAIL_FLOOR / per_item)
                size = min(size, max(share, floor))
            size = max(1, size)
        if self._remaining is not None:
            self._remaining = max(0, self._remaining - size)
        return size
