"""One way to describe an error from another process (``corral.errors``'s helpers)."""

from __future__ import annotations

import pytest

from corral import errors
from corral._engine import protocol

pytestmark = pytest.mark.timeout(30)


class _BrokenRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr today")


def test_short_repr_cuts_long_text_and_survives_a_broken_repr():
    assert errors.short_repr([1, 2]) == "[1, 2]"
    long = errors.short_repr("x" * 1000)
    assert len(long) == 300 and long.endswith("...")
    assert errors.short_repr(_BrokenRepr()) == (
        "<_BrokenRepr object (repr failed: ValueError('no repr today'))>"
    )


def test_format_exception_text_is_the_whole_traceback():
    try:
        raise KeyError("lost")
    except KeyError as exc:
        text = errors.format_exception_text(exc)
    assert text.startswith("Traceback (most recent call last):\n")
    assert 'raise KeyError("lost")' in text and text.endswith("KeyError: 'lost'\n")


def test_remote_traceback_is_framed_as_the_stdlibs():
    cause = errors.remote_traceback("Traceback ...\nValueError: x\n")
    assert isinstance(cause, errors.RemoteTraceback)
    assert str(cause) == '\n"""\nTraceback ...\nValueError: x\n"""'


def test_attach_remote_traceback_chains_the_text_as_cause():
    exc = ValueError("bad")
    assert errors.attach_remote_traceback(exc, "remote text\n") is exc
    assert isinstance(exc.__cause__, errors.RemoteTraceback)
    assert exc.__suppress_context__  # printed as "the direct cause", as raise ... from
    assert "remote text" in str(exc.__cause__)
    untouched = ValueError("no text")
    assert errors.attach_remote_traceback(untouched, None).__cause__ is None
    assert errors.attach_remote_traceback(untouched, "").__cause__ is None


def test_the_engine_protocol_uses_the_same_helpers():
    assert protocol.short_repr is errors.short_repr
    assert protocol.format_exception_text is errors.format_exception_text
    assert protocol.with_cause is errors.attach_remote_traceback
