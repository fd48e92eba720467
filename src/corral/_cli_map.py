"""``corral map``: call MODULE:FUNCTION on each JSON line of a file in worker processes.

The parser and the dispatch are in ``cli.py``; this module runs the command. The
help text (``DESCRIPTION``) is the user's documentation, kept plain for
``--help``; docs/cli.md has the long form.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ._progress import default_bar

__all__ = ("DESCRIPTION", "run_map")

DESCRIPTION = """\
Read one JSON value per line from FILE (or stdin), call FUNCTION(value) on each
in a pool of worker processes, and write one JSON line per input to stdout, in
input order: the function's result, or {"error": {"type": ..., "message": ...}}
for an input that failed (invalid JSON, an exception, a crashed worker, a
timeout). Blank lines are skipped.

The current directory is put on sys.path (in the workers too), so MODULE can be
a file there. With --backend ray or --backend dask the calls run on a cluster
(--address names it; else one is found or started); its workers must be able
to import MODULE.

Exit status: 0 all inputs succeeded, 1 some failed, 2 usage error (bad option,
unreadable FILE, MODULE:FUNCTION not found, pool cannot start), 130 interrupted.
"""

_functions: dict[str, Callable[[Any], Any]] = {}


def _resolve(spec: str) -> Callable[[Any], Any]:
    fn: Any = _functions.get(spec)
    if fn is None:
        module_name, _, attr = spec.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            msg = f"{spec} is not callable"
            raise TypeError(msg)
        fn = _functions[spec] = obj
    return fn


def _error_record(exc: BaseException) -> str:
    return json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}})


def apply_to_line(spec: str, line: str) -> tuple[bool, str]:
    """Run in a worker: parse one input line, call the function, encode the result."""
    try:
        value = json.loads(line)
        result = _resolve(spec)(value)
        return True, json.dumps(result)
    except Exception as exc:
        return False, _error_record(exc)


def _lines(stream: TextIO, counter: list[int]) -> Iterator[str]:
    for line in stream:
        if line.strip():
            counter[0] += 1
            yield line


def run_map(args: argparse.Namespace) -> int:
    """``corral map``: returns the exit status (0, 1 some inputs failed, 2, 130).

    The checks of the options against each other are done by the caller; a
    missing or unreadable FILE, a MODULE:FUNCTION that cannot be loaded and a
    pool that cannot start are one line on stderr and status 2. An interrupt
    (SIGINT, or SIGTERM/SIGHUP turned into one by ``cli``) stops the workers and
    propagates: the caller prints the line and picks the status.
    """
    try:
        stream = _open_input(args.file)
    except OSError as exc:
        print(f"corral map: error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        return _map_stream(args, stream)
    finally:
        if stream is not sys.stdin:
            stream.close()


def _open_input(path: str | None) -> TextIO:
    """The input stream; a directory is refused here (open() would accept it)."""
    if not path or path == "-":
        return sys.stdin
    stream = open(path, encoding="utf-8")  # noqa: SIM115  (closed by run_map)
    if os.path.isdir(path):
        stream.close()
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return stream


def _map_stream(args: argparse.Namespace, stream: TextIO) -> int:
    from .context import _default_context
    from .pool import Pool

    sys.path.insert(0, os.getcwd())
    try:
        _resolve(args.function)  # fail fast, in the parent, on a bad name
    except Exception as exc:
        print(
            f"corral map: error: cannot load {args.function}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 2
    read = [0]
    failed = 0
    written = 0
    progress = default_bar(None)  # silent unless stderr is a terminal
    out = sys.stdout
    ctx = _default_context.get_context(args.start_method)
    try:
        try:
            pool = Pool(
                args.workers, context=ctx, task_timeout=args.task_timeout, backend=_backend(args)
            )
        except (ImportError, OSError, ValueError) as exc:
            # The backend's package is missing, its cluster cannot be reached or
            # cannot run a worker: the message says what to do.
            print(f"corral map: cannot start the pool: {exc}", file=sys.stderr)
            return 2
        with pool:
            results = pool.imap(
                _LineTask(args.function, os.getcwd()),
                _lines(stream, read),
                chunksize=args.chunksize,
            )
            while True:
                try:
                    ok, text = next(results)
                except StopIteration:
                    break
                except Exception as exc:  # the whole chunk failed (worker lost, timeout)
                    count = min(args.chunksize, read[0] - written)
                    for _ in range(count):
                        out.write(_error_record(exc) + "\n")
                    failed += count
                    written += count
                    progress.update(count)
                    continue
                out.write(text + "\n")
                written += 1
                failed += not ok
                progress.update(1)
    finally:
        progress.close()
    out.flush()
    return 1 if failed else 0


def _backend(args: argparse.Namespace) -> Any:
    """``Pool``'s ``backend=`` for ``--backend`` and ``--address``."""
    if args.backend == "process":
        return None
    if args.address is None:
        return args.backend
    from . import backends

    return (
        backends.Ray(address=args.address)
        if args.backend == "ray"
        else backends.Dask(address=args.address)
    )


class _LineTask:
    """A picklable ``line -> (ok, json)`` callable bound to one ``MODULE:FUNCTION``.

    It puts the directory ``corral map`` ran in on the worker's ``sys.path``
    first, so that a module there imports in workers started elsewhere (a
    cluster's, or a forkserver's).
    """

    def __init__(self, spec: str, path: str) -> None:
        self.spec = spec
        self.path = path

    def __call__(self, line: str) -> tuple[bool, str]:
        if self.path not in sys.path:
            sys.path.insert(0, self.path)
        return apply_to_line(self.spec, line)
