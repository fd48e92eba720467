"""The ``chunksize="auto"`` policy as a pure function of the durations it is told (no clock)."""

from __future__ import annotations

import pytest

from corral._chunking import GROWTH, ChunkSizer, is_auto

pytestmark = pytest.mark.timeout(30)

ROUND_TRIP = 1e-4  # what a chunk of tiny items costs, whatever its size, early on


def run(sizer: ChunkSizer, total: int, seconds_for, caps: list[int] | None = None) -> list[int]:
    """Hand out ``total`` items; each finished chunk reports ``seconds_for(items)``.

    Chunks finish in the order they were handed out, with ``sizer.in_flight``
    of them out at once, as the feed keeps them. ``caps`` gets, for each size,
    GROWTH times the largest chunk measured when it was chosen (0: none yet).
    """
    sizes: list[int] = []
    out: list[int] = []
    largest = 0
    left = total
    while left or out:
        while left and len(out) < sizer.in_flight:
            size = min(sizer.next_size(), left)
            if caps is not None:
                caps.append(GROWTH * largest)
            sizes.append(size)
            out.append(size)
            left -= size
        done = out.pop(0)
        sizer.observe(done, seconds_for(done))
        largest = max(largest, done)
    return sizes


def test_probes_start_every_worker_with_one_item():
    sizer = ChunkSizer(workers=3, total=1000)
    assert sizer.in_flight == 6
    assert [sizer.next_size() for _ in range(6)] == [1] * 6


def test_tiny_items_grow_geometrically_to_thousands():
    sizer = ChunkSizer(workers=2, total=200_000)
    caps: list[int] = []
    sizes = run(sizer, 200_000, lambda n: ROUND_TRIP + n * 3e-7, caps)
    assert sum(sizes) == 200_000
    assert max(sizes) >= 10_000
    assert len(sizes) < 60  # the stdlib's default cuts 8; size 1 would be 200 000
    # Growth is bounded: each size is at most GROWTH times the largest measured.
    assert all(size <= cap or cap == 0 for size, cap in zip(sizes, caps, strict=True))
    assert sizes[:4] == [1, 1, 1, 1]


def test_slow_items_stay_one_per_chunk():
    sizer = ChunkSizer(workers=2, total=40)
    assert run(sizer, 40, lambda n: 0.05 * n) == [1] * 40


def test_size_aims_at_the_target_duration():
    sizer = ChunkSizer(workers=4, total=None, target=0.05)
    for _ in range(10):
        sizer.observe(100, 0.1)  # 1 ms per item
    assert sizer.next_size() == 50


def test_unknown_length_has_no_tail():
    sizer = ChunkSizer(workers=2, total=None)
    for _ in range(10):
        sizer.observe(1000, 0.001)  # 1 us per item
    sizes = {sizer.next_size() for _ in range(20)}
    assert sizes == {8000}  # GROWTH * 1000: capped, never shrinking without a cause


def test_tail_shrinks_so_workers_finish_together():
    # 1 ms per item, 2000 items, 2 workers: chunks of 50 items (50 ms) until
    # the remaining items run short, then smaller ones, ending at the floor
    # (target / 16 of work: 3 items).
    sizer = ChunkSizer(workers=2, total=2000)
    sizes = run(sizer, 2000, lambda n: 0.001 * n)
    assert sum(sizes) == 2000
    assert max(sizes) == 50
    tail = sizes[-6:]
    assert tail == sorted(tail, reverse=True)
    assert sizes[-1] <= 3


def test_pace_change_is_followed():
    sizer = ChunkSizer(workers=1, total=None)
    for _ in range(10):
        sizer.observe(1000, 0.01)  # 10 us per item
    assert sizer.next_size() == 5000
    for _ in range(4):
        sizer.observe(1000, 1.0)  # the items became 100 times slower
    assert sizer.next_size() <= 100


def test_a_chunk_that_took_no_measurable_time_is_not_a_division_by_zero():
    sizer = ChunkSizer(workers=1, total=None)
    sizer.observe(1, 0.0)
    assert sizer.next_size() == GROWTH
    sizer.observe(0, 1.0)  # a dropped chunk tells nothing
    assert sizer.seconds_per_item() == pytest.approx(1e-6)


@pytest.mark.parametrize("value", [None, 1, 7, 0, -1, True])
def test_is_auto_leaves_ints_and_none_to_the_caller(value):
    assert is_auto(value) is False


def test_is_auto_accepts_auto():
    assert is_auto("auto") is True


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("fast", ValueError),
        ("AUTO", ValueError),
        ("", ValueError),
        (2.5, TypeError),
        ([], TypeError),
    ],
)
def test_is_auto_rejects_other_values(value, error):
    with pytest.raises(error, match=r'chunksize must be an int >= 1 or "auto"'):
        is_auto(value)
