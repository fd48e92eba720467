"""``progress=`` on every map-like call and on ``corral.as_completed`` (issue 16)."""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

import corral
from corral.pool import ThreadPool

pytestmark = pytest.mark.timeout(90)


def slow_square(x):
    time.sleep(0.15)  # the work: long enough for a report between two items
    return x * x


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


class Counts:
    """A progress callable that records the increments it gets (from any thread)."""

    def __init__(self):
        self.increments: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, n):
        with self.lock:
            self.increments.append(n)

    @property
    def total(self):
        return sum(self.increments)


def test_map_advances_per_item_within_a_chunk(ctx):
    counts = Counts()
    with ctx.Pool(2) as pool:
        # One chunk of 6 slow items: per chunk, the bar would jump 0 -> 6 once.
        assert pool.map(slow_square, range(6), chunksize=6, progress=counts) == [
            i * i for i in range(6)
        ]
    assert counts.total == 6
    assert len(counts.increments) >= 3, counts.increments
    assert all(n > 0 for n in counts.increments)


def test_every_map_like_call_reaches_its_total(ctx):
    with ctx.Pool(2) as pool:
        for call in (
            lambda c: pool.map(square, range(50), progress=c),
            lambda c: pool.map_async(square, range(50), progress=c).get(30),
            lambda c: pool.starmap(pow, [(2, i) for i in range(50)], progress=c),
            lambda c: pool.starmap_async(pow, [(2, i) for i in range(50)], progress=c).get(30),
            lambda c: list(pool.imap(square, range(50), chunksize=7, progress=c)),
            lambda c: list(pool.imap_unordered(square, range(50), chunksize=7, progress=c)),
        ):
            counts = Counts()
            assert len(call(counts)) == 50
            assert counts.total == 50


def test_imap_of_a_generator_counts_without_a_total(ctx):
    counts = Counts()
    with ctx.Pool(2) as pool:
        it = pool.imap(square, (i for i in range(20)), chunksize=3, progress=counts)
        assert list(it) == [i * i for i in range(20)]
    assert counts.total == 20


def test_executor_map_advances_per_item(ctx):
    counts = Counts()
    with corral.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        results = ex.map(slow_square, range(6), chunksize=6, progress=counts)
        assert list(results) == [i * i for i in range(6)]
    assert counts.total == 6
    assert len(counts.increments) >= 3, counts.increments


def test_the_bar_stops_at_the_first_error():
    counts = Counts()
    with corral.Pool(2) as pool, pytest.raises(ValueError, match="three"):
        pool.map(fail_on_three, range(10), chunksize=1, progress=counts)
    assert counts.total < 10


def test_thread_pool_progress():
    counts = Counts()
    with ThreadPool(2) as pool:
        assert pool.map(slow_square, range(6), chunksize=6, progress=counts)[-1] == 25
    assert counts.total == 6
    assert len(counts.increments) >= 3


def test_terminate_closes_the_bar():
    class Bar:
        total = None

        def update(self, n):
            pass

    with corral.Pool(2) as pool:
        result = pool.map_async(slow_square, range(4), chunksize=1, progress=Bar())
        pool.terminate()
        with pytest.raises(corral.BrokenProcessPool):
            result.get(30)
        assert result._bar is not None and result._bar.closed


def test_as_completed_with_futures_and_pool_results():
    counts = Counts()
    with corral.ProcessPoolExecutor(2) as ex, corral.Pool(2) as pool:
        futures = [ex.submit(square, i) for i in range(5)]
        results = [pool.apply_async(square, (i,)) for i in range(5)]
        done = list(corral.as_completed(futures + results + futures[:1], 30, progress=counts))
        assert len(done) == 10
        assert sorted(f.result() for f in done if isinstance(f, cf.Future)) == [0, 1, 4, 9, 16]
        assert sorted(r.get() for r in done if not isinstance(r, cf.Future)) == [0, 1, 4, 9, 16]
    assert counts.increments == [1] * 10


def test_as_completed_times_out():
    with corral.ProcessPoolExecutor(1) as ex:
        futures = [ex.submit(time.sleep, 2), ex.submit(time.sleep, 2)]
        with pytest.raises(cf.TimeoutError, match=r"2 \(of 2\) futures unfinished"):
            list(corral.as_completed(futures, timeout=0.1))
        ex.shutdown(cancel_futures=True)


def test_a_bad_progress_argument_raises_at_the_call():
    with corral.Pool(1) as pool, pytest.raises(TypeError, match="progress must be"):
        pool.map(square, range(3), progress=3)


# --------------------------------------------------------------- on a terminal

_BAR_SCRIPT = """
import sys, time
import corral

def slow(x):
    time.sleep(0.2)
    return x

if __name__ == "__main__":
    corral.set_start_method(sys.argv[1])
    with corral.Pool(2) as pool:
        if sys.argv[2] == "finish":
            pool.map(slow, range(6), chunksize=6, progress=True)
            print("mapped", flush=True)
        else:
            try:
                pool.map(slow, range(200), chunksize=100, progress=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    import threading
    print("threads", sorted(t.name for t in threading.enumerate()), flush=True)
"""


def _run_on_a_terminal(tmp_path, method, mode, interrupt=False):
    """Run the script with stderr on a pseudo-terminal; return (stdout, terminal text)."""
    script = tmp_path / "bar.py"
    script.write_text(textwrap.dedent(_BAR_SCRIPT))
    master, slave = os.openpty()
    # A terminal 100 columns wide (a new pseudo-terminal has no size; tqdm asks it).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, COLUMNS="100")
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.Popen(
        [sys.executable, str(script), method, mode],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    terminal = b""
    out = b""
    deadline = time.monotonic() + 60
    sent = False
    try:
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"the script did not finish: {terminal!r} {out!r}")
            ready, _, _ = select.select([master, proc.stdout], [], [], min(remaining, 1.0))
            if master in ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer closed it
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                terminal += chunk
            if proc.stdout in ready:
                out += os.read(proc.stdout.fileno(), 65536)
            if interrupt and not sent and b"/200" in terminal and b" 0/200" not in terminal[-60:]:
                os.kill(proc.pid, signal.SIGINT)  # Ctrl-C once the bar has moved
                sent = True
        out += proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        os.close(master)
    return out.decode(), terminal.decode(errors="replace")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_progress_true_draws_a_bar_on_a_terminal(tmp_path, method):
    out, terminal = _run_on_a_terminal(tmp_path, method, "finish")
    assert "mapped" in out
    assert "\r" in terminal and "6/6" in terminal and "100%" in terminal
    assert terminal.rstrip(" ").endswith("\n")  # the bar's line was ended
    assert "corral" not in out.split("threads", 1)[1]  # no bar thread left behind
    assert "Traceback" not in terminal


def test_ctrl_c_closes_the_bar(tmp_path):
    out, terminal = _run_on_a_terminal(tmp_path, "fork", "interrupt", interrupt=True)
    assert "interrupted" in out
    assert "200/200" not in terminal
    assert terminal.rstrip(" ").endswith("\n")


def test_progress_true_is_silent_off_a_terminal(tmp_path):
    script = tmp_path / "quiet.py"
    script.write_text(
        "import corral\n"
        "if __name__ == '__main__':\n"
        "    with corral.Pool(2) as pool:\n"
        "        print(sum(pool.map(abs, range(100), progress=True)))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "4950"
    assert proc.stderr == ""
