"""``corral run``: shell commands in parallel, from arguments, stdin lines or a template.

The parser is in ``cli.py`` and the engine in ``_commands.py``; this module turns
the input into commands, prints each command's output as one block, draws the
progress line on a terminal and sums up. docs/cli.md is the user's documentation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO

from ._command_runner import Finished, Runner

__all__ = ("DESCRIPTION", "EPILOG", "expand", "run_from_cli")

DESCRIPTION = """\
Run shell commands in parallel, at most --jobs at a time. The commands are:
  TEMPLATE ::: ARG ...   the template once per ARG
  TEMPLATE               the template once per line of stdin (the line is the ARG)
  (no TEMPLATE)          each line of stdin, as a complete command
Blank lines are skipped. In TEMPLATE, {} is the ARG, quoted for the shell;
{.} is the ARG without its extension, {/} its last path component, {//} its
directory, {/.} the last component without extension, {#} the command's number
(from 1). A TEMPLATE without any of them gets " {}" appended.

Each command runs through /bin/sh in a session of its own, with stdin from
/dev/null. Its stdout and stderr are printed when it ends, as one block each
(to stdout and stderr), never mixed with another command's lines; a failed
command is followed by a line on stderr saying how it failed. A summary line
goes to stderr at the end, and a progress line while running when stderr is a
terminal.

Exit status: 0 every command succeeded, 1 some failed (non-zero status, signal
or timeout), 2 usage error, 130 interrupted (Ctrl-C: every running command's
process group is stopped), 143 / 129 stopped by SIGTERM / SIGHUP.
"""

EPILOG = """\
examples:
  corral run -j 4 'gzip -9 {}' ::: *.log
  ls *.csv | corral run --timeout 60 'python convert.py {} > {.}.json'
  corral run --json < commands.txt > results.jsonl
"""

_PLACEHOLDER = re.compile(r"\{(#|//|/\.|/|\.|)\}")


def expand(template: str, arg: str, number: int) -> str:
    """The command for one ARG: ``{}`` and the other placeholders replaced, quoted.

    A template with no placeholder gets the quoted ARG appended after a space.
    """

    def replace(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "#":
            return str(number)
        if kind == "":
            value = arg
        elif kind == ".":
            value = _without_extension(arg)
        elif kind == "/":
            value = os.path.basename(arg)
        elif kind == "//":
            value = os.path.dirname(arg) or "."
        else:  # "/."
            value = _without_extension(os.path.basename(arg))
        return shlex.quote(value)

    if not _PLACEHOLDER.search(template):
        return f"{template} {shlex.quote(arg)}"
    return _PLACEHOLDER.sub(replace, template)


def _without_extension(path: str) -> str:
    root, _ext = os.path.splitext(path)
    return root


def _stdin_lines() -> Iterator[str]:
    """The non-blank lines of stdin, read as they come (bytes kept via surrogateescape)."""
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        if line.strip():
            yield line


def _commands(args: argparse.Namespace, inputs: list[str | None]) -> Iterator[str]:
    """The commands to run; records each one's ARG (None without a template) in ``inputs``."""
    template = " ".join(args.template)
    if not template:
        for line in _stdin_lines():
            inputs.append(None)
            yield line
        return
    source = args.inputs if args.inputs is not None else _stdin_lines()
    for number, arg in enumerate(source, 1):
        inputs.append(arg)
        yield expand(template, arg, number)


def _write(stream: BinaryIO, data: bytes) -> None:
    if data:
        stream.write(data)
        stream.flush()


class _ProgressLine:
    """``corral run: [#####.....] 5/12, 1 failed, 3 running`` redrawn in place on a terminal.

    Not ``_progress.TextBar`` (the pools' bar): this line is cleared around each
    output block corral writes, and shows failures and running commands.
    """

    _MIN_INTERVAL = 0.1  # seconds between redraws

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.shown = ""  # the text on the terminal now
        self.drawn_at = 0.0

    def show(
        self, done: int, failed: int, running: int, total: int | None, now: bool = False
    ) -> None:
        """Draw the line; a call within 0.1 s of the last draw is skipped unless ``now``.

        The caller passes ``now`` when it is about to wait for something, so the
        line on the terminal is never behind for longer than a burst of events.
        """
        if total:
            filled = done * 20 // total
            count = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total}"
        else:
            count = f"{done} done"
        text = f"corral run: {count}, {failed} failed, {running} running"
        moment = time.monotonic()
        if text == self.shown or (not now and moment - self.drawn_at < self._MIN_INTERVAL):
            return
        self.drawn_at = moment
        self.shown = text  # first: an interrupt in the write still gets the line cleared
        _write(self.stream, b"\r\x1b[K" + text.encode())

    def clear(self) -> None:
        if self.shown:
            _write(self.stream, b"\r\x1b[K")
            self.shown = ""


def _how_it_failed(item: Finished) -> str:
    if item.timed_out:
        return f"timed out after {item.duration:.1f} s"
    if item.returncode < 0:
        try:
            return f"killed by {signal.Signals(-item.returncode).name}"
        except ValueError:
            return f"killed by signal {-item.returncode}"
    return f"exit {item.returncode}"


def _kind_of_failure(item: Finished) -> str:
    if item.timed_out:
        return "timeout"
    return _how_it_failed(item).replace("killed by ", "")


class _Report:
    """Prints each finished command (now, or in input order), and counts the failures."""

    def __init__(self, args: argparse.Namespace, inputs: list[str | None]) -> None:
        self.json = args.json
        self.keep_order = args.keep_order
        self.inputs = inputs
        self.total: int | None = None if args.inputs is None else len(args.inputs)
        self.out: BinaryIO = sys.stdout.buffer
        self.err: BinaryIO = sys.stderr.buffer
        show_progress = not args.no_progress and sys.stderr.isatty()
        self.progress = _ProgressLine(self.err) if show_progress else None
        self.waiting: dict[int, Finished] = {}  # ended, printed after earlier ones (-k)
        self.next_index = 0
        self.done = 0
        self.failures: dict[str, int] = {}

    def add(self, item: Finished) -> None:
        self.done += 1
        if item.returncode != 0 or item.timed_out:
            kind = _kind_of_failure(item)
            self.failures[kind] = self.failures.get(kind, 0) + 1
        if not self.keep_order:
            self._print(item)
            return
        self.waiting[item.index] = item
        while self.next_index in self.waiting:
            self._print(self.waiting.pop(self.next_index))
            self.next_index += 1

    def flush_waiting(self) -> None:
        """Print what ended but waits for an earlier command (after an interrupt)."""
        for index in sorted(self.waiting):
            self._print(self.waiting.pop(index))

    def _print(self, item: Finished) -> None:
        if self.progress is not None:
            self.progress.clear()
        if self.json:
            record = {
                "command": item.args,
                "input": self.inputs[item.index],
                "exit_code": item.returncode,
                "timed_out": item.timed_out,
                "duration": round(item.duration, 3),
                "stdout": item.stdout.decode("utf-8", "surrogateescape"),
                "stderr": item.stderr.decode("utf-8", "surrogateescape"),
            }
            _write(self.out, json.dumps(record).encode() + b"\n")
            return
        _write(self.out, item.stdout)
        _write(self.err, item.stderr)
        if item.returncode != 0 or item.timed_out:
            line = f"corral run: {_how_it_failed(item)}: {item.args}\n"
            _write(self.err, line.encode("utf-8", "surrogateescape"))

    def show_progress(self, runner: Runner, idle: bool = False) -> None:
        """Redraw the progress line; at most every 0.1 s unless the runner is about to wait."""
        if self.progress is not None:
            total = runner.started if runner.exhausted else self.total
            failed = sum(self.failures.values())
            self.progress.show(self.done, failed, runner.running, total, idle)

    def summary(self, elapsed: float) -> str:
        failed = sum(self.failures.values())
        noun = "command" if self.done == 1 else "commands"
        if not failed:
            return f"corral run: {self.done} {noun}, all succeeded, {elapsed:.1f} s"
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(self.failures.items()))
        return f"corral run: {self.done} {noun}, {failed} failed ({kinds}), {elapsed:.1f} s"


def run_from_cli(args: argparse.Namespace) -> int:
    """``corral run``: returns the exit status (0, 1 some failed, 2, 128 + signal)."""
    inputs: list[str | None] = []
    commands = _commands(args, inputs)
    if args.inputs is None and sys.stdin.isatty():
        what = "arguments" if args.template else "commands"
        hint = f"corral run: reading {what} from the terminal, one per line (end with Ctrl-D)\n"
        _write(sys.stderr.buffer, hint.encode())
    if args.dry_run:
        for command in commands:
            _write(sys.stdout.buffer, command.encode("utf-8", "surrogateescape") + b"\n")
        return 0
    report = _Report(args, inputs)
    runner = Runner(
        commands,
        jobs=args.jobs,
        timeout=args.timeout,
        kill_after=args.kill_after,
        before_wait=lambda: report.show_progress(runner, idle=True),
    )
    began = time.monotonic()
    try:
        for item in runner:
            report.add(item)
            report.show_progress(runner)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, runner, report)
    except BrokenPipeError:
        # Whoever read our stdout is gone (``corral run ... | head``): stop the
        # commands; cli.main ends quietly with SIGPIPE's status.
        runner.stop()
        raise
    if report.progress is not None:
        report.progress.clear()
    if not args.quiet:
        _write(report.err, (report.summary(time.monotonic() - began) + "\n").encode())
    return 1 if report.failures else 0


def _interrupted(exc: KeyboardInterrupt, runner: Runner, report: _Report) -> int:
    """Stop every running command, print what had ended and one line; the exit status."""
    from .cli import interrupted_status

    stopped = runner.stop()
    if report.progress is not None:
        report.progress.clear()
    report.flush_waiting()
    status, words = interrupted_status(exc)
    noun = "command" if len(stopped) == 1 else "commands"
    _write(report.err, f"corral run: {words}, {len(stopped)} {noun} stopped\n".encode())
    return status
