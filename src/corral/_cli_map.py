"""The ``corral`` command.

``corral map MODULE:FUNCTION [FILE]`` reads one JSON value per line from FILE
(or stdin), calls ``FUNCTION(value)`` on each in a pool of worker processes,
and writes one JSON line per input to stdout, in input order: the function's
result, or ``{"error": {"type": ..., "message": ...}}`` for an input that
failed (invalid JSON, an exception, a crashed worker, a timeout). Blank lines
are skipped. The exit status is 1 when any input failed, 2 for bad usage.

The current directory is put on ``sys.path`` (in the workers too) so ``MODULE``
can be a local file. ``--backend ray`` or ``--backend dask`` runs the calls on a
cluster (``--address`` names it; else the backend finds or starts one, as
``Pool(backend=...)`` does); a cluster's workers must be able to import
``MODULE`` (the same directory on a shared file system, or an installed package).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ("main",)

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


def _progress(total: int | None) -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="item", file=sys.stderr)


def run_map(args: argparse.Namespace) -> int:
    """``corral map``: returns the exit status."""
    from .context import _default_context
    from .pool import Pool

    sys.path.insert(0, os.getcwd())
    try:
        _resolve(args.function)  # fail fast, in the parent, on a bad name
    except Exception as exc:
        print(
            f"corral map: cannot load {args.function}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 2
    stream = open(args.file, encoding="utf-8") if args.file and args.file != "-" else sys.stdin  # noqa: SIM115
    read = [0]
    failed = 0
    written = 0
    progress = _progress(None)
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
                    if progress is not None:
                        progress.update(count)
                    continue
                out.write(text + "\n")
                written += 1
                failed += not ok
                if progress is not None:
                    progress.update(1)
    finally:
        if progress is not None:
            progress.close()
        if stream is not sys.stdin:
            stream.close()
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


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = "must be a positive number of seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = "must be at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral", description="Process-based parallelism.")
    commands = parser.add_subparsers(dest="command", required=True)
    mapper = commands.add_parser(
        "map",
        help="call MODULE:FUNCTION on each JSON line of FILE (or stdin) in parallel",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    mapper.add_argument("function", metavar="MODULE:FUNCTION")
    mapper.add_argument(
        "file", metavar="FILE", nargs="?", help="input, one JSON value per line (default stdin)"
    )
    mapper.add_argument(
        "--workers", type=_positive_int, default=None, help="worker processes (default: CPUs)"
    )
    mapper.add_argument(
        "--task-timeout", type=_positive_float, default=None, help="seconds per input"
    )
    mapper.add_argument(
        "--chunksize", type=_positive_int, default=1, help="inputs sent to a worker at once"
    )
    mapper.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default=None,
        help="default: the platform's",
    )
    mapper.add_argument(
        "--backend",
        choices=("process", "ray", "dask"),
        default="process",
        help="where the calls run: worker processes here (default), or a Ray or Dask cluster",
    )
    mapper.add_argument(
        "--address",
        default=None,
        help="the cluster's address (Ray: host:port; Dask: tcp://host:port); needs --backend",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``corral`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if ":" not in args.function:
        print("corral map: give the function as MODULE:FUNCTION", file=sys.stderr)
        return 2
    if args.address is not None and args.backend == "process":
        print("corral map: --address needs --backend ray or --backend dask", file=sys.stderr)
        return 2
    if args.start_method is not None and args.backend != "process":
        print(
            f"corral map: --start-method applies to the process backend, not {args.backend}",
            file=sys.stderr,
        )
        return 2
    return run_map(args)


if __name__ == "__main__":
    raise SystemExit(main())
