"""Every API taking a context reads it through ``context.as_context`` (no process is started)."""

from __future__ import annotations

import multiprocessing
import unittest.mock

import pytest

import corral
from corral import context, managers, queues, sharedctypes, synchronize
from corral.futures import ProcessPoolExecutor
from corral.pool import Pool


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_stdlib_context_stands_for_corrals_context_of_its_start_method(method):
    assert context.as_context(multiprocessing.get_context(method)) is corral.get_context(method)


def test_corral_contexts_and_none_pass_through():
    spawn = corral.get_context("spawn")
    assert context.as_context(spawn) is spawn
    assert context.as_context(None) is corral.get_context()


def test_modules_standing_for_the_default_context_are_accepted():
    default = corral.get_context()
    assert context.as_context(corral) is default
    assert context.as_context(multiprocessing).get_start_method() in ("fork", "spawn", "forkserver")


def test_a_context_of_the_callers_own_making_is_used_as_it_is():
    class FailingProcess:
        def __init__(self, **kwargs):
            self.started = False

        def start(self):
            msg = "induced start failure"
            raise OSError(msg)

    own = unittest.mock.MagicMock(Process=FailingProcess)
    assert context.as_context(own) is own
    # CPython's TestPoolNotLeakOnFailure passes such a mock to Pool.
    with pytest.raises(OSError, match="induced start failure"):
        Pool(2, context=own)


WRONG = ["spawn", 3, object()]


@pytest.mark.parametrize("wrong", WRONG, ids=repr)
@pytest.mark.parametrize(
    ("api", "argument"),
    [
        (lambda c: Pool(1, context=c), "context"),
        (lambda c: ProcessPoolExecutor(1, mp_context=c), "mp_context"),
        (lambda c: managers.BaseManager(ctx=c), "ctx"),
        (lambda c: managers.SyncManager(ctx=c), "ctx"),
        (lambda c: managers.SharedMemoryManager(ctx=c), "ctx"),
        (lambda c: queues.Queue(ctx=c), "ctx"),
        (lambda c: queues.JoinableQueue(ctx=c), "ctx"),
        (lambda c: queues.SimpleQueue(ctx=c), "ctx"),
        (lambda c: synchronize.Lock(ctx=c), "ctx"),
        (lambda c: synchronize.Condition(ctx=c), "ctx"),
        (lambda c: synchronize.Event(ctx=c), "ctx"),
        (lambda c: synchronize.Barrier(2, ctx=c), "ctx"),
        (lambda c: sharedctypes.Value("i", ctx=c), "ctx"),
        (lambda c: sharedctypes.Array("i", 2, ctx=c), "ctx"),
    ],
    ids=[
        "Pool",
        "ProcessPoolExecutor",
        "BaseManager",
        "SyncManager",
        "SharedMemoryManager",
        "Queue",
        "JoinableQueue",
        "SimpleQueue",
        "Lock",
        "Condition",
        "Event",
        "Barrier",
        "Value",
        "Array",
    ],
)
def test_a_wrong_object_is_a_type_error_at_the_call(api, argument, wrong):
    with pytest.raises(TypeError, match=rf"^{argument} must be a multiprocessing context"):
        api(wrong)
