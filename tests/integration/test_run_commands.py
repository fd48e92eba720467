"""``corral.run_commands``: shell commands in parallel, their outcomes in input order."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import corral
from tests.integration.cli_helpers import assert_group_gone, kill_groups, wait_for_fifo_lines
from tests.robustness import scenario

pytestmark = pytest.mark.timeout(120)


def test_outcomes_come_in_input_order_as_completed_processes():
    results = corral.run_commands(
        ["echo one", "echo two >&2; exit 3", ["printf", "%s|", "a b", "c"]], jobs=2
    )
    assert all(isinstance(r, subprocess.CompletedProcess) for r in results)
    assert [(r.returncode, r.stdout, r.stderr) for r in results] == [
        (0, "one\n", ""),
        (3, "", "two\n"),
        (0, "a b|c|", ""),
    ]
    assert results[2].args == ["printf", "%s|", "a b", "c"]
    assert not any(r.timed_out for r in results)
    assert all(r.duration >= 0 for r in results)


def test_jobs_commands_run_at_once(tmp_path):
    # Each command waits (up to 30 s) until all three have started: with fewer
    # than three at once, the first ones time out waiting.
    wait_for_all = (
        "touch {n}; i=0; while [ $(ls | wc -l) -lt 3 ] && [ $i -lt 3000 ]; "
        "do sleep 0.01; i=$((i+1)); done; ls | wc -l"
    )
    commands = [wait_for_all.format(n=n) for n in range(3)]
    results = corral.run_commands(commands, jobs=3, cwd=tmp_path)
    assert [r.stdout.strip() for r in results] == ["3", "3", "3"]


def test_one_job_runs_the_commands_one_after_another(tmp_path):
    log = tmp_path / "log"
    commands = [f"echo start {n} >> {log}; sleep 0.01; echo end {n} >> {log}" for n in range(4)]
    corral.run_commands(commands, jobs=1)
    lines = log.read_text().split("\n")[:-1]
    starts_and_ends = [line.split()[0] for line in lines]
    assert starts_and_ends == ["start", "end"] * 4


def test_a_timeout_stops_the_whole_process_group(tmp_path):
    command = f"echo $$ > {tmp_path}/pgid; sleep 1000 & sleep 1000"
    (result,) = corral.run_commands([command], timeout=0.5)
    assert result.timed_out
    assert result.returncode == -15  # the shell died of the SIGTERM
    assert_group_gone(int((tmp_path / "pgid").read_text()))


def test_a_timeout_also_stops_what_the_command_started_in_a_session_of_its_own(tmp_path):
    # setsid leaves the command's process group; CORRAL_RUN_ID in its environment
    # still names the command.
    command = f"setsid sh -c 'echo $$ > {tmp_path}/escaped; exec sleep 1000' & sleep 1000"
    (result,) = corral.run_commands([command], timeout=1.0)
    assert result.timed_out
    escaped = int((tmp_path / "escaped").read_text())
    try:
        assert_group_gone(escaped)
    finally:
        kill_groups([escaped])


def test_the_environment_names_the_run_and_the_command():
    results = corral.run_commands(['echo "$CORRAL_RUN_ID"'] * 2)
    first, second = (r.stdout.strip() for r in results)
    assert first.rsplit(":", 1)[0] == second.rsplit(":", 1)[0]
    assert (first.rsplit(":", 1)[1], second.rsplit(":", 1)[1]) == ("0", "1")


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: corral.run_commands("echo one string"), TypeError, "a list of commands"),
        (lambda: corral.run_commands([1, 2]), TypeError, "command 0 is int"),
        (lambda: corral.run_commands([[]]), ValueError, "command 0 is an empty list"),
        (lambda: corral.run_commands([["echo", 3]]), TypeError, "command 0 holds int"),
        (lambda: corral.run_commands(["true"], jobs="2"), TypeError, "jobs must be an int"),
        (lambda: corral.run_commands(["true"], cwd="/nonexistent"), FileNotFoundError, "cwd"),
    ],
)
def test_bad_arguments_raise_at_the_call(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_a_command_that_ignores_sigterm_gets_sigkill_after_kill_after(tmp_path):
    command = f"trap '' TERM; echo $$ > {tmp_path}/pgid; sleep 1000 & wait; wait"
    (result,) = corral.run_commands([command], timeout=0.3, kill_after=0.3)
    assert result.timed_out
    assert result.returncode == -9
    assert_group_gone(int((tmp_path / "pgid").read_text()))


def test_check_raises_a_called_process_error_with_every_outcome():
    commands = ["true", "exit 4", "exit 5"]
    with pytest.raises(corral.CommandFailedError) as caught:
        corral.run_commands(commands, check=True)
    error = caught.value
    assert isinstance(error, subprocess.CalledProcessError)
    assert (error.returncode, error.cmd) == (4, "exit 4")
    assert [r.returncode for r in error.results] == [0, 4, 5]
    assert [r.args for r in error.failed] == ["exit 4", "exit 5"]
    assert "command 'exit 4' exited with status 4; 1 more of the 3 failed" in str(error)
    assert corral.errors.CommandFailedError is corral.CommandFailedError
    copy = pickle.loads(pickle.dumps(error))  # crosses processes whole (results too)
    assert (str(copy), [r.returncode for r in copy.results]) == (str(error), [0, 4, 5])


def test_a_program_that_does_not_exist_gets_status_127_and_a_reason():
    (result,) = corral.run_commands([["/nonexistent/program", "x"]])
    assert result.returncode == 127
    assert "cannot run '/nonexistent/program x': No such file or directory" in result.stderr


def test_big_output_is_kept_whole():
    (result,) = corral.run_commands(["head -c 3000000 /dev/zero | tr '\\0' x"])
    assert result.stdout == "x" * 3_000_000


def test_a_background_process_holding_stdout_does_not_hold_the_result(tmp_path):
    (result,) = corral.run_commands([f"sleep 1000 & echo $! > {tmp_path}/bg; echo done"])
    bg = int((tmp_path / "bg").read_text())
    try:
        assert result.stdout == "done\n"
    finally:
        os.kill(bg, 9)


def test_output_that_is_not_utf8_comes_back_byte_for_byte():
    (result,) = corral.run_commands(["printf '\\377\\n'"])
    assert result.stdout.encode("utf-8", "surrogateescape") == b"\xff\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jobs": 0}, "jobs must be at least 1, got 0"),
        ({"timeout": 0}, "timeout must be a number of seconds greater than 0"),
        ({"kill_after": -1}, "kill_after must be a number of seconds (0 or more)"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        corral.run_commands(["true"], **kwargs)


def test_without_capture_the_output_goes_through():
    code = "import corral; r = corral.run_commands(['echo hi'], capture=False); print(r[0].stdout)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "hi\nNone\n"


def test_ctrl_c_stops_every_running_command_then_propagates(tmp_path):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    body = textwrap.dedent(
        f"""
        try:
            corral.run_commands(
                ["echo $$ > {fifo}; sleep 1000"] * 2 + ["echo never > {tmp_path}/third"],
                jobs=2,
            )
        except KeyboardInterrupt:
            print("interrupted")
        """
    )
    run = scenario.Scenario(tmp_path, body)
    groups = [int(line) for line in wait_for_fifo_lines(fifo, 2)]
    try:
        run.proc.send_signal(2)
        status, out, err = run.finish()
        assert (status, out.strip()) == (0, "interrupted"), err
        for pgid in groups:
            assert_group_gone(pgid)
        assert not (tmp_path / "third").exists()
    finally:
        kill_groups(groups)


def test_without_pidfds_the_commands_are_polled(monkeypatch, tmp_path):
    def no_pidfds(pid, flags=0):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    command = f"echo $$ > {tmp_path}/pgid; sleep 1000 & sleep 1000"
    quick, slow = corral.run_commands(["echo fine", command], timeout=0.5)
    assert (quick.returncode, quick.stdout) == (0, "fine\n")
    assert (slow.timed_out, slow.returncode) == (True, -15)
    assert_group_gone(int((tmp_path / "pgid").read_text()))


def test_timeouts_are_enforced_while_the_input_waits(tmp_path):
    """A generator that blocks (as stdin does) does not hold up the running commands."""
    pgid_file = tmp_path / "pgid"
    seen_gone = []

    def commands():
        yield f"echo $$ > {pgid_file}; sleep 1000"
        # Wait (up to 20 s) for the first command's timeout to stop its group.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if pgid_file.exists() and pgid_file.read_text().strip():
                try:
                    os.killpg(int(pgid_file.read_text()), 0)
                except ProcessLookupError:
                    seen_gone.append(True)
                    return
            threading.Event().wait(0.02)

    (result,) = corral.run_commands(commands(), jobs=2, timeout=0.5)
    assert result.timed_out
    assert seen_gone == [True]


def test_an_error_in_the_commands_iterable_stops_the_run_and_propagates():
    def commands():
        yield "exec sleep 1000"  # still our child if not stopped: the leak check sees it
        raise LookupError("no more")

    with pytest.raises(LookupError, match="no more"):
        corral.run_commands(commands(), kill_after=0.1)


def test_a_command_that_cannot_be_passed_to_exec_is_a_failed_result():
    ok, bad = corral.run_commands(["echo ok", "echo \0"])
    assert (ok.returncode, bad.returncode) == (0, 126)
    assert "embedded null byte" in bad.stderr


@pytest.mark.parametrize("how", ["run_commands", "corral run"])
def test_commands_stop_when_the_program_running_them_is_sigkilled(tmp_path, how):
    # SIGKILL runs no Python: the commands' groups are stopped by the watcher
    # process (_group_reaper) that sees the runner's end of its pipe close.
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    command = f"echo $$ > {fifo}; sleep 1000 & sleep 1000"
    if how == "run_commands":
        body = f"corral.run_commands([{command!r}] * 2, jobs=2)"
    else:
        body = f"""
        import subprocess, sys
        template = {command + "; : {}"!r}
        subprocess.run([sys.executable, "-m", "corral", "run", template, ":::", "a", "b"])
        """
    run = scenario.Scenario(tmp_path, body)
    groups = [int(line) for line in wait_for_fifo_lines(fifo, 2)]
    try:
        if how == "run_commands":
            run.proc.kill()
        else:
            (cli,) = psutil.Process(run.proc.pid).children()
            cli.kill()
        run.finish()
        for pgid in groups:
            assert_group_gone(pgid, within=15)
    finally:
        kill_groups(groups)
        run.kill()
