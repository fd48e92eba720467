"""The HMAC handshake: modern and legacy forms, and malformed input."""

from __future__ import annotations

import hmac

import pytest

from corral import _handshake
from corral.errors import AuthenticationError

KEY = b"key"


def test_modern_challenge_is_sha256():
    steps = _handshake.deliver_steps(KEY)
    frame, wants_reply = next(steps)
    assert wants_reply
    assert frame.startswith(_handshake.CHALLENGE + b"{sha256}")
    message = frame[len(_handshake.CHALLENGE) :]
    assert len(message) == len(b"{sha256}") + _handshake.MESSAGE_LENGTH
    response = _handshake.make_response(KEY, message)
    assert response.startswith(b"{sha256}")
    assert steps.send(response) == (_handshake.WELCOME, False)


def test_legacy_md5_both_ways():
    legacy_challenge = b"x" * 20  # what Python <= 3.11 sends
    response = _handshake.make_response(KEY, legacy_challenge)
    assert response == hmac.new(KEY, legacy_challenge, "md5").digest()
    # A legacy client answers our modern challenge with a bare 16-byte MD5.
    message = b"{sha256}" + b"y" * 40
    assert _handshake.verify_response(KEY, message, hmac.new(KEY, message, "md5").digest())


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b"{sha256}short",
        b"{nope}" + b"x" * 32,
        b"x" * 33,
        b"{sha256}" + b"\0" * 32,
    ],
)
def test_bad_responses_are_rejected(response):
    assert not _handshake.verify_response(KEY, b"{sha256}" + b"m" * 40, response)


def test_failure_is_reported_then_raised():
    steps = _handshake.deliver_steps(KEY)
    next(steps)
    assert steps.send(b"wrong") == (_handshake.FAILURE, False)
    with pytest.raises(AuthenticationError, match="digest received was wrong"):
        steps.send(None)


def test_answer_requires_a_challenge():
    steps = _handshake.answer_steps(KEY)
    next(steps)
    with pytest.raises(AuthenticationError, match="expected challenge"):
        steps.send(b"hello")


def test_authkey_must_be_bytes():
    with pytest.raises(ValueError, match="Authkey must be bytes"):
        _handshake.check_authkey_type("text")
