"""Recipe: the same pool on this machine, a Ray cluster or a Dask cluster
(docs/guide.md, "Moving to a cluster").

Without an address the backend finds a cluster (``RAY_ADDRESS``, Dask's
configured scheduler, a session already open) or starts a local one, and stops
what it started when the pool ends.

Run: python examples/on_a_cluster.py [process|ray|dask]
     (ray and dask need ``pip install 'corral[ray]'`` / ``'corral[dask]'``)
"""

from __future__ import annotations

import sys

import numpy as np

import corral


def column_norms(matrix: np.ndarray, columns: range) -> list[float]:
    """The Euclidean norm of each of ``columns`` of ``matrix``."""
    return [float(np.linalg.norm(matrix[:, c])) for c in columns]


def main(backend: str) -> None:
    matrix = np.random.default_rng(1).random((2_000, 400))
    parts = [range(c, c + 50) for c in range(0, 400, 50)]
    with corral.Pool(2, backend=backend) as pool:  # backend="process" is the default
        handle = pool.share(matrix)  # once into the cluster's object store
        per_part = pool.starmap(column_norms, [(handle, p) for p in parts])
        norms = [n for part in per_part for n in part]
        try:
            pool.apply(np.linalg.inv, (np.zeros((2, 2)),))  # errors keep their type
        except np.linalg.LinAlgError as exc:
            print(f"the error came back as {type(exc).__name__}: {exc}")
    assert np.allclose(norms, np.linalg.norm(matrix, axis=0))
    print(f"{len(norms)} column norms on the {backend} backend")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "process")
