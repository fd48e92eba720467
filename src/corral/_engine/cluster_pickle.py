"""A task pickled for a cluster worker (Ray, Dask): corral's pickle, or by value.

A cluster worker's ``__main__`` is the cluster's own script, never the user's,
so a task that refers to the user's script (its functions, lambdas, classes)
travels by value (cloudpickle). Either way the big buffers (NumPy arrays...)
stay out of the pickle, as views of the caller's memory, for the backend to
place in its store. ``main_namespace`` is the worker's side of the by-value
functions.
"""

from __future__ import annotations

from typing import Any

from .. import reduction

__all__ = ("dumps_for_cluster",)


def dumps_for_cluster(obj: Any, min_size: int, cluster: str) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``; return the pickle and its buffers of ``min_size`` bytes or more.

    ``cluster`` names the cluster in the error message ("Ray", "the Dask cluster").
    Shared handles in ``obj`` may be met twice (a second, by-value pass): their
    ``__reduce__`` must give a handle met again the index it got the first time.

    Raises:
        SerializationError: something in ``obj`` cannot be pickled.
    """
    payload, buffers = reduction.dumps_with_buffers(obj, min_size)
    if b"__main__" not in payload:
        return bytes(payload), buffers
    import cloudpickle

    from ..errors import SerializationError

    buffers = []

    def out_of_band(buffer: Any) -> bool:  # False: out of the pickle
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: in the pickle
            return True
        if view.nbytes < min_size:
            return True
        buffers.append(view)
        return False

    try:
        return bytes(cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band)), buffers
    except Exception as exc:
        msg = f"the task cannot be pickled for {cluster}: {exc}"
        raise SerializationError(msg) from exc
