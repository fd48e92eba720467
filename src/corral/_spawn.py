"""What a spawned child runs: a fresh interpreter that prepares itself like its parent.

The parent starts ``python <flags> -c "...spawn_main(fd)" --multiprocessing-fork``
and writes two pickles into the pipe ``fd``: the *preparation data* (sys.path,
argv, cwd, authkey, logging, start method, and where ``__main__`` comes from)
and the ``Process`` object. The child applies the first, re-imports the main
module as ``__mp_main__`` (so functions defined there unpickle), loads the
second and runs it. The authkey travels only in the pipe, never on the command
line or in the environment.

Used by the spawn and forkserver start methods.
"""

from __future__ import annotations

import os
import pickle
import runpy
import sys
import types
from typing import Any

from . import process, util

__all__ = (
    "freeze_support",
    "get_command_line",
    "get_executable",
    "get_preparation_data",
    "import_main_path",
    "prepare",
    "set_executable",
    "spawn_main",
)

_executable = sys.executable
# The directory that holds the corral package: a child started with -S or -I
# (no site-packages) must still be able to import it.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL_DIR = os.path.abspath(os.getcwd())


def set_executable(executable: str) -> None:
    """Set the interpreter that spawn and forkserver children run."""
    global _executable
    _executable = os.fsdecode(executable)


def get_executable() -> str:
    return _executable


def is_forking(argv: list[str]) -> bool:
    """True if argv is the command line of a spawned child."""
    return len(argv) >= 2 and argv[1] == "--multiprocessing-fork"


def freeze_support() -> None:
    """In a frozen executable started as a spawn child: run the child, then exit."""
    if is_forking(sys.argv):
        kwds: dict[str, Any] = {}
        for arg in sys.argv[2:]:
            name, value = arg.split("=")
            kwds[name] = None if value == "None" else int(value)
        spawn_main(**kwds)
        sys.exit()


def interpreter_flags() -> list[str]:
    """The command-line options that reproduce this interpreter's settings."""
    flags = sys.flags
    args = []
    for flag, letter in (
        ("debug", "d"),
        ("dont_write_bytecode", "B"),
        ("no_site", "S"),
        ("verbose", "v"),
        ("bytes_warning", "b"),
        ("quiet", "q"),
    ):
        count = getattr(flags, flag, 0)
        if count:
            args.append("-" + letter * count)
    if flags.isolated:
        args.append("-I")  # implies -E, -s and -P
    else:
        for flag, option in (
            ("ignore_environment", "-E"),
            ("no_user_site", "-s"),
            ("safe_path", "-P"),
        ):
            if getattr(flags, flag, 0):
                args.append(option)
    if flags.optimize:
        args.append("-" + "O" * flags.optimize)
    args.extend("-W" + option for option in sys.warnoptions)
    for name, value in getattr(sys, "_xoptions", {}).items():
        args.append("-X" + (name if value is True else f"{name}={value}"))
    return args


def get_command_line(**kwds: Any) -> list[str]:
    """The argv of a spawned child: run ``spawn_main(**kwds)`` in a fresh interpreter."""
    if getattr(sys, "frozen", False):
        return [
            _executable,
            "--multiprocessing-fork",
            *(f"{name}={value}" for name, value in kwds.items()),
        ]
    call = ", ".join(f"{name}={value!r}" for name, value in kwds.items())
    code = (
        f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
        f"from corral._spawn import spawn_main; spawn_main({call})"
    )
    return [_executable, *interpreter_flags(), "-c", code, "--multiprocessing-fork"]


def spawn_posix(path: str, args: list[str], passfds: list[int]) -> int:
    """Start ``args`` with only stdio and ``passfds`` inherited; return the pid."""
    # dup2(fd, fd) in a spawn file action clears FD_CLOEXEC (POSIX 2024,
    # glibc >= 2.29, macOS): the listed fds stay open under the same numbers.
    actions = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in sorted(set(passfds))]
    return os.posix_spawn(path, args, os.environ, file_actions=actions)


def spawn_main(
    pipe_handle: int,
    parent_pid: int | None = None,
    tracker_fd: int | None = None,
    parent_pidfd: int | None = None,
) -> None:
    """Entry point of a spawned child: read the parent's pickles from pipe_handle and run.

    ``parent_pidfd`` is 1 when the parent watches us with a pidfd and closes
    its end of the pipe (we then watch it with a pidfd too), 0 when it keeps
    the pipe's write end open until it exits (its EOF is our sign).
    """
    if parent_pidfd is None:  # a command line written without it
        from ._popen_fork import HAVE_PIDFD

        parent_pidfd = HAVE_PIDFD
    parent_sentinel = None if parent_pidfd else os.dup(pipe_handle)
    exitcode = _main(pipe_handle, parent_sentinel)
    sys.exit(exitcode)


def _main(fd: int, parent_sentinel: int | None) -> int:
    with os.fdopen(fd, "rb", closefd=True) as from_parent:
        process.current_process()._inheriting = True  # type: ignore[attr-defined]
        try:
            preparation_data = pickle.load(from_parent)
            prepare(preparation_data)
            self = pickle.load(from_parent)
        finally:
            del process.current_process()._inheriting  # type: ignore[attr-defined]
    return self._bootstrap(parent_sentinel)


def _check_not_importing_main() -> None:
    """Refuse to start a child while this child is still importing the main module.

    That happens when the main module starts processes at import time, without
    the ``if __name__ == '__main__':`` guard; without this check every child
    would start children of its own, forever.
    """
    if getattr(process.current_process(), "_inheriting", False):
        msg = """
        A new process was started before the current process finished its
        bootstrapping phase: this child is still importing the main module,
        and that import itself starts processes.

        With the spawn and forkserver start methods every child imports the
        main module again. Put the code that starts processes under the
        main-module guard:

            if __name__ == '__main__':
                freeze_support()   # only needed for frozen executables
                ...
        """
        raise RuntimeError(msg)


def get_preparation_data(name: str) -> dict[str, Any]:
    """What a child needs to become a copy of this process before unpickling."""
    _check_not_importing_main()
    data: dict[str, Any] = {
        "log_to_stderr": util._log_to_stderr,
        "authkey": bytes(process.current_process().authkey),
        "name": name,
        "sys_path": sys.path,
        "sys_argv": sys.argv,
        "orig_dir": ORIGINAL_DIR,
        "dir": os.getcwd(),
        "start_method": _start_method(),
    }
    if util._logger is not None:
        data["log_level"] = util._logger.getEffectiveLevel()
    # Figure out where the child finds __main__.
    main_module = sys.modules.get("__main__")
    main_name = getattr(getattr(main_module, "__spec__", None), "name", None)
    if main_name is not None:
        data["init_main_from_name"] = main_name
    else:
        main_path = getattr(main_module, "__file__", None)
        if main_path is not None:
            if not os.path.isabs(main_path) and ORIGINAL_DIR is not None:
                main_path = os.path.join(ORIGINAL_DIR, main_path)
            data["init_main_from_path"] = os.path.normpath(main_path)
    return data


def _start_method() -> str | None:
    from ._contexts import _default_context

    return _default_context.get_start_method()


_old_main_modules: list[types.ModuleType] = []


def prepare(data: dict[str, Any]) -> None:
    """Make this fresh interpreter look like the parent described by data."""
    global ORIGINAL_DIR
    if "name" in data:
        process.current_process().name = data["name"]
    if "authkey" in data:
        process.current_process().authkey = data["authkey"]
    if data.get("log_to_stderr"):
        util.log_to_stderr()
    if "log_level" in data:
        util.get_logger().setLevel(data["log_level"])
    if "sys_path" in data:
        sys.path = data["sys_path"]
    if "sys_argv" in data:
        sys.argv = data["sys_argv"]
    if "dir" in data:
        os.chdir(data["dir"])
    if "orig_dir" in data:
        ORIGINAL_DIR = data["orig_dir"]
    if data.get("start_method") is not None:
        from ._contexts import _force_start_method

        _force_start_method(data["start_method"])
    if "message_tracker" in data:
        from . import resource_tracker

        resource_tracker.adopt(*data["message_tracker"])
    if "init_main_from_name" in data:
        _fixup_main_from_name(data["init_main_from_name"])
    elif "init_main_from_path" in data:
        _fixup_main_from_path(data["init_main_from_path"])


def _fixup_main_from_name(mod_name: str) -> None:
    current_main = sys.modules["__main__"]
    # A package's __main__ cannot be re-run as __mp_main__ (it would re-run the
    # program), nor need it be if this interpreter already runs it.
    if mod_name == "__main__" or mod_name.endswith(".__main__"):
        return
    if getattr(getattr(current_main, "__spec__", None), "name", None) == mod_name:
        return
    _old_main_modules.append(current_main)
    main_module = types.ModuleType("__mp_main__")
    main_content = runpy.run_module(mod_name, run_name="__mp_main__", alter_sys=True)
    main_module.__dict__.update(main_content)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main_module


def _fixup_main_from_path(main_path: str) -> None:
    current_main = sys.modules["__main__"]
    main_name = os.path.splitext(os.path.basename(main_path))[0]
    if main_name == "ipython":
        return
    if getattr(current_main, "__file__", None) == main_path:
        return
    _old_main_modules.append(current_main)
    main_module = types.ModuleType("__mp_main__")
    main_content = runpy.run_path(main_path, run_name="__mp_main__")
    main_module.__dict__.update(main_content)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main_module


def import_main_path(main_path: str) -> None:
    """Import the script at main_path as ``__mp_main__`` (and alias it as ``__main__``)."""
    _fixup_main_from_path(main_path)
