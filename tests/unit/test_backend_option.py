"""``backend=`` on Pool and ProcessPoolExecutor (issue 15): how it reaches the engine.

No cluster starts here: the registry entry for "dask" is pointed at a toy engine
from the contract (``InlineEngine``), so what is checked is the plumbing — the
front ends pass the backend in ``EngineSpec.backend``, ``start_engine`` picks the
implementation by the backend's name, a cluster's capacity becomes the pool's
size — and the errors a user meets.
"""

from __future__ import annotations

import sys

import pytest

import corral
import corral._engine as engine_package
from corral._engine import EngineSpec, start_engine
from corral.backends import Dask, Ray, as_backend
from corral.pool import ThreadPool

from .test_engine_contract import InlineEngine

pytestmark = pytest.mark.timeout(60)

specs: list[EngineSpec] = []


def start_inline(spec: EngineSpec) -> InlineEngine:
    """A registry entry: the toy engine, with 5 workers when asked for the capacity (0)."""
    specs.append(spec)
    if spec.workers == 0:
        spec.workers = 5
    return InlineEngine(spec)


@pytest.fixture
def inline_dask(monkeypatch):
    monkeypatch.setitem(engine_package._REGISTRY, "dask", f"{__name__}:start_inline")
    specs.clear()
    return specs


@pytest.fixture
def inline_ray(monkeypatch):
    monkeypatch.setitem(engine_package._REGISTRY, "ray", f"{__name__}:start_inline")
    specs.clear()
    return specs


@pytest.mark.parametrize("backend", ["dask", Dask()])
def test_pool_and_executor_hand_the_backend_to_the_registry(inline_dask, backend):
    with corral.Pool(backend=backend) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool._processes == 5  # the cluster's capacity
    with corral.ProcessPoolExecutor(backend=backend) as ex:
        assert ex.submit(pow, 2, 3).result(10) == 8
        assert ex._max_workers == 5
    with corral.get_context("spawn").Pool(2, backend=backend) as pool:
        assert pool.apply(abs, (-3,)) == 3
        assert pool._processes == 2
    assert [type(spec.backend) for spec in inline_dask] == [Dask, Dask, Dask]
    assert [spec.workers for spec in inline_dask] == [5, 5, 2]


@pytest.mark.parametrize("backend", ["ray", Ray(), Ray(address="10.0.0.5:6379")])
def test_ray_reaches_the_registry_like_dask(inline_ray, backend):
    with corral.Pool(backend=backend) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool._processes == 5
    with corral.ProcessPoolExecutor(backend=backend) as ex:
        assert ex.submit(pow, 2, 3).result(10) == 8
    assert [type(spec.backend) for spec in inline_ray] == [Ray, Ray]
    assert [spec.workers for spec in inline_ray] == [5, 5]
    if isinstance(backend, Ray):
        assert inline_ray[0].backend is backend


@pytest.mark.parametrize(
    ("remote_args", "error", "message"),
    [
        ({"max_retries": 3}, ValueError, r"may not set 'max_retries': corral never lets Ray rerun"),
        ({"retry_exceptions": True}, ValueError, r"may not set 'retry_exceptions'"),
        ({"max_restarts": -1}, ValueError, r"may not set 'max_restarts'"),
        ({"max_task_retries": 2}, ValueError, r"may not set 'max_task_retries'"),
        ({"max_calls": 2}, ValueError, r"'max_calls'; use maxtasksperchild"),
        ([("num_cpus", 1)], TypeError, r"remote_args must be a dict of Ray task options"),
        ({"bogus_opt": 1}, ValueError, r"'bogus_opt'.*accepted options are: .*num_cpus"),
        ({"name": "w"}, ValueError, r"'name', which corral does not pass"),
    ],
)
def test_ray_refuses_the_task_options_corral_owns(remote_args, error, message):
    with pytest.raises(error, match=message):
        Ray(remote_args=remote_args)


def test_ray_keeps_the_options_it_is_given():
    backend = Ray(address="auto", remote_args={"num_cpus": 0.5, "resources": {"gpu_box": 1}})
    assert backend.remote_args == {"num_cpus": 0.5, "resources": {"gpu_box": 1}}
    assert "address='auto'" in repr(backend)
    assert as_backend(backend) is backend


def test_no_backend_means_the_local_process_engine():
    assert as_backend(None) == as_backend("process") == "process"
    with corral.Pool(1) as pool:
        assert pool.apply(abs, (-1,)) == 1
        assert len(pool._pool) == 1


def test_start_engine_picks_by_the_backend_objects_name(monkeypatch):
    class Elsewhere:
        name = "elsewhere"

    monkeypatch.setitem(engine_package._REGISTRY, "elsewhere", f"{__name__}:start_inline")
    specs.clear()
    engine = start_engine(EngineSpec(3, backend=Elsewhere()))
    assert isinstance(engine, InlineEngine)
    assert engine.size == 3
    with pytest.raises(ValueError, match="unknown engine backend 'nowhere'"):
        start_engine(EngineSpec(1, backend="nowhere"))


@pytest.mark.parametrize(
    ("backend", "error", "message"),
    [
        ("nosuch", ValueError, r"unknown backend 'nosuch'; expected one of process, dask, ray"),
        (42, TypeError, r"backend must be None, a name or a corral.backends object, not int"),
    ],
)
def test_bad_backends_are_rejected_before_anything_starts(backend, error, message):
    with pytest.raises(error, match=message):
        corral.Pool(1, backend=backend)
    with pytest.raises(error, match=message):
        corral.ProcessPoolExecutor(1, backend=backend)


def test_threadpool_rejects_a_backend():
    with pytest.raises(ValueError, match=r"ThreadPool .*takes no backend.*corral\.Pool\(backend="):
        ThreadPool(1, backend="dask")


def test_dask_takes_a_client_or_an_address_not_both():
    with pytest.raises(ValueError, match="not both"):
        Dask(client=object(), address="tcp://127.0.0.1:8786")


def test_a_missing_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    monkeypatch.delitem(sys.modules, "corral._engine.dask_engine", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'corral\[dask\]'"):
        corral.Pool(1, backend="dask")
    with pytest.raises(ImportError, match=r"pip install 'corral\[dask\]'"):
        corral.ProcessPoolExecutor(backend=Dask()).submit(abs, 1)


def test_a_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import fails
    for name in ("corral._engine.ray_engine", "corral._engine.ray_cluster"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=r"pip install 'corral\[ray\]'"):
        corral.Pool(1, backend="ray")
    with pytest.raises(ImportError, match=r"pip install 'corral\[ray\]'"):
        corral.ProcessPoolExecutor(backend=Ray()).submit(abs, 1)
