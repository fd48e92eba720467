"""util: finalizers, after-fork hooks, logging."""

from __future__ import annotations

import gc
import logging

import pytest

from corral import util


class Obj:
    pass


def test_finalize_runs_once_on_collection():
    calls = []
    obj = Obj()
    fin = util.Finalize(obj, calls.append, args=("collected",))
    assert fin.still_active()
    del obj
    gc.collect()
    assert calls == ["collected"]
    assert not fin.still_active()
    assert fin() is None  # already ran


def test_finalize_call_and_cancel():
    calls = []
    obj = Obj()
    fin = util.Finalize(obj, lambda: calls.append("called") or 5)
    assert fin() == 5
    fin2 = util.Finalize(obj, calls.append, args=("never",))
    fin2.cancel()
    del obj
    gc.collect()
    assert calls == ["called"]


def test_run_finalizers_by_priority():
    calls = []
    fins = [util.Finalize(None, calls.append, args=(p,), exitpriority=p) for p in (1, 10, 5)]
    util._run_finalizers(5)
    assert calls == [10, 5]
    util._run_finalizers(0)
    assert calls == [10, 5, 1]
    assert not any(f.still_active() for f in fins)


def test_finalize_argument_errors():
    with pytest.raises(ValueError, match="exitpriority cannot be None"):
        util.Finalize(None, print)
    with pytest.raises(TypeError, match="must be None or int"):
        util.Finalize(None, print, exitpriority=1.5)


def test_register_after_fork_runs_in_order():
    calls = []
    a, b = Obj(), Obj()
    util.register_after_fork(a, lambda o: calls.append("a"))
    util.register_after_fork(b, lambda o: calls.append("b"))
    util._run_after_forkers()
    assert calls[-2:] == ["a", "b"]


def test_log_to_stderr_uses_the_stdlib_format(capsys):
    logger = util.log_to_stderr(logging.INFO)
    try:
        assert logger is util.get_logger()
        assert logger.name == "multiprocessing" and not logger.propagate
        util.info("hello %s", "there")
        err = capsys.readouterr().err
        assert "[INFO/MainProcess] hello there" in err
    finally:
        logger.setLevel(logging.NOTSET)
        for handler in list(logger.handlers):
            if getattr(handler, "_corral_stderr", False):
                logger.removeHandler(handler)
        util._log_to_stderr = False


def test_temp_dir_is_private():
    import os
    import stat

    path = util.get_temp_dir()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert util.get_temp_dir() == path


def test_thread_count_sees_every_os_thread():
    """The fork warning's thread count (a stat of /proc/self/task) matches the OS's list."""
    import os
    import threading

    from corral._popen_fork import _thread_count

    release = threading.Event()
    threads = [threading.Thread(target=release.wait, args=(30,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert _thread_count() == len(os.listdir("/proc/self/task")) >= 4
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)
