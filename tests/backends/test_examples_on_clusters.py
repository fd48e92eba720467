"""The guide's cluster recipe (examples/on_a_cluster.py) on Ray and on Dask, unchanged."""

from __future__ import annotations

import pytest

from tests.integration.test_examples import run_example

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("backend", ["ray", "dask"])
def test_on_a_cluster(backend):
    lines = run_example("on_a_cluster", backend, timeout=240).splitlines()
    assert lines == [
        "the error came back as LinAlgError: Singular matrix",
        f"400 column norms on the {backend} backend",
    ]
