"""Contexts: which start method a ``Process`` (and every later factory) uses.

``get_context('fork' | 'spawn' | 'forkserver')`` returns a context whose
factories (``ctx.Process``, ``ctx.Pipe``, ...) all use that start method; the
top-level ``corral`` module is the *default* context, whose method is fixed by
``set_start_method`` or on first use. The context decides *which* start method;
``_popen_*`` decides *how* a child is started.

This is the public module, with every name where the stdlib's
``multiprocessing.context`` has it. The objects live in two private modules, so
that the layers below the front ends do not import this one:

* ``_contexts``: the context classes, the ``Process`` class of each start
  method, the default context and ``as_context`` (the ground floor);
* ``_factories``: the factory methods (``Lock()``, ``Queue()``, ``Pool()``,
  ``Manager()``, ...), each importing its layer when called;
* ``_spawning``: ``get_spawning_popen``, ``set_spawning_popen``, ``assert_spawning``.

The names here are those objects themselves (``corral.context._default_context
is corral._contexts._default_context``).
"""

from __future__ import annotations

# Every name is re-exported (``X as X``): the same objects, for users and type checkers.
from . import _contexts
from . import process as process
from ._contexts import BaseContext as BaseContext
from ._contexts import DefaultContext as DefaultContext
from ._contexts import ForkContext as ForkContext
from ._contexts import ForkProcess as ForkProcess
from ._contexts import ForkServerContext as ForkServerContext
from ._contexts import ForkServerProcess as ForkServerProcess
from ._contexts import Process as Process
from ._contexts import SpawnContext as SpawnContext
from ._contexts import SpawnProcess as SpawnProcess
from ._contexts import _all_start_methods as _all_start_methods
from ._contexts import _concrete_contexts as _concrete_contexts
from ._contexts import _default_context as _default_context
from ._contexts import _default_method as _default_method
from ._contexts import _force_start_method as _force_start_method
from ._contexts import _is_stdlib_context as _is_stdlib_context
from ._contexts import as_context as as_context
from ._spawning import _tls as _tls
from ._spawning import assert_spawning as assert_spawning
from ._spawning import get_spawning_popen as get_spawning_popen
from ._spawning import set_spawning_popen as set_spawning_popen
from .errors import AuthenticationError as AuthenticationError
from .errors import BufferTooShort as BufferTooShort
from .errors import ProcessError as ProcessError
from .errors import TimeoutError as TimeoutError

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    from . import reduction as reduction  # at run time: __getattr__ below

__all__ = (
    "BaseContext",
    "DefaultContext",
    "ForkContext",
    "ForkServerContext",
    "SpawnContext",
)


def __getattr__(name: str) -> object:
    # ``reduction`` is read from the contexts' module each time: setting a
    # context's ``reducer`` replaces it there, and this name must follow.
    if name in ("reduction", "_reduction_module"):
        return getattr(_contexts, name)
    msg = f"module 'corral.context' has no attribute {name!r}"
    raise AttributeError(msg)
