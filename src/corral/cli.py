"""The ``corral`` command: its options, and the dispatch to ``corral map`` and ``corral run``.

This module only parses: ``_cli_map`` and ``_cli_run`` do the work and return
the exit status. Every usage error is one line on stderr and status 2 (argparse
prints the usage line before it); SIGINT, SIGTERM and SIGHUP become an interrupt
the command cleans up after, then one line and status 128 + the signal number
(130 for Ctrl-C), never a traceback. docs/cli.md is the user's documentation.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from . import __version__

__all__ = ("build_parser", "main")

# What each command is, in --help; the long form is docs/cli.md.
_MAP_HELP = "call MODULE:FUNCTION on each JSON line of FILE (or stdin) in worker processes"
_RUN_HELP = "run shell commands in parallel (like xargs -P or GNU parallel)"


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        msg = f"expected a number of seconds greater than 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        msg = f"expected a number of seconds (0 or more), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a whole number of at least 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_map_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._cli_map import DESCRIPTION

    mapper = commands.add_parser(
        "map",
        help=_MAP_HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mapper.add_argument("function", metavar="MODULE:FUNCTION", help="the function to call")
    mapper.add_argument(
        "file", metavar="FILE", nargs="?", help="input, one JSON value per line (default: stdin)"
    )
    mapper.add_argument(
        "--workers", type=_positive_int, default=None, help="worker processes (default: CPUs)"
    )
    mapper.add_argument(
        "--task-timeout",
        type=_positive_number,
        default=None,
        metavar="SECONDS",
        help="stop an input's call after this long (its worker is replaced)",
    )
    mapper.add_argument(
        "--chunksize", type=_positive_int, default=1, help="inputs sent to a worker at once"
    )
    mapper.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default=None,
        help="how worker processes start (default: the platform's)",
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


def _add_run_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._cli_run import DESCRIPTION, EPILOG

    runner = commands.add_parser(
        "run",
        help=_RUN_HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [TEMPLATE [::: ARG ...]]",
    )
    runner.add_argument(
        "template",
        metavar="TEMPLATE",
        nargs="*",
        help="the command to run for each ARG, with {} where the ARG goes "
        "(several words are joined with spaces)",
    )
    runner.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=None,
        help="commands running at once (default: the CPUs this process may use)",
    )
    runner.add_argument(
        "--timeout",
        type=_positive_number,
        default=None,
        metavar="SECONDS",
        help="stop a command (its whole process group) that runs longer than this",
    )
    runner.add_argument(
        "--kill-after",
        type=_non_negative_number,
        default=2.0,
        metavar="SECONDS",
        help="after a timeout's SIGTERM, SIGKILL the command's group this much later (default: 2)",
    )
    runner.add_argument(
        "-k",
        "--keep-order",
        action="store_true",
        help="print the outputs in input order (default: as the commands end)",
    )
    runner.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per command on stdout (command, input, exit_code, "
        "timed_out, duration, stdout, stderr)",
    )
    runner.add_argument(
        "--dry-run", action="store_true", help="print the commands, one per line; run none"
    )
    runner.add_argument("-q", "--quiet", action="store_true", help="no summary line at the end")
    runner.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line (it is shown only when stderr is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``corral`` parser with its ``map`` and ``run`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Process-based parallelism from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(commands)
    _add_map_parser(commands)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    msg = f"no subcommand {name}"
    raise LookupError(msg)


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; options may come before, between or after the positionals.

    ``corral run``'s arguments after ``:::`` are taken as they are (a ``-x``
    there is an argument, not an option) and stored as ``args.inputs``; words
    after ``--`` (and before ``:::``) are template words, even those starting with ``-``.
    """
    parser = build_parser()
    if not argv or argv[0] not in ("map", "run"):
        return parser.parse_args(argv)  # --help, --version, or a usage error
    command = _subparser(parser, argv[0])
    rest = argv[1:]
    inputs: list[str] | None = None
    words: list[str] = []  # template words after "--" (parse_intermixed_args drops "--")
    if argv[0] == "run":
        if ":::" in rest:
            cut = rest.index(":::")
            rest, inputs = rest[:cut], rest[cut + 1 :]
        if "--" in rest:
            cut = rest.index("--")
            rest, words = rest[:cut], rest[cut + 1 :]
    args = command.parse_intermixed_args(rest)
    if words:
        args.template = [*args.template, *words]
    args.command = argv[0]
    args.inputs = inputs
    if argv[0] == "run" and inputs is not None and not args.template:
        command.error("':::' needs a TEMPLATE before it, e.g. corral run 'gzip {}' ::: a b")
    if inputs is not None and ":::" in inputs:
        command.error(
            "one ':::' only: corral run does not combine argument lists (GNU parallel's "
            "'::: a b ::: c d'); give each command's arguments on one stdin line instead"
        )
    return args


def _check_map(args: argparse.Namespace) -> str | None:
    """A contradiction between ``corral map``'s options, as a message; None if none."""
    if ":" not in args.function:
        return "give the function as MODULE:FUNCTION"
    if args.address is not None and args.backend == "process":
        return "--address needs --backend ray or --backend dask"
    if args.start_method is not None and args.backend != "process":
        return f"--start-method applies to the process backend, not {args.backend}"
    return None


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: the command stops everything it started.

    A ``KeyboardInterrupt`` so that code written for Ctrl-C (a pool's ``with``
    block) cleans up the same way for all three.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM/SIGHUP into ``Interrupted``; ignore the later ones.

    The later ones are ignored so that the cleanup (stopping workers and command
    groups) is not itself interrupted half-way, which would leave processes behind.
    """
    received: list[int] = []
    owner = os.getpid()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            # A forked child (a pool worker) inherited this handler: it gets the
            # signal's usual effect instead (SIGTERM ends it, as the pool expects).
            signal.signal(signum, previous[signal.Signals(signum)])
            os.kill(os.getpid(), signum)
            return
        if received:
            return
        received.append(signum)
        raise Interrupted(signum)

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in watched}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted_status(exc: KeyboardInterrupt) -> tuple[int, str]:
    """The exit status and the words for an interrupt: (130, "interrupted") for Ctrl-C."""
    signum = getattr(exc, "signum", signal.SIGINT)
    if signum == signal.SIGINT:
        return 128 + signum, "interrupted"
    return 128 + signum, f"stopped by {signal.Signals(signum).name}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``corral`` command; returns the exit status.

    Usage errors raise ``SystemExit(2)`` from argparse (with the usage line) or
    return 2 (one line).
    """
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    run: Callable[[argparse.Namespace], int]
    if args.command == "map":
        problem = _check_map(args)
        if problem is not None:
            print(f"corral map: {problem}", file=sys.stderr)
            return 2
        from ._cli_map import run_map as run
    else:
        from ._cli_run import run_from_cli as run
    try:
        with _signals_interrupt():
            return run(args)
    except KeyboardInterrupt as exc:
        status, words = interrupted_status(exc)
        print(f"corral {args.command}: {words}", file=sys.stderr)
        return status
    except BrokenPipeError:
        # Whoever read our stdout is gone (``corral ... | head``): the command has
        # stopped its workers or commands on the way out; end quietly, as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the exit's flush must not fail again
        os.close(devnull)
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
