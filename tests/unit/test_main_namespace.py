"""A cluster worker's one ``__main__`` namespace for a script's functions sent by value (issue 15).

The script's functions are built here with ``exec`` in a dict named
``__main__`` (not this process's ``__main__``), pickled by value with
cloudpickle as the cluster engines send them, and unpickled separately, as
the initializer and each task arrive in a worker.
"""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from corral._engine.main_namespace import adopt, forget

pytestmark = pytest.mark.timeout(60)

SCRIPT = """
import math

def init(value):
    global G
    G = value

def get(x):
    return (globals().get("G"), x)

def helper():
    return G

def via_helper(x):
    return helper() + x + math.floor(0.5)
"""


def _script() -> dict:
    namespace = {"__name__": "__main__"}
    exec(compile(SCRIPT, "<script>", "exec"), namespace)
    return namespace


def _arrive(obj):
    """``obj`` as a worker gets it: pickled by value, unpickled on its own."""
    return pickle.loads(cloudpickle.dumps(obj))


def test_without_adopt_the_initializers_global_is_lost():
    script = _script()
    _arrive(script["init"])(42)
    assert _arrive(script["get"])(1) == (None, 1)  # what the backends did before


def test_an_initializers_global_reaches_tasks_and_their_helpers():
    script = _script()
    adopt(_arrive(script["init"]))(42)
    assert adopt(_arrive(script["get"]))(1) == (42, 1)
    assert adopt(_arrive(script["via_helper"]))(1) == 43
    adopt(_arrive(script["init"]))(7)  # a later call writes the same namespace
    assert adopt(_arrive(script["via_helper"]))(0) == 7


def test_functions_of_modules_and_other_objects_are_unchanged():
    assert adopt(pickle.dumps) is pickle.dumps
    assert adopt(len) is len
    assert adopt(42) == 42


def test_each_pool_has_its_own_namespace():
    first, second = _script(), _script()
    adopt(_arrive(first["init"]), "pool-a")(1)
    adopt(_arrive(second["init"]), "pool-b")(2)
    assert adopt(_arrive(first["get"]), "pool-a")(0) == (1, 0)
    assert adopt(_arrive(second["get"]), "pool-b")(0) == (2, 0)
    forget("pool-a")
    assert adopt(_arrive(first["get"]), "pool-a")(0) == (None, 0)  # a fresh namespace
