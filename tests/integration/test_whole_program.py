"""Whole programs in fresh interpreters: __main__ handling, the main guard, exit cleanup."""

from __future__ import annotations

import sys

import psutil
import pytest

from tests.conftest import START_METHODS, run_script

MAIN_SCRIPT = """
import sys
import corral

def square(conn, x):
    conn.send((x * x, __name__))

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    r, w = ctx.Pipe()
    p = ctx.Process(target=square, args=(w, 7))
    p.start()
    print(r.recv())
    p.join(30)
    print("exit", p.exitcode)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_script_main_function_runs_in_child(tmp_path, method):
    result = run_script(tmp_path, MAIN_SCRIPT, method)
    assert result.returncode == 0, result.stderr
    expected_name = "__main__" if method == "fork" else "__mp_main__"
    assert result.stdout.split("\n")[:2] == [f"(49, '{expected_name}')", "exit 0"]


@pytest.mark.parametrize("method", START_METHODS)
def test_module_run_with_dash_m(tmp_path, method):
    result = run_script(tmp_path, MAIN_SCRIPT, method, module="mymain")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1] == "exit 0"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_missing_main_guard_is_an_error_not_a_fork_bomb(tmp_path, method):
    code = f"""
    import corral
    ctx = corral.get_context({method!r})
    p = ctx.Process(target=print, args=("child",))
    p.start()
    p.join(30)
    print("exitcode", p.exitcode)
    """
    result = run_script(tmp_path, code, timeout=60)
    assert "RuntimeError" in result.stderr
    assert "bootstrapping phase" in result.stderr
    assert "if __name__ == '__main__':" in result.stderr
    assert result.stdout.strip().endswith("exitcode 1")


@pytest.mark.parametrize("method", START_METHODS)
def test_daemon_children_are_terminated_at_exit(tmp_path, method):
    code = f"""
    import sys, corral
    def sleep_forever(conn):
        conn.send("up")
        conn.recv()      # never answered
    if __name__ == "__main__":
        ctx = corral.get_context({method!r})
        r, w = ctx.Pipe()
        p = ctx.Process(target=sleep_forever, args=(w,), daemon=True)
        p.start()
        r.recv()
        print(p.pid, flush=True)
        # exit normally without join: the daemon must be terminated
    """
    result = run_script(tmp_path, code, timeout=60)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.strip())
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("method", START_METHODS)
def test_non_daemon_children_are_joined_at_exit(tmp_path, method):
    code = f"""
    import corral
    def write(path):
        open(path, "w").write("done")
    if __name__ == "__main__":
        ctx = corral.get_context({method!r})
        ctx.Process(target=write, args=("out.txt",)).start()
    """
    result = run_script(tmp_path, code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "done"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_interactive_main_functions_go_by_value(tmp_path, method):
    """python -c: the child cannot import __main__, so its functions travel by value."""
    import subprocess

    code = (
        "import corral\n"
        "def double(conn, x): conn.send(x * 2)\n"
        f"ctx = corral.get_context({method!r})\n"
        "r, w = ctx.Pipe()\n"
        "p = ctx.Process(target=double, args=(w, 21)); p.start()\n"
        "print(r.recv()); p.join(30); print(p.exitcode)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.stdout.split() == ["42", "0"], result.stderr


@pytest.mark.parametrize("method", START_METHODS)
def test_logging_reaches_children(tmp_path, method):
    code = f"""
    import corral, logging
    def log():
        corral.get_logger().info("hello from the child")
    if __name__ == "__main__":
        corral.log_to_stderr(logging.INFO)
        ctx = corral.get_context({method!r})
        p = ctx.Process(target=log, name="Kid")
        p.start(); p.join(30)
    """
    result = run_script(tmp_path, code, timeout=60)
    assert "[INFO/Kid] hello from the child" in result.stderr


@pytest.mark.parametrize("method", START_METHODS)
def test_interpreter_flags_reach_spawned_children(tmp_path, method):
    code = f"""
    import sys, corral
    def flags(conn):
        conn.send((sys.flags.optimize, bool(sys.flags.dont_write_bytecode)))
    if __name__ == "__main__":
        ctx = corral.get_context({method!r})
        r, w = ctx.Pipe()
        p = ctx.Process(target=flags, args=(w,)); p.start()
        print(r.recv()); p.join(30)
    """
    result = run_script(tmp_path, code, timeout=60, flags=("-O", "-B"))
    assert result.stdout.strip() == "(1, True)", result.stderr


@pytest.mark.parametrize("method", START_METHODS)
def test_semaphores_created_in_children_are_unlinked(tmp_path, method):
    """A semaphore made by a child (e.g. at import of __main__) is gone after it exits."""
    import os

    code = f"""
    import corral
    ctx = corral.get_context({method!r})
    made_at_import = ctx.Semaphore()
    def child():
        made_in_child = ctx.Lock()
        with made_in_child:
            pass
    if __name__ == "__main__":
        p = ctx.Process(target=child)
        p.start()
        p.join(30)
        print(p.exitcode)
    """
    before = set(os.listdir("/dev/shm"))
    result = run_script(tmp_path, code, timeout=60)
    assert result.stdout.strip() == "0", result.stderr
    assert result.stderr == ""
    leaked = {name for name in set(os.listdir("/dev/shm")) - before if "corral" in name}
    assert leaked == set()


def test_import_corral_leaves_out_what_it_does_not_need(tmp_path):
    """cloudpickle, typing, concurrent.futures (and logging) load on first use only."""
    code = """
    import sys
    import corral
    unneeded = ("cloudpickle", "typing", "concurrent.futures", "logging", "weakref")
    print(sorted(name for name in unneeded if name in sys.modules))
    import corral.managers  # registers reducers for dict views
    import corral.reduction as r
    import pickle
    r._dumps([1, {"a": (2.0, b"x")}, len, r.ForkingPickler, {1: 2}.values()])
    pickle.loads(r._slow_dumps([r.ForkingPickler, sys.exit, type(None), type(...)], 5))
    print("cloudpickle" in sys.modules)
    r._dumps(lambda: 1)
    print("cloudpickle" in sys.modules)
    print(corral.WorkerLostError.__module__, "concurrent.futures" in sys.modules)
    """
    result = run_script(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["[]", "False", "True", "corral.errors True"]


CHILD_IMPORTS_SCRIPT = """
import sys
import corral

def report(conn):
    conn.send(sorted(name for name in ("cloudpickle",) if name in sys.modules))

if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    r, w = ctx.Pipe()
    p = ctx.Process(target=report, args=(w,))
    p.start()
    print(r.recv())
    p.join(30)
    print("exit", p.exitcode)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_does_not_import_cloudpickle_for_importable_targets(tmp_path, method):
    result = run_script(tmp_path, CHILD_IMPORTS_SCRIPT, method)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "exit 0"]


OPEN_FILE_SCRIPT = """
import sys
import importlib

def read_first_line(f, conn):
    conn.send(type(f).__name__)

if __name__ == "__main__":
    mp = importlib.import_module(sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    r, w = ctx.Pipe()
    with open(__file__) as f:
        p = ctx.Process(target=read_first_line, args=(f, w))
        try:
            p.start()
        except Exception as exc:
            print("start:", isinstance(exc, TypeError), str(exc).split(":")[0])
        else:
            print("child got", r.recv())
            p.join(30)
        try:
            w.send(f)
        except Exception as exc:
            print("send:", isinstance(exc, TypeError), str(exc).split(":")[0])
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_an_open_file_is_refused_as_by_the_stdlib(tmp_path, method):
    """spawn/forkserver pickle the Process (the file is refused); fork inherits it."""
    ours = run_script(tmp_path, OPEN_FILE_SCRIPT, "corral", method)
    theirs = run_script(tmp_path, OPEN_FILE_SCRIPT, "multiprocessing", method)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout, (ours.stdout, theirs.stdout)
    assert "send: True cannot pickle '_io.TextIOWrapper' object" in ours.stdout
