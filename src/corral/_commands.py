"""``corral.run_commands``: shell commands in parallel, outcomes as ``CompletedProcess``.

The running is ``_command_runner.Runner``'s (shared with ``corral run``); this
module is the Python API over it: arguments checked, outcomes decoded and put
in input order, ``check=True``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from ._command_runner import Command, Finished, Runner, as_text

__all__ = ("CommandFailedError", "CompletedCommand", "run_commands")


class CompletedCommand(subprocess.CompletedProcess[str]):
    """One command's outcome: a ``subprocess.CompletedProcess`` with two more attributes.

    ``returncode`` is the exit status, or minus the signal number that ended the
    command (``-15`` for SIGTERM), as ``subprocess`` reports it. ``stdout`` and
    ``stderr`` are the command's output decoded as UTF-8 with
    ``errors="surrogateescape"`` (``.encode("utf-8", "surrogateescape")`` gives the
    bytes back), or None when not captured.

    Attributes:
        duration: seconds from the start of the command to its end.
        timed_out: the command ran past ``timeout`` and was stopped.
    """

    def __init__(
        self,
        args: Command,
        returncode: int,
        stdout: str | None,
        stderr: str | None,
        *,
        duration: float,
        timed_out: bool,
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.duration = duration
        self.timed_out = timed_out

    def __repr__(self) -> str:
        return (
            f"CompletedCommand(args={self.args!r}, returncode={self.returncode}, "
            f"timed_out={self.timed_out}, duration={self.duration:.3f})"
        )


class CommandFailedError(subprocess.CalledProcessError):
    """``run_commands(check=True)``: a command failed (non-zero status, signal or timeout).

    A ``subprocess.CalledProcessError`` (code that catches that keeps working)
    about the first failed command in input order: ``returncode``, ``cmd``,
    ``stdout`` and ``stderr`` are its. Every command ran to its end first;
    ``results`` holds them all, in input order, and ``failed`` the failed ones.
    """

    def __init__(self, results: list[CompletedCommand]) -> None:
        self.results = results
        self.failed = [result for result in results if _failed(result)]
        first = self.failed[0]
        super().__init__(first.returncode, first.args, first.stdout, first.stderr)

    def __str__(self) -> str:
        first = self.failed[0]
        if first.timed_out:
            what = f"timed out after {first.duration:.1f} s (status {first.returncode})"
        else:
            what = f"exited with status {first.returncode}"
        others = len(self.failed) - 1
        more = f"; {others} more of the {len(self.results)} failed" if others else ""
        return (
            f"command {as_text(first.args)!r} {what}{more}. Every command ran to its end: "
            f"see .results (all, in input order) and .failed"
        )

    def __reduce__(self) -> tuple[type[CommandFailedError], tuple[list[CompletedCommand]]]:
        return type(self), (self.results,)


def _checked(index: int, command: Any) -> Command:
    """``command`` if it is one (a str, or a non-empty list of words); else a clear error."""
    if isinstance(command, str):
        return command
    if isinstance(command, (list, tuple)):
        if not command:
            msg = f"command {index} is an empty list: give a program and its arguments"
            raise ValueError(msg)
        for word in command:
            if not isinstance(word, (str, bytes, os.PathLike)):
                msg = (
                    f"command {index} holds {type(word).__name__} {word!r}: "
                    "each word of a command list must be a str"
                )
                raise TypeError(msg)
        return command
    msg = (
        f"command {index} is {type(command).__name__} {command!r}: each command is a str "
        "(run by the shell) or a list of str (a program and its arguments)"
    )
    raise TypeError(msg)


def _failed(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 or bool(getattr(result, "timed_out", False))


def run_commands(
    commands: Iterable[Command],
    *,
    jobs: int | None = None,
    timeout: float | None = None,
    kill_after: float = 2.0,
    capture: bool = True,
    check: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[CompletedCommand]:
    """Run commands in parallel, at most ``jobs`` at a time; return their outcomes in order.

    A command given as a string runs through the shell (``/bin/sh -c``); a
    sequence of strings runs that program with those arguments, without a shell.
    Each runs in a session of its own, with stdin from ``/dev/null``; its stdout
    and stderr are captured (into temp files while it runs) unless ``capture`` is
    False, when they go to this process's stdout and stderr.

    Args:
        commands: the commands. A list or tuple is used as it is; any other
            iterable (a generator, a file's lines) is read in a thread, at most
            ``jobs`` commands ahead, so that an input that waits holds up neither
            the running commands' timeouts nor their results. An exception from
            it stops the running commands and propagates.
        jobs: how many run at once (default: the CPUs this process may use).
        timeout: seconds a command may run; then its whole process group gets
            SIGTERM, and SIGKILL ``kill_after`` seconds later if its main process
            has not exited (when it exits, what is left of the group gets SIGKILL).
            Its result has ``timed_out`` True and the status it ended with
            (``-15`` after SIGTERM, from a shell that did not catch it).
        kill_after: the grace between SIGTERM and SIGKILL (seconds, 0 or more).
        capture: keep stdout and stderr in the results (default), or let them through.
        check: raise ``CommandFailedError`` if any command failed (non-zero status,
            signal or timeout), after all have ended.
        cwd, env: as for ``subprocess.Popen``, for every command. Each command's
            environment also holds ``CORRAL_RUN_ID``, by which the watcher
            process finds the commands if this program dies without stopping
            them (SIGKILL): they are stopped as on a timeout.

    Returns:
        One ``CompletedCommand`` per command, in input order. A program that cannot
        be started (no shell involved) gets status 127 (not found) or 126, as a
        shell would report it, and the reason in ``stderr``.

    Raises:
        TypeError: ``commands`` is one string (give a list), a command is neither
            a str nor a list of str, ``jobs`` is not an int.
        ValueError: ``jobs`` below 1, ``timeout`` not above 0, ``kill_after`` below 0,
            a command is an empty list.
        FileNotFoundError: ``cwd`` is not an existing directory.
        CommandFailedError: with ``check=True``, some command failed.
        KeyboardInterrupt: as it came; every running command was stopped first
            (SIGTERM to its group, SIGKILL after ``kill_after``).
    """
    if isinstance(commands, (str, bytes)):
        msg = (
            "run_commands takes a list of commands, not one string: "
            f"run_commands([{commands!r}]) runs it through the shell"
        )
        raise TypeError(msg)
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool)):
        msg = f"jobs must be an int (at least 1) or None, got {type(jobs).__name__} {jobs!r}"
        raise TypeError(msg)
    if cwd is not None and not os.path.isdir(cwd):
        raise FileNotFoundError(errno.ENOENT, "cwd is not an existing directory", str(cwd))
    if isinstance(commands, (list, tuple)):
        commands = [_checked(index, command) for index, command in enumerate(commands)]
    else:  # checked as they are read
        commands = (_checked(index, command) for index, command in enumerate(commands))
    if jobs is not None and jobs < 1:
        msg = f"jobs must be at least 1, got {jobs!r}"
        raise ValueError(msg)
    if timeout is not None and not timeout > 0:
        msg = f"timeout must be a number of seconds greater than 0 (or None), got {timeout!r}"
        raise ValueError(msg)
    if not kill_after >= 0:
        msg = f"kill_after must be a number of seconds (0 or more), got {kill_after!r}"
        raise ValueError(msg)
    runner = Runner(
        commands,
        jobs=jobs,
        timeout=timeout,
        kill_after=kill_after,
        capture=capture,
        cwd=cwd,
        env=env,
    )
    finished: list[Finished] = []
    try:
        finished.extend(runner)
    except BaseException:
        runner.stop()
        raise
    finished.sort(key=lambda item: item.index)
    results = [_completed(item, capture) for item in finished]
    if check and any(_failed(result) for result in results):
        raise CommandFailedError(results)
    return results


def _completed(item: Finished, capture: bool) -> CompletedCommand:
    stdout = item.stdout.decode("utf-8", "surrogateescape") if capture else None
    stderr = item.stderr.decode("utf-8", "surrogateescape") if capture else None
    if not capture and item.stderr:  # the reason a program could not start
        stderr = item.stderr.decode("utf-8", "surrogateescape")
    return CompletedCommand(
        item.args,
        item.returncode,
        stdout,
        stderr,
        duration=item.duration,
        timed_out=item.timed_out,
    )
