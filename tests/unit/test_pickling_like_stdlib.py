"""Objects cross as with the stdlib's ForkingPickler: same types back, same errors.

Each object of the table goes through corral's pickler and through
``multiprocessing.reduction.ForkingPickler.dumps``: what the stdlib pickles
comes back with the same type (and value), what it refuses fails with the same
exception type whose message starts with the stdlib's. corral only adds
functions and classes the child cannot import by name (lambdas, closures, local
classes, ``__main__`` definitions), and modules, which go by value.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import io
import logging
import multiprocessing.managers  # registers dict views as lists, as corral.managers does
import multiprocessing.reduction
import os
import pickle
import re
import sys
import threading
import types
import weakref

import pytest

import corral.managers  # noqa: F401  (registers dict views as lists)
from corral import reduction
from corral.errors import SerializationError

stdlib_dumps = multiprocessing.reduction.ForkingPickler.dumps


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


Pair = collections.namedtuple("Pair", "a b")


class RaisesInReduce:
    def __reduce__(self):
        msg = "this object refuses to be pickled"
        raise ValueError(msg)


class ReduceReturnsGarbage:
    def __reduce__(self):
        return 42


class Holder:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Holder and other.value == self.value

    def method(self):
        return self.value


def _generator():
    yield 1


def _open_files(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("contents")
    return [open(path), open(path, "rb"), open(path, "rb", buffering=0)]


def picklable_objects():
    """Objects the stdlib pickles: corral must give back the same type and value."""
    holder = Holder(3)
    return {
        "dict": {"a": [1, 2.5, b"x", None]},
        "ordered dict": collections.OrderedDict(a=1),
        "defaultdict": collections.defaultdict(list, a=[1]),
        "deque": collections.deque([1, 2], maxlen=5),
        "counter": collections.Counter("abca"),
        "set and frozenset": ({1, 2}, frozenset({3})),
        "bytearray": bytearray(b"abc"),
        "range and slice": (range(1, 10, 2), slice(1, 5)),
        "complex": 1 + 2j,
        "decimal and fraction": (decimal.Decimal("1.5"), fractions.Fraction(1, 3)),
        "datetime": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "enum member": Color.RED,
        "dataclass": Point(1, 2),
        "namedtuple": Pair(1, 2),
        "simple namespace": types.SimpleNamespace(a=1),
        "partial of a module function": functools.partial(int, base=2),
        "bound method": holder.method,
        "builtin function and class": (len, int, Holder),
        "module-level function": _generator,
        "compiled regex": re.compile(r"a+b"),
        "array": array.array("i", [1, 2]),
        "exception": ValueError("bad value", 3),
        "BytesIO and StringIO": (io.BytesIO(b"bytes"), io.StringIO("text")),
        "logger": logging.getLogger("corral.test"),
        "dict views as lists (managers imported)": ({1: 2}.keys(), {1: 2}.values(), {1: 2}.items()),
        "recursive list": (lambda lst: (lst.append(lst), lst)[1])([]),
        "singletons": (None, Ellipsis, NotImplemented, type(None)),
    }


def refused_objects(tmp_path):
    """Objects the stdlib refuses: corral must fail the same way."""
    lock = threading.Lock()
    return {
        "open files": _open_files(tmp_path),
        "thread lock": lock,
        "thread rlock": threading.RLock(),
        "condition": threading.Condition(),
        "event": threading.Event(),
        "lock inside a dict": {"ok": 1, "bad": [1, lock]},
        "generator": _generator(),
        "ordered dict views": collections.OrderedDict(a=1).values(),
        "mappingproxy": types.MappingProxyType({"a": 1}),
        "memoryview": memoryview(b"abc"),
        "weakref": weakref.ref(Holder),
        "WeakSet": weakref.WeakSet([Holder]),
        "code object": _generator.__code__,
        "property": property(lambda self: 1),
        "__reduce__ raising": RaisesInReduce(),
        "__reduce__ returning garbage": ReduceReturnsGarbage(),
        "stdout": sys.stdout,
    }


def _flatten(value):
    return value if isinstance(value, list) else [value]


def _same_value(ours, theirs):
    """The same pickle again (types without equality: bound methods, BytesIO...)."""
    return pickle.dumps(ours) == pickle.dumps(theirs)


@pytest.mark.parametrize("name", sorted(picklable_objects()))
def test_picklable_objects_arrive_with_the_stdlib_type(name):
    obj = picklable_objects()[name]
    theirs = pickle.loads(stdlib_dumps(obj))
    for ours in (pickle.loads(reduction._dumps(obj)), pickle.loads(reduction._slow_dumps(obj, 5))):
        assert type(ours) is type(theirs)
        if isinstance(theirs, tuple):
            assert [type(x) for x in ours] == [type(x) for x in theirs]
        assert _same_value(ours, theirs)


@pytest.mark.parametrize(
    "name",
    [
        "open files",
        "thread lock",
        "thread rlock",
        "condition",
        "event",
        "lock inside a dict",
        "generator",
        "ordered dict views",
        "mappingproxy",
        "memoryview",
        "weakref",
        "WeakSet",
        "code object",
        "property",
        "__reduce__ raising",
        "__reduce__ returning garbage",
        "stdout",
    ],
)
def test_refused_objects_fail_as_with_the_stdlib(name, tmp_path):
    objects = refused_objects(tmp_path)[name]
    try:
        for obj in _flatten(objects):
            with pytest.raises(Exception) as theirs:
                stdlib_dumps(obj)
            for dumps in (reduction._dumps, reduction.ForkingPickler.dumps):
                with pytest.raises(Exception) as ours:
                    dumps(obj)
                assert isinstance(ours.value, type(theirs.value)), (ours.value, theirs.value)
                assert str(ours.value).startswith(str(theirs.value))
                if isinstance(theirs.value, (TypeError, pickle.PicklingError)):
                    assert isinstance(ours.value, SerializationError)
                else:  # raised by the object itself: passed through untouched
                    assert type(ours.value) is type(theirs.value)
    finally:
        for obj in _flatten(objects):
            if isinstance(obj, io.IOBase) and obj is not sys.stdout:
                obj.close()


def test_a_file_inside_a_lambda_is_refused_too(tmp_path):
    """A by-value function's globals and cells pickle as everything else."""
    (tmp_path / "f").write_text("x")
    refused = pytest.raises(SerializationError, match=r"^cannot pickle '_io.TextIOWrapper' object")
    with open(tmp_path / "f") as f, refused:
        reduction._dumps(lambda: f.read())
    view = {1: 2}.values()
    assert type(pickle.loads(reduction._dumps(lambda: view)).__closure__[0].cell_contents) is list


def _make_closures():
    offset = 10

    def outer(x):
        def inner(y):
            return x + y + offset

        return inner

    class Local:
        def __init__(self, n):
            self.n = n

        def twice(self):
            return self.n * 2

    return outer(1), Local


def _main_function():
    """A function whose module is ``__main__`` but that ``__main__`` does not have."""
    namespace = {"__name__": "__main__"}
    exec("def in_main(x):\n    return x * 5\n", namespace)
    return namespace["in_main"]


def test_corral_carries_what_a_child_cannot_import_by_name():
    closure, local_class = _make_closures()
    in_main = _main_function()
    holder = Holder(lambda: "from a lambda")
    cases = {
        "lambda": (lambda x: x * 3, lambda f: f(2) == 6),
        "nested closure": (closure, lambda f: f(2) == 13),
        "local class": (local_class, lambda cls: cls(4).twice() == 8),
        "local class instance": (local_class(5), lambda obj: obj.twice() == 10),
        "__main__ function": (in_main, lambda f: f(2) == 10),
        "object referencing a lambda": (holder, lambda obj: obj.value() == "from a lambda"),
        "defaultdict with a lambda factory": (
            collections.defaultdict(lambda: 7),
            lambda d: type(d) is collections.defaultdict and d["x"] == 7,
        ),
        "module": (os, lambda module: module is os),
    }
    for name, (obj, works) in cases.items():
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            stdlib_dumps(obj)
        assert works(pickle.loads(reduction._dumps(obj))), name


def test_an_object_by_value_keeps_its_identity_within_one_pickle():
    fn = lambda: 1  # noqa: E731
    _, local_class = _make_closures()
    first, second, cls = pickle.loads(reduction._dumps([fn, fn, local_class]))[:3]
    assert first is second
    assert cls(3).twice() == 6
    instances = pickle.loads(reduction._dumps([local_class(1), local_class(2)]))
    assert type(instances[0]) is type(instances[1])
