"""A cluster backend's context (issue 15): its Pool runs there, process objects are refused.

No cluster starts: as in test_backend_option, the registry's "dask" entry is a
toy engine from the contract, so what is checked is which engine a context's
pool asks for and the errors of what a cluster cannot provide.
"""

from __future__ import annotations

import pytest

import corral
from corral._backend_context import BackendContext
from corral.backends import Dask, Ray
from corral.errors import NotOnBackendError

from .test_backend_option import inline_dask  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(60)

REFUSED = [
    ("Process", (), r"a Process cannot be made by a dask backend context"),
    ("Queue", (), r"a Queue cannot"),
    ("JoinableQueue", (), r"a JoinableQueue cannot"),
    ("SimpleQueue", (), r"a SimpleQueue cannot"),
    ("Pipe", (), r"a Pipe cannot"),
    ("Lock", (), r"a Lock cannot"),
    ("RLock", (), r"an RLock cannot"),
    ("Condition", (), r"a Condition cannot"),
    ("Semaphore", (), r"a Semaphore cannot"),
    ("BoundedSemaphore", (), r"a BoundedSemaphore cannot"),
    ("Event", (), r"an Event cannot"),
    ("Barrier", (2,), r"a Barrier cannot"),
    ("Value", ("i", 1), r"a Value cannot"),
    ("Array", ("i", 3), r"an Array cannot"),
    ("RawValue", ("i", 1), r"a RawValue cannot"),
    ("RawArray", ("i", 3), r"a RawArray cannot"),
    ("Manager", (), r"a Manager cannot"),
]


@pytest.mark.parametrize(("factory", "args", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_what_needs_local_processes_is_refused_when_made(factory, args, message):
    ctx = BackendContext(Dask())
    with pytest.raises(NotOnBackendError, match=message) as caught:
        getattr(ctx, factory)(*args)
    assert isinstance(caught.value, NotImplementedError)
    assert "corral.get_context()" in str(caught.value)


@pytest.mark.parametrize("backend", [Dask(), Ray()], ids=["dask", "ray"])
def test_a_backend_gives_its_context_and_the_context_says_its_backend(backend):
    ctx = backend.get_context()
    assert isinstance(ctx, BackendContext)
    assert ctx.corral_backend is backend
    assert isinstance(ctx, corral.context.BaseContext)
    assert ctx.get_start_method() == backend.name
    assert issubclass(ctx.Process, corral.process.BaseProcess)
    assert ctx.get_context("spawn") is corral.get_context("spawn")  # this machine's, as usual


def test_pools_of_the_context_run_on_its_backend(inline_dask):  # noqa: F811
    ctx = Dask().get_context()
    with ctx.Pool() as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool._processes == 5  # the toy cluster's capacity
    with corral.pool.Pool(context=ctx) as pool:
        assert pool.apply(abs, (-3,)) == 3
    with corral.ProcessPoolExecutor(mp_context=ctx) as ex:
        assert ex.submit(pow, 2, 3).result(10) == 8
    assert [type(spec.backend) for spec in inline_dask] == [Dask, Dask, Dask]
