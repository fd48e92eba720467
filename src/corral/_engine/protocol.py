"""What the engine and its workers say to each other.

Engine -> worker: one message is a list of task tuples ``(task_id, kind, payload)``
(``kind`` is CALL, MAP or STARMAP), ``None`` meaning "finish and exit", or
``REVOKE_MARK`` (see "Taking tasks back" below).

Worker -> engine: one message is a list of records ``(status, task_id, a, b)``:

========== ======================================= ==========================
status     a                                       b
========== ======================================= ==========================
OK         the result (pickled for processes)      the worker's counters, or None
RAISED     the exception (pickled for processes)   worker traceback text
UNSENDABLE (type name, repr, reason)               worker traceback text
UNREADABLE (type name, message)                    worker traceback text
EXITING    exit code the task asked for            --
INIT_FAIL  (type name, message)                    initializer traceback text
RETIRING   --                                      the worker's counters
RECEIVED   tasks read from the channel so far      --
           (task_id = the last task of the batch just read)
READY      --  (the initializer ran: the worker can run tasks)
REVOKED    --  (the worker has read up to REVOKE_MARK)
PROGRESS   items of the running chunk finished     --
========== ======================================= ==========================

For process workers each result and exception is pickled on its own inside the
record, so that one object the parent cannot unpickle fails only its own task;
the record list itself holds only builtins and is unpickled safely.
RECEIVED lets the engine tell a task the worker was running when it died
(fails) from one still sitting unread in a dead worker's socket (requeued).
READY tells the engine the worker survived its start-up (the circuit breaker
counts workers that die before it). Thread workers (``ThreadPool``) pass
objects as they are.

Taking tasks back. The engine may send a worker a few tasks ahead (prefetch),
and a task sent ahead must not wait behind one that hangs while another worker
is idle. Each worker has a *permit* semaphore: the engine posts one permit per
task before sending it, and the worker takes one (without blocking) before it
starts each task. To take back the tasks a worker has not started, the engine
takes as many permits as it can (never more than all but the oldest task it
holds): since the worker runs its tasks in order and always takes a permit
first, the last ``k`` tasks sent are exactly the ones that will never find a
permit. The engine requeues them and sends ``REVOKE_MARK``; a worker that
finds no permit drops the task and everything after it up to the mark,
answers REVOKED, and only then gets new tasks.

Progress and counters (issue 16). A MAP/STARMAP task sent with
``kind | REPORT_PROGRESS`` runs in growing sub-batches, and the worker sends
``(PROGRESS, task_id, items done so far, None)`` at most every
``PROGRESS_INTERVAL`` seconds while it runs. An OK record's ``b`` carries the
worker's cumulative counters (``WorkerCounters`` order: tasks, items,
unpickling ns, busy ns, pickling ns, bytes in, bytes out) when the worker is
about to wait for work or every ``COUNTERS_INTERVAL`` seconds; the engine keeps
the latest, so they cost one attribute store per record that has them.
"""

from __future__ import annotations

import array
import pickle
import socket
import sys
import types
from typing import Any

from .. import _transfer, reduction
from ..errors import (
    MaybeEncodingError,
    ResultUnpicklingError,
    TaskUnpicklingError,
    format_exception_text,
    short_repr,
)
from ..errors import attach_remote_traceback as with_cause
from .contract import CALL, MAP, STARMAP  # noqa: F401  (task kinds, re-exported)

# Record statuses.
OK = 0
RAISED = 1
UNSENDABLE = 2
UNREADABLE = 3
EXITING = 4
INIT_FAIL = 5
RETIRING = 6
RECEIVED = 7
READY = 8
REVOKED = 9
PROGRESS = 10

# Engine -> worker: a task kind with this bit reports PROGRESS records as it runs.
REPORT_PROGRESS = 0x10
PROGRESS_INTERVAL = 0.1  # seconds between a running chunk's PROGRESS records
COUNTERS_INTERVAL = 0.05  # seconds between counters on the records of a busy worker

# Engine -> worker: "the tasks you have not found a permit for end here".
REVOKE_MARK = "revoke"

# Descriptors one frame may carry (Linux's SCM_MAX_FD). A read stops after a
# frame that brings descriptors, so this is also all one read may bring.
MAX_FDS = 253
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


def collect_fds(ancdata: list[tuple[int, int, bytes]], into: Any) -> None:
    """Append the descriptors of ``SCM_RIGHTS`` ancillary data to the deque ``into``, in order."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            into.extend(fds)


# Pickling a function by reference (module + name) costs more than pickling a
# few small arguments, on both sides: the pickler checks that the name still
# leads to the function, the unpickler imports and looks it up. So a function
# that pickles as a plain reference is pickled once and its pickle reused; it
# travels as (reference, pickle of (args, kwargs)). Only plain functions,
# builtins and classes qualify (their pickle holds no state that could change);
# a reused reference is checked to still name the same object, as pickle does.
# Lambdas, closures, bound methods and partials are pickled whole each time.
_CACHEABLE = (types.FunctionType, types.BuiltinFunctionType, type)
_CACHE_LIMIT = 256
_references: dict[Any, tuple[bytes, Any, list[str]]] = {}


def encode_call(fn: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
    """Pickle one task's function and arguments (in the caller, so errors surface there).

    Returns ``(payload, transfer)``: ``transfer`` is None, or the
    ``_transfer.Outgoing`` whose descriptors must travel with the payload
    (big buffers in shared memory, shared objects).
    """
    if type(fn) in _CACHEABLE or isinstance(fn, type):
        cached = _references.get(fn)
        if cached is not None and _still_named(fn, cached[1], cached[2]):
            rest, transfer = _transfer.dumps((args, kwargs))
            return (cached[0], rest), transfer
        reference = _reference(fn)
        if reference is not None:
            rest, transfer = _transfer.dumps((args, kwargs))
            return (reference, rest), transfer
    return _transfer.dumps((fn, args, kwargs))


def _reference(fn: Any) -> bytes | None:
    """fn's pickle if it is a plain reference (and remember it), else None."""
    try:
        data = reduction.ForkingPickler.dumps(fn)
        if data != pickle.dumps(fn, reduction.PROTOCOL):
            return None  # pickled by value (defined in a __main__ children cannot import)
    except Exception:
        return None  # encode_call pickles it again and reports the error
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    qualname = getattr(fn, "__qualname__", "")
    if module is None or "<" in qualname:
        return None
    if len(_references) >= _CACHE_LIMIT:
        _references.clear()
    _references[fn] = (data, module, qualname.split("."))
    return data


def _still_named(fn: Any, module: Any, path: list[str]) -> bool:
    obj = module
    for name in path:
        obj = getattr(obj, name, None)
    return obj is fn


_loaded: dict[bytes, Any] = {}  # in a worker: function references already unpickled


class PickleCodec:
    """How process workers' tasks and results are encoded: each object pickled on its own."""

    @staticmethod
    def encode_call(fn: Any, args: Any, kwargs: Any) -> tuple[Any, int, Any]:
        """(payload, its size in bytes, transfer) of one task; raises if it cannot be pickled."""
        payload, transfer = encode_call(fn, args, kwargs)
        if transfer is None:  # small: bytes, or (function reference, bytes)
            if type(payload) is bytes:
                return payload, len(payload), None
            return payload, len(payload[0]) + len(payload[1]), None
        if len(payload) == 2:  # (function reference, arguments)
            return payload, len(payload[0]) + _transfer.size_of(payload[1]), transfer
        return payload, _transfer.size_of(payload), transfer

    @staticmethod
    def decode_task(payload: Any) -> Any:
        received = None
        if type(payload) is _transfer.Received:  # big: its descriptors came with it
            received, payload = payload, payload.message
        if type(payload) is tuple and len(payload) == 2:  # (function reference, arguments)
            reference, rest = payload
            fn = _loaded.get(reference)
            if fn is None:
                fn = pickle.loads(reference)
                if len(_loaded) >= _CACHE_LIMIT:
                    _loaded.clear()
                _loaded[reference] = fn
            if received is not None:
                received.message = rest
                args, kwargs = received.load()
            else:
                args, kwargs = pickle.loads(rest)
            return fn, args, kwargs
        if received is not None:
            return received.load()
        return pickle.loads(payload)

    @staticmethod
    def encode_result(task_id: int, value: Any) -> tuple[Any, ...]:
        # Results use plain pickle, as the stdlib's pools do: a returned lambda
        # is an error (MaybeEncodingError), not something to rebuild by value.
        try:
            message, transfer = _transfer.dumps(value, plain=True)
        except SystemExit:
            raise
        except BaseException as exc:
            return (
                UNSENDABLE,
                task_id,
                (type(value).__name__, short_repr(value), short_repr(exc)),
                format_exception_text(exc),
            )
        if transfer is not None:  # big: the worker sends its descriptors with the record
            return (OK, task_id, _transfer.Sending(message, transfer), None)
        return (OK, task_id, message, None)

    @staticmethod
    def encode_exception(task_id: int, exc: BaseException) -> tuple[Any, ...]:
        text = format_exception_text(exc)
        exc.__traceback__ = None  # frames may hold unpicklable locals
        try:
            return (RAISED, task_id, pickle.dumps(exc, pickle.HIGHEST_PROTOCOL), text)
        except SystemExit:
            raise
        except BaseException as why:
            return (
                UNSENDABLE,
                task_id,
                (type(exc).__name__, short_repr(exc), short_repr(why)),
                text,
            )

    @staticmethod
    def decode_value(blob: Any) -> Any:
        if type(blob) is _transfer.Received:
            return blob.load()
        return pickle.loads(blob)


class ObjectCodec:
    """How thread workers' tasks and results are encoded: the objects themselves."""

    @staticmethod
    def encode_call(fn: Any, args: Any, kwargs: Any) -> tuple[Any, int, Any]:
        return (fn, args, kwargs), 64, None

    shared = False  # set once a SharedInProcess handle exists (share() of a thread pool)

    @classmethod
    def decode_task(cls, payload: Any) -> Any:
        if cls.shared:
            fn, args, kwargs = payload
            return fn, _transfer.resolve_in_process(args), _transfer.resolve_in_process(kwargs)
        return payload

    @staticmethod
    def encode_result(task_id: int, value: Any) -> tuple[Any, ...]:
        return (OK, task_id, value, None)

    @staticmethod
    def encode_exception(task_id: int, exc: BaseException) -> tuple[Any, ...]:
        return (RAISED, task_id, exc, None)

    @staticmethod
    def decode_value(blob: Any) -> Any:
        return blob


def task_fd_count(payload: Any) -> int:
    """How many descriptors (``_transfer``) travel with a process task's payload."""
    if type(payload) is bytes:
        return 0
    if len(payload) == 2:  # (function reference, arguments)
        return _transfer.fd_count(payload[1])
    return _transfer.fd_count(payload)


def attach_task_fds(batch: list[Any], fds: Any) -> list[Any]:
    """(Worker) Pair a batch's big payloads with the descriptors that came with it, in order."""
    paired = []
    for task_id, kind, payload in batch:
        n = task_fd_count(payload)
        if n:
            payload = _transfer.Received(payload, [fds.popleft() for _ in range(n)])
        paired.append((task_id, kind, payload))
    return paired


def attach_record_fds(records: list[Any], fds: Any, sender: int | None) -> list[Any]:
    """(Engine) Pair big results with the descriptors that came with their records, in order."""
    paired = []
    for record in records:
        status, task_id, a, b = record
        if status == OK and type(a) is tuple:
            record = (status, task_id, _transfer.take_fds(a, fds, sender), b)
        paired.append(record)
    return paired


def outcome_of(codec: Any, status: int, a: Any, b: Any) -> tuple[bool, Any]:
    """The (ok, value) a task's final record stands for (not EXITING)."""
    if status == OK:
        try:
            return True, codec.decode_value(a)
        except BaseException as exc:  # includes SystemExit from a __reduce__
            return False, _unreadable_result(exc)
    if status == RAISED:
        try:
            raised = codec.decode_value(a)
        except BaseException as why:
            return False, with_cause(_unreadable_result(why), b)
        return False, with_cause(raised, b)
    if status == UNSENDABLE:
        _type_name, value_repr, reason = a
        return False, with_cause(MaybeEncodingError(reason, value_repr), b)
    type_name, message = a  # UNREADABLE
    msg = f"the worker could not unpickle this task's function or arguments: {type_name}: {message}"
    return False, with_cause(TaskUnpicklingError(msg), b)


def _unreadable_result(exc: BaseException) -> BaseException:
    msg = f"could not unpickle a task's result in the parent: {type(exc).__name__}: {exc}"
    error = ResultUnpicklingError(msg)
    error.__cause__ = exc if isinstance(exc, Exception) else None
    return error
