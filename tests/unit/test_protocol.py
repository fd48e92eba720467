"""How tasks are encoded: function references are pickled once, never stale."""

from __future__ import annotations

import sys
import types

import pytest

from corral._engine import protocol

pytestmark = pytest.mark.timeout(30)


def _roundtrip(fn, args=(), kwargs=None):
    payload, transfer = protocol.encode_call(fn, args, kwargs or {})
    assert transfer is None  # small: nothing travels beside the pickle
    return payload, protocol.PickleCodec.decode_task(payload)


def test_an_importable_function_travels_as_a_reused_reference():
    payload, (fn, args, kwargs) = _roundtrip(divmod, (7, 2))
    assert isinstance(payload, tuple)
    assert fn is divmod and args == (7, 2) and kwargs == {}
    again, _ = _roundtrip(divmod, (1, 1))
    assert again[0] is payload[0]  # the same pickle, not a new one


def test_closures_and_lambdas_are_pickled_whole_each_time():
    counter = [0]

    def closure(x):
        return x + counter[0]

    for value in (1, 2):
        counter[0] = value
        payload, (fn, args, _kw) = _roundtrip(closure, (10,))
        assert isinstance(payload, bytes)
        assert fn(*args) == 10 + value  # the current captured value, never a stale one
    payload, (fn, _args, _kw) = _roundtrip(lambda: 5)
    assert isinstance(payload, bytes) and fn() == 5


def test_a_function_rebound_in_its_module_is_not_sent_by_its_old_name():
    module = types.ModuleType("corral_test_rebound")
    sys.modules[module.__name__] = module
    try:
        exec("def f():\n    return 'old'\n", module.__dict__)
        old = module.f
        payload, (fn, _a, _k) = _roundtrip(old)
        assert isinstance(payload, tuple) and fn() == "old"
        exec("def f():\n    return 'new'\n", module.__dict__)
        _payload, (fn, _a, _k) = _roundtrip(old)
        assert fn() == "old"  # pickled by value now, as pickle itself would insist
        payload, _transfer = protocol.encode_call(module.f, (), {})
        assert isinstance(payload, tuple)
        protocol._loaded.clear()  # a worker that has not loaded f before
        fn, _a, _k = protocol.PickleCodec.decode_task(payload)
        assert fn() == "new"
    finally:
        del sys.modules[module.__name__]


def test_unpicklable_arguments_still_fail_in_the_caller():
    import threading

    with pytest.raises(Exception, match="lock"):
        protocol.encode_call(divmod, (threading.Lock(),), {})
