"""The type variables of corral's generic classes (``Queue[T]``, ``AsyncResult[T]``, ...).

For a type checker it defaults to ``Any`` (PEP 696), so that ``q = corral.Queue()``
is a ``Queue[Any]`` and a bare ``Queue`` annotation passes ``mypy --strict``, where
the stdlib's stubs ask for a type annotation. The default exists only for the
checker: ``typing.TypeVar`` takes no ``default`` before Python 3.13, and
``typing_extensions`` is not a run-time dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ("RecvT", "SendT", "T")

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
    # What a Connection sends and receives (Connection[SendT, RecvT]).
    SendT = TypeVar("SendT", contravariant=True, default=Any)
    RecvT = TypeVar("RecvT", covariant=True, default=Any)
else:
    from typing import TypeVar

    T = TypeVar("T")
    SendT = TypeVar("SendT", contravariant=True)
    RecvT = TypeVar("RecvT", covariant=True)
