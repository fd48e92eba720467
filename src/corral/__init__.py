"""corral: process-based parallelism, a drop-in replacement for ``multiprocessing``.

``import corral as multiprocessing`` works: the top level exposes the default
context's methods (``Process``, ``Pipe``, ``get_context``, ``set_start_method``,
``cpu_count``, ...) and the stdlib's exceptions, exactly as
``multiprocessing/__init__.py`` does. corral's own additions live in
``corral.errors`` and are documented where they appear.
"""

import sys as _sys

from . import context as _context

TYPE_CHECKING = False  # typing is not imported at run time (import speed)

__version__ = "0.1.0"

__all__ = tuple(name for name in dir(_context._default_context) if not name.startswith("_"))

globals().update((name, getattr(_context._default_context, name)) for name in __all__)

if TYPE_CHECKING:
    # Type checkers cannot follow the update above: the same names, spelled out,
    # so that ``corral.Pool(...)`` and the others have their real signatures.
    # The submodules are named as typeshed names the stdlib's, so that
    # ``corral.queues.Queue[int]`` is a known annotation after ``import corral``;
    # Process and the queues are the classes, as typeshed has them, so that they
    # can be subclassed and used in annotations (``corral.Queue[int]``); at run
    # time they are the default context's methods, which make the same objects.
    from . import connection as connection
    from . import context as context
    from . import managers as managers
    from . import pool as pool
    from . import process as process
    from . import queues as queues
    from . import reduction as reduction
    from . import sharedctypes as sharedctypes
    from . import synchronize as synchronize
    from .context import Process as Process
    from .errors import AuthenticationError as AuthenticationError
    from .errors import BufferTooShort as BufferTooShort
    from .errors import ProcessError as ProcessError
    from .errors import TimeoutError as TimeoutError
    from .futures import ProcessPoolExecutor as ProcessPoolExecutor
    from .queues import JoinableQueue as JoinableQueue
    from .queues import Queue as Queue
    from .queues import SimpleQueue as SimpleQueue

    Array = _context._default_context.Array
    Barrier = _context._default_context.Barrier
    BoundedSemaphore = _context._default_context.BoundedSemaphore
    Condition = _context._default_context.Condition
    Event = _context._default_context.Event
    Lock = _context._default_context.Lock
    Manager = _context._default_context.Manager
    Pipe = _context._default_context.Pipe
    Pool = _context._default_context.Pool
    RLock = _context._default_context.RLock
    RawArray = _context._default_context.RawArray
    RawValue = _context._default_context.RawValue
    Semaphore = _context._default_context.Semaphore
    Value = _context._default_context.Value
    active_children = _context._default_context.active_children
    allow_connection_pickling = _context._default_context.allow_connection_pickling
    cpu_count = _context._default_context.cpu_count
    current_process = _context._default_context.current_process
    freeze_support = _context._default_context.freeze_support
    get_all_start_methods = _context._default_context.get_all_start_methods
    get_context = _context._default_context.get_context
    get_logger = _context._default_context.get_logger
    get_start_method = _context._default_context.get_start_method
    log_to_stderr = _context._default_context.log_to_stderr
    parent_process = _context._default_context.parent_process
    reducer = _context._default_context.reducer
    set_executable = _context._default_context.set_executable
    set_forkserver_preload = _context._default_context.set_forkserver_preload
    set_start_method = _context._default_context.set_start_method

# corral's own errors, beside the stdlib names.
from .errors import TaskTimeoutError as TaskTimeoutError  # noqa: E402

if TYPE_CHECKING:  # imported on first use, by __getattr__ below
    from ._as_completed import as_completed as as_completed
    from ._commands import CommandFailedError as CommandFailedError
    from ._commands import CompletedCommand as CompletedCommand
    from ._commands import run_commands as run_commands
    from ._engine.insights import Insights as Insights
    from ._engine.insights import WorkerInsight as WorkerInsight
    from ._transfer import Shared as Shared
    from .errors import BrokenProcessPool as BrokenProcessPool
    from .errors import InitializerError as InitializerError
    from .errors import WorkerLostError as WorkerLostError
    from .errors import WorkerStartupError as WorkerStartupError
    from .futures import ProcessPoolExecutor as ProcessPoolExecutor
del TYPE_CHECKING  # not a public name (the stdlib's test__all__ checks dir())

# Names imported on first use: they pull in concurrent.futures (and logging),
# which would cost more than the rest of ``import corral``.
_LAZY = {
    "BrokenProcessPool": "errors",
    "InitializerError": "errors",
    "WorkerLostError": "errors",
    "WorkerStartupError": "errors",
    "ProcessPoolExecutor": "futures",
    "Shared": "_transfer",
    "run_commands": "_commands",
    "CompletedCommand": "_commands",
    "CommandFailedError": "_commands",
    "as_completed": "_as_completed",  # with progress= (issue 16)
    "Insights": "_engine.insights",  # what pool.insights() returns
    "WorkerInsight": "_engine.insights",
}


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        msg = f"module 'corral' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


SUBDEBUG = 5
SUBWARNING = 25

# Objects defined in the main script pickle as "__main__.x"; a spawned child
# imports the script as "__mp_main__", so both names must reach the same module.
if "__main__" in _sys.modules:
    _sys.modules["__mp_main__"] = _sys.modules["__main__"]
