"""Progress counting and the built-in bar (issue 16), without processes."""

from __future__ import annotations

import io
import os
import select
import time

import pytest

from corral._progress import CallProgress, TextBar, open_progress

pytestmark = pytest.mark.timeout(30)


class FakeBar:
    """Duck-typed like a tqdm bar: update(n), total, close()."""

    def __init__(self, total=None):
        self.total = total
        self.n = 0
        self.closed = False

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True


def test_partial_counts_are_counted_once_and_never_go_backwards():
    got: list[int] = []
    bar = CallProgress(got.append, None, total=10)
    bar.partial(0, 2)
    bar.partial(0, 1)  # late or reordered: ignored
    bar.partial(0, 4)
    bar.chunk_done(0, True, [None] * 5)  # only the item not reported yet
    bar.partial(1, 3)
    bar.chunk_done(1, True, [None] * 5)
    assert got == [2, 2, 1, 3, 2]
    assert sum(got) == 10
    assert bar.closed  # the total was reached


def test_never_beyond_the_total():
    got: list[int] = []
    bar = CallProgress(got.append, None, total=3)
    bar.advance(2)
    bar.advance(5)
    assert got == [2, 1]
    assert bar.closed


def test_a_failed_chunk_closes_the_bar_and_stops_counting():
    closed = []
    got: list[int] = []
    bar = CallProgress(got.append, lambda: closed.append(True), total=10)
    bar.chunk_done(0, True, [1, 2])
    bar.chunk_done(1, False, ValueError("boom"))
    bar.chunk_done(2, True, [1, 2])
    bar.close()
    assert got == [2]
    assert closed == [True]  # once


def test_wrap_counts_before_the_caller_is_told():
    events = []
    bar = CallProgress(lambda n: events.append(("bar", n)), None, total=None)
    done = bar.wrap(7, lambda ok, value: events.append(("done", ok)))
    done(True, [1, 2, 3])
    assert events == [("bar", 3), ("done", True)]


def test_a_raising_callback_is_logged_once_and_dropped(caplog):
    calls = []

    def bad(n):
        calls.append(n)
        raise RuntimeError("broken callback")

    bar = CallProgress(bad, None, total=None)
    bar.advance(1)
    bar.advance(1)
    assert calls == [1]
    assert "progress callback raised" in caplog.text


def test_empty_total_closes_at_once():
    fake = FakeBar()
    bar = open_progress(fake, 0)
    assert bar is not None and bar.closed
    assert fake.closed is False  # the caller's bar is not ours to close


def test_a_bar_passed_in_gets_its_total_and_is_not_closed():
    fake = FakeBar()
    bar = open_progress(fake, 4)
    assert bar is not None
    assert fake.total == 4
    bar.chunk_done(0, True, [1, 2, 3, 4])
    assert fake.n == 4 and bar.closed and not fake.closed


def test_what_progress_may_be():
    assert open_progress(False, 3) is None
    assert open_progress(None, 3) is None
    got: list[int] = []
    bar = open_progress(got.append, 3)
    assert bar is not None
    bar.advance(1)
    assert got == [1]
    with pytest.raises(TypeError, match="progress must be True, False"):
        open_progress(42, 3)


def test_a_bar_class_instead_of_a_bar_is_refused():
    class Bar:  # like tqdm: update() is a method of the class
        def update(self, n: int) -> None:
            pass

    with pytest.raises(TypeError, match=r"the class Bar, not a bar: .*Bar\(total=...\)"):
        open_progress(Bar, 3)


def test_the_text_bar_writes_nothing_off_a_terminal():
    stream = io.StringIO()
    bar = TextBar(10, stream=stream)
    bar.update(5)
    bar.close()
    assert stream.getvalue() == ""


def test_the_text_bar_draws_on_a_terminal_and_ends_its_line():
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as stream:
            bar = TextBar(4, stream=stream)
            bar.update(4)
            bar.close()
        text = ""
        deadline = time.monotonic() + 10
        while not text.endswith("\n") and time.monotonic() < deadline:
            # The terminal passes the bytes on when it gets to them: wait for them.
            if select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
                text += os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert text.startswith("\r")
    assert "4/4" in text and "100%" in text
    assert text.endswith(("\n", "\r\n"))  # the tty turns \n into \r\n


def test_the_text_bar_without_a_total_counts():
    bar = TextBar(None, stream=io.StringIO())
    bar.update(3)
    assert bar.line(bar.started + 1.0).startswith("3 items [00:01, 3.0 items/s]")
