"""The worker-pool engine under ``corral.pool`` and ``corral.futures``.

``engine``   the engine thread: queue, dispatch, deaths, deadlines, stopping
``handles``  the engine's side of a worker (process or thread) and its channel
``worker``   the loop that runs inside a worker
``protocol`` the messages between them and how results are encoded
"""

from .engine import Engine, Task
from .handles import ProcessSpawner, ThreadSpawner
from .protocol import CALL, MAP, STARMAP, encode_call

__all__ = (
    "CALL",
    "MAP",
    "STARMAP",
    "Engine",
    "ProcessSpawner",
    "Task",
    "ThreadSpawner",
    "encode_call",
)
