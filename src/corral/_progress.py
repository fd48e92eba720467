"""Progress of a pool call (``progress=`` on map-like calls and ``as_completed``; issue 16).

``open_progress(progress, total)`` turns what the caller passed into a
``CallProgress``, which the front ends feed from two sources:

* ``chunk_done(key, ok, value)``: a chunk's outcome (every engine), and
* ``partial(key, n)``: ``n`` items of a running chunk are done (the local
  engine's PROGRESS records, about ten times a second per running chunk).

It counts each chunk's items once (a chunk's partial counts are subtracted
when it completes), never goes backwards nor past ``total``, and closes on
the first failed chunk, when ``total`` is reached, or on ``close()`` (the
front ends call it on Ctrl-C, on the end of an iterator, when it is dropped).

What ``progress=`` may be:

* ``True``: a bar of corral's own choosing: ``tqdm.auto`` when tqdm is
  installed (the ``corral[progress]`` extra), else a one-line bar drawn with
  carriage returns on stderr. Either draws only when stderr is a terminal
  (tqdm: or a notebook); elsewhere it writes nothing. corral closes it.
* an object with an ``update(n)`` method (a ``tqdm`` bar): updated with
  increments; its ``total`` is set if it has none. It is the caller's: corral
  never closes it (one bar may span several calls).
* any other callable: called with each increment (an ``int``).

Updates run in corral's threads (mostly the engine thread): a callback
should be quick. One that raises is logged once and not called again.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, Union

__all__ = ("CallProgress", "ProgressArg", "SupportsUpdate", "TextBar", "open_progress")

_log = logging.getLogger("multiprocessing")

_REDRAW = 0.1  # seconds between two drawings of the built-in bar


class SupportsUpdate(Protocol):
    """A progress bar: ``update(n)`` advances it by ``n`` (``tqdm`` has this method)."""

    def update(self, n: int, /) -> object: ...


ProgressArg = Union[bool, None, SupportsUpdate, Callable[[int], object]]  # noqa: UP007


class CallProgress:
    """One call's progress: counts items once, then forwards increments to the sink."""

    def __init__(
        self,
        update: Callable[[int], object],
        close: Callable[[], object] | None,
        total: int | None,
    ) -> None:
        self._update = update
        self._close = close
        self.total = total
        self.done = 0
        self._partial: dict[Any, int] = {}
        self._lock = threading.Lock()
        self.closed = False
        if total == 0:
            self.close()

    def partial(self, key: Any, done: int) -> None:
        """``done`` items of the running chunk ``key`` are finished (never counted twice)."""
        with self._lock:
            if self.closed:
                return
            before = self._partial.get(key, 0)
            if done > before:
                self._partial[key] = done
                self._advance(done - before)

    def chunk_done(self, key: Any, ok: bool, value: Any) -> None:
        """Chunk ``key`` finished: count the items its partial reports did not; close on failure."""
        with self._lock:
            if self.closed:
                return
            if not ok:
                self._close_locked()
                return
            n = len(value) if type(value) is list else 1
            self._advance(n - self._partial.pop(key, 0))

    def wrap(self, key: Any, on_done: Callable[[bool, Any], None]) -> Callable[[bool, Any], None]:
        """``on_done`` counting chunk ``key`` first (the bar is final before the caller wakes)."""

        def done(ok: bool, value: Any) -> None:
            self.chunk_done(key, ok, value)
            on_done(ok, value)

        return done

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items."""
        with self._lock:
            if not self.closed:
                self._advance(n)

    def _advance(self, n: int) -> None:
        if self.total is not None:
            n = min(n, self.total - self.done)
        if n <= 0:
            return
        self.done += n
        try:
            self._update(n)
        except BaseException:
            _log.exception("a progress callback raised; progress is no longer reported")
            self._update = _ignore
        if self.total is not None and self.done >= self.total:
            self._close_locked()

    def close(self) -> None:
        """Stop reporting; close the bar if corral made it (idempotent, any thread)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._close is not None:
            try:
                self._close()
            except BaseException:
                _log.exception("closing a progress bar raised")


def _ignore(n: int) -> None:
    pass


def open_progress(progress: Any, total: int | None, unit: str = "item") -> CallProgress | None:
    """A ``CallProgress`` for what the caller passed as ``progress=`` (None for False/None).

    Raises:
        TypeError: ``progress`` is neither a bool, a bar with ``update(n)``, nor a callable.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        bar = default_bar(total, unit)
        return CallProgress(bar.update, bar.close, total)
    if isinstance(progress, type):  # progress=tqdm: the class, not a bar
        msg = (
            f"progress got the class {progress.__name__}, not a bar: pass progress=True, "
            f"or a bar made from it ({progress.__name__}(total=...))"
        )
        raise TypeError(msg)
    update = getattr(progress, "update", None)
    if callable(update):
        if total is not None and getattr(progress, "total", 0) is None:
            try:
                progress.total = total  # a tqdm bar made without one
            except (AttributeError, TypeError):
                pass
        return CallProgress(update, None, total)
    if callable(progress):
        return CallProgress(progress, None, total)
    msg = (
        f"progress must be True, False, a progress bar with an update(n) method (tqdm) "
        f"or a callable taking a count of finished items, not {type(progress).__name__}"
    )
    raise TypeError(msg)


def default_bar(total: int | None, unit: str = "item") -> Any:
    """A bar on stderr, drawn only on a terminal: tqdm's if installed, else ``TextBar``."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return TextBar(total, unit)
    # disable=None: tqdm draws nothing when stderr is not a terminal, as TextBar.
    return tqdm(total=total, unit=unit, disable=None, dynamic_ncols=True)


class TextBar:
    """A one-line bar on a terminal (``\\r`` redraws, at most ten a second); silent elsewhere.

    Args:
        total: items expected, None if unknown (then a count and a rate only).
        unit: what an item is called.
        stream: where to draw (stderr); nothing is written unless it is a terminal.
    """

    def __init__(self, total: int | None, unit: str = "item", stream: Any = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            self.enabled = False
        self.total = total
        self.unit = unit
        self.n = 0
        self.started = time.monotonic()
        # The first drawing waits _REDRAW seconds: a call that ends sooner
        # draws once, when it closes.
        self._drawn_at = self.started

    def update(self, n: int) -> None:
        """Advance by ``n``; redraw if the last drawing is 0.1 s old."""
        self.n += n
        if self.enabled:
            now = time.monotonic()
            if now - self._drawn_at >= _REDRAW:
                self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self._write("\n")
            self.enabled = False

    def line(self, now: float) -> str:
        """The bar's text at time ``now`` (without the carriage return)."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.n / elapsed
        timing = f"{_clock(elapsed)}, {rate:.1f} {self.unit}s/s"
        if self.total:
            fraction = min(1.0, self.n / self.total)
            left = (self.total - self.n) / rate if rate > 0 else None
            eta = "?" if left is None else _clock(left)
            text = f" {self.n}/{self.total} [{_clock(elapsed)}<{eta}, {rate:.1f} {self.unit}s/s]"
            width = max(10, _columns() - len(text) - 8)
            filled = int(fraction * width)
            return f"{100 * fraction:3.0f}%|{'#' * filled}{' ' * (width - filled)}|{text}"
        return f"{self.n} {self.unit}s [{timing}]"

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._write("\r" + self.line(now))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # the terminal went away: stop drawing


def _columns() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
