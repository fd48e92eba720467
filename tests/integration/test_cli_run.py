"""``corral run`` (the command line): commands from arguments, stdin or a template."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import pytest

from corral._cli_run import expand
from tests.integration.cli_helpers import (
    OnTerminal,
    Session,
    assert_group_gone,
    corral,
    corral_in_pty,
    kill_groups,
    wait_for_fifo_lines,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("gzip {}", "gzip 'dir/my file.tar.gz'"),
        ("gzip", "gzip 'dir/my file.tar.gz'"),
        ("echo {.}", "echo 'dir/my file.tar'"),
        ("echo {/}", "echo 'my file.tar.gz'"),
        ("echo {//}", "echo dir"),
        ("echo {/.}", "echo 'my file.tar'"),
        ("echo {#}: {}", "echo 7: 'dir/my file.tar.gz'"),
    ],
)
def test_placeholders(template, expected):
    assert expand(template, "dir/my file.tar.gz", 7) == expected


def test_arguments_after_the_marker_reach_the_command_intact():
    done = corral("run", "-k", "printf '%s|' {}", ":::", "a b", "it's", "$HOME", "-x")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a b|it's|$HOME|-x|"


def test_stdin_lines_are_the_arguments_of_a_template():
    done = corral("run", "-k", "echo got", stdin="one\n\ntwo words\n")
    assert (done.returncode, done.stdout) == (0, "got one\ngot two words\n")


def test_without_a_template_each_stdin_line_is_a_command():
    done = corral("run", "-k", "-j", "2", stdin="echo a | tr a b\necho c; echo d\n")
    assert (done.returncode, done.stdout) == (0, "b\nc\nd\n")


def test_keep_order_prints_in_input_order():
    # The first command ends last; -k still prints it first.
    done = corral("run", "-k", "-j", "3", "sleep {}; echo {}", ":::", "0.5", "0", "0")
    assert done.stdout == "0.5\n0\n0\n"


def test_each_commands_output_is_one_block():
    loop = "for i in 1 2 3 4 5; do echo {}$i; echo {}err$i >&2; sleep 0.02; done"
    done = corral("run", "-j", "2", loop, ":::", "A", "B")
    assert done.returncode == 0
    out = done.stdout.split()
    assert out in (
        [f"A{i}" for i in range(1, 6)] + [f"B{i}" for i in range(1, 6)],
        [f"B{i}" for i in range(1, 6)] + [f"A{i}" for i in range(1, 6)],
    )
    err = done.stderr.splitlines()[:-1]  # the summary comes last
    assert [line[0] for line in err] in (["A"] * 5 + ["B"] * 5, ["B"] * 5 + ["A"] * 5)


def test_json_lines_hold_every_outcome(tmp_path):
    in_group = f"cut -d' ' -f5 /proc/$$/stat > {tmp_path}/pgid; sleep 1000"  # $$: the inner sh
    done = corral(
        "run", "--json", "-k", "--timeout", "0.5", "sh -c {}", ":::",
        "echo out; echo err >&2", "exit 3", in_group,
    )  # fmt: skip
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in records] == [
        "echo out; echo err >&2",
        "exit 3",
        in_group,
    ]
    first, second, third = records
    assert first["command"] == "sh -c 'echo out; echo err >&2'"
    assert (first["exit_code"], first["stdout"], first["stderr"]) == (0, "out\n", "err\n")
    assert (second["exit_code"], second["timed_out"]) == (3, False)
    assert (third["exit_code"], third["timed_out"]) == (-15, True)
    assert third["duration"] >= 0.5
    assert_group_gone(int((tmp_path / "pgid").read_text()))


def test_failures_are_reported_and_give_exit_status_1():
    done = corral("run", "-k", "--timeout", "0.5", stdin="true\nexit 3\nsleep 100\nkill -9 $$\n")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[:3] == [
        "corral run: exit 3: exit 3",
        "corral run: timed out after 0.5 s: sleep 100",
        "corral run: killed by SIGKILL: kill -9 $$",
    ]
    assert lines[3].startswith(
        "corral run: 4 commands, 3 failed (SIGKILL: 1, exit 3: 1, timeout: 1), "
    )


def test_success_is_exit_status_0_with_a_summary_and_quiet_drops_it():
    done = corral("run", "true", ":::", "1", "2")
    assert done.returncode == 0
    assert done.stderr.startswith("corral run: 2 commands, all succeeded, ")
    assert corral("run", "-q", "true", ":::", "1").stderr == ""


def test_no_input_runs_nothing_and_succeeds():
    done = corral("run", "echo {}", stdin="")
    assert (done.returncode, done.stdout) == (0, "")


def test_dry_run_prints_the_commands():
    done = corral("run", "--dry-run", "gzip {}", ":::", "a b", "c")
    assert (done.returncode, done.stdout) == (0, "gzip 'a b'\ngzip c\n")


def test_template_words_are_joined_and_after_a_double_dash_may_start_with_a_dash():
    done = corral("run", "--dry-run", "-k", "--", "gzip", "-c", "{}", ":::", "a")
    assert (done.returncode, done.stdout) == (0, "gzip -c a\n")
    done = corral("run", "--dry-run", "gzip", "-9", ":::", "a")
    assert (done.returncode, done.stdout) == (0, "gzip -9 a\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-j", "abc", "true"], "argument -j/--jobs: expected a whole number of at least 1, "
                                "got 'abc'"),
        (["--timeout", "-1", "true"], "argument --timeout: expected a number of seconds "
                                      "greater than 0, got '-1'"),
        ([":::", "a"], "':::' needs a TEMPLATE before it"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_naming_the_problem(args, message):
    done = corral("run", *args)
    assert done.returncode == 2
    assert message in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("sig", "status", "words"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_an_interrupt_stops_every_command_group_with_one_line(tmp_path, sig, status, words):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    session = Session(
        "run", "-j", "2", f"echo $$ > {fifo}; sleep 1000 & sleep 1000; echo {{}}",
        ":::", "1", "2", "3", cwd=tmp_path,
    )  # fmt: skip
    groups = [int(line) for line in wait_for_fifo_lines(fifo, 2)]
    try:
        session.interrupt(sig)
        returncode, out, err = session.finish()
        assert (returncode, out, err) == (status, "", f"corral run: {words}, 2 commands stopped\n")
        for pgid in groups:
            assert_group_gone(pgid)
    finally:
        kill_groups(groups)


def test_ctrl_c_on_the_terminal_stops_every_command_group(tmp_path):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    template = f"echo $$ > {fifo}; sleep 1000 & sleep 1000"
    terminal = OnTerminal("run", "-j", "2", template, ":::", "1", "2", "3", cwd=tmp_path)
    groups = [int(line) for line in wait_for_fifo_lines(fifo, 2)]
    try:
        terminal.read_until(b"2 running")
        terminal.type(b"\x03")
        assert terminal.finish() == 130
        output = terminal.output.decode().replace("\r\n", "\n")
        last_line = output.rstrip("\n").split("\n")[-1]
        assert last_line.split("\x1b[K")[-1] == "corral run: interrupted, 2 commands stopped"
        assert "Traceback" not in output
        for pgid in groups:
            assert_group_gone(pgid)
    finally:
        kill_groups(groups)


def test_progress_is_drawn_on_a_terminal(tmp_path):
    status, out, tty = corral_in_pty(
        "run", "-k", "echo {}", ":::", "1", "2", "3", stdin="", cwd=tmp_path
    )
    assert (status, out) == (0, "1\n2\n3\n")
    assert "corral run: [" in tty and "/3, 0 failed, " in tty and " running" in tty
    assert "\x1b[K" in tty
    assert (
        tty.rstrip()
        .splitlines()[-1]
        .split("\x1b[K")[-1]
        .startswith("corral run: 3 commands, all succeeded")
    )


def test_no_progress_when_stderr_is_not_a_terminal_or_with_no_progress(tmp_path):
    done = corral("run", "echo {}", ":::", "1", "2")
    assert "\r" not in done.stderr and "running" not in done.stderr
    status, _out, tty = corral_in_pty(
        "run", "--no-progress", "echo {}", ":::", "1", stdin="", cwd=tmp_path
    )
    assert status == 0 and "running" not in tty


def test_a_reader_that_goes_away_stops_the_run_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "run", "-j", "1", "seq 1 200000", ":::", "1", "2", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"1\n"
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert b"Traceback" not in err


def test_output_is_printed_while_stdin_is_still_open(tmp_path):
    """``tail -f log | corral run ...``: a command's output does not wait for the next line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "run", "-j", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(b"echo first\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no output while stdin stayed open"
        assert proc.stdout.readline() == b"first\n"
        proc.stdin.write(b"echo second\n")
    finally:
        proc.stdin.close()
    assert proc.stdout.read() == b"second\n"
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0


def test_reading_from_the_terminal_says_so(tmp_path):
    terminal = OnTerminal("run", "-k", "echo", cwd=tmp_path)
    terminal.read_until(b"reading arguments from the terminal")
    terminal.type(b"hello\n\x04")
    assert terminal.finish() == 0
    assert terminal.output.count(b"hello") == 2  # the terminal's echo, then the command's


def test_a_second_triple_colon_is_a_usage_error(tmp_path):
    done = corral("run", "echo {}", ":::", "a", ":::", "b", cwd=tmp_path)
    assert done.returncode == 2
    assert "one ':::' only" in done.stderr
    assert done.stdout == ""
