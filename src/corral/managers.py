"""Managers: a server process that owns objects, and proxies that use them.

This version provides the *declaration* half of the stdlib API, complete:
``BaseManager.register`` (typeids, callables, proxy types, exposed methods,
``method_to_typeid``, ``create_method``) and ``BaseProxy`` to subclass, so
programs and test suites that declare managers at import time load unchanged.
Starting or connecting a manager raises ``NotImplementedError`` until the
manager server lands (issue 6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ("BaseManager", "BaseProxy", "Token")

_NOT_YET = (
    "corral's manager server is not implemented yet (it is planned: issue 6); "
    "use multiprocessing.managers meanwhile"
)


class Token:
    """Identifies a shared object: its typeid, the manager's address, its id."""

    __slots__ = ("address", "id", "typeid")

    def __init__(self, typeid: str, address: Any, id: Any) -> None:
        self.typeid, self.address, self.id = typeid, address, id

    def __getstate__(self) -> tuple[str, Any, Any]:
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state: tuple[str, Any, Any]) -> None:
        self.typeid, self.address, self.id = state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(typeid={self.typeid!r}, "
            f"address={self.address!r}, id={self.id!r})"
        )


class BaseProxy:
    """Base class of proxies; subclasses list the methods they forward in ``_exposed_``."""

    _exposed_: Sequence[str] | None = None
    _method_to_typeid_: dict[str, str] | None = None

    def __init__(
        self,
        token: Token,
        serializer: str,
        manager: Any = None,
        authkey: bytes | None = None,
        exposed: Sequence[str] | None = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        raise NotImplementedError(_NOT_YET)

    def _callmethod(
        self, methodname: str, args: tuple[Any, ...] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        raise NotImplementedError(_NOT_YET)


class BaseManager:
    """Base class of managers: declare shared types with ``register``."""

    _registry: dict[str, tuple[Any, ...]] = {}

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        *,
        shutdown_timeout: float = 1.0,
    ) -> None:
        raise NotImplementedError(_NOT_YET)

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., Any] | None = None,
        proxytype: type | None = None,
        exposed: Sequence[str] | None = None,
        method_to_typeid: dict[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Declare a type the manager can create and share.

        Args:
            typeid: the name of the shared type (and of the creating method).
            callable: creates the object in the server; None on a client that
                only connects to a server which has it.
            proxytype: the proxy class (default: an auto-generated proxy).
            exposed: the methods the proxy may call (default: the proxy's
                ``_exposed_``, else all public methods).
            method_to_typeid: methods whose result is returned as a new proxy
                of the given typeid.
            create_method: add a method named ``typeid`` to the manager class.
        """
        if "_registry" not in cls.__dict__:
            cls._registry = dict(cls._registry)  # each subclass has its own
        if proxytype is None:
            proxytype = BaseProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in list(method_to_typeid.items()):
                if not (isinstance(key, str) and isinstance(value, str)):
                    msg = f"{key!r} is not a string"
                    raise TypeError(msg)
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        if create_method:

            def create(self: Any, *args: Any, **kwds: Any) -> Any:
                raise NotImplementedError(_NOT_YET)

            create.__name__ = typeid
            setattr(cls, typeid, create)
