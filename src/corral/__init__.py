"""corral: process-based parallelism, a drop-in replacement for ``multiprocessing``.

``import corral as multiprocessing`` works: the top level exposes the default
context's methods (``Process``, ``Pipe``, ``get_context``, ``set_start_method``,
``cpu_count``, ...) and the stdlib's exceptions, exactly as
``multiprocessing/__init__.py`` does. corral's own additions live in
``corral.errors`` and are documented where they appear.
"""

import sys as _sys

from . import context as _context

__version__ = "0.1.0"

__all__ = tuple(name for name in dir(_context._default_context) if not name.startswith("_"))

globals().update((name, getattr(_context._default_context, name)) for name in __all__)

# corral's own errors, beside the stdlib names.
from .errors import TaskTimeoutError as TaskTimeoutError  # noqa: E402

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:  # imported on first use, by __getattr__ below
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
