"""``corral map`` (the command line): results in order, errors per input, the backend options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from corral import cli
from tests.integration.cli_helpers import Session, corral_in_pty, wait_for_fifo_line

pytestmark = pytest.mark.timeout(120)

MODULE = textwrap.dedent(
    """
    def square(x):
        return x * x

    def fails_on_three(x):
        if x == 3:
            raise ValueError("three")
        return x
    """
)


def _corral_map(tmp_path, *args, stdin="1\n2\n3\n4\n"):
    (tmp_path / "jobs.py").write_text(MODULE)
    return subprocess.run(
        [sys.executable, "-m", "corral", "map", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=100,
        check=False,
    )


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_results_come_in_input_order_from_a_module_in_the_current_directory(tmp_path, start_method):
    done = _corral_map(tmp_path, "jobs:square", "--workers", "2", "--start-method", start_method)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [1, 4, 9, 16]


def test_a_failing_input_gets_an_error_record_and_exit_status_1(tmp_path):
    done = _corral_map(tmp_path, "jobs:fails_on_three", "--workers", "2")
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records[:2] == [1, 2]
    assert records[2] == {"error": {"type": "ValueError", "message": "three"}}
    assert records[3] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "tcp://127.0.0.1:8786"], "--address needs --backend ray or --backend dask"),
        (
            ["--backend", "dask", "--start-method", "spawn"],
            "--start-method applies to the process backend, not dask",
        ),
    ],
)
def test_contradictory_backend_options_are_usage_errors(capsys, args, message):
    assert cli.main(["map", "jobs:square", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("backend", "package"), [("dask", "distributed"), ("ray", "ray")])
def test_a_backend_whose_package_is_missing_names_the_pip_command(
    tmp_path, monkeypatch, capsys, backend, package
):
    (tmp_path / "jobs.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, package, None)  # import fails
    monkeypatch.delitem(sys.modules, f"corral._engine.{backend}_engine", raising=False)
    monkeypatch.setattr(sys, "stdin", open(tmp_path / "jobs.py"))  # noqa: SIM115  (never read)
    try:
        assert cli.main(["map", "jobs:square", "--backend", backend]) == 2
    finally:
        sys.stdin.close()
    assert f"pip install 'corral[{backend}]'" in capsys.readouterr().err


def test_a_cluster_that_cannot_be_reached_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import corral.pool

    def unreachable(*args, **kwargs):
        raise ConnectionError("nothing listens at tcp://127.0.0.1:1")

    (tmp_path / "jobs.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(corral.pool, "Pool", unreachable)
    argv = ["map", "jobs:square", "--backend", "dask", "--address", "tcp://127.0.0.1:1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "corral map: cannot start the pool: nothing listens at tcp://127.0.0.1:1\n"


# The command's manners (issue 16, part 5): usage errors are one line, help is plain text.


def test_a_missing_input_file_is_a_one_line_usage_error(tmp_path):
    (tmp_path / "jobs.py").write_text(MODULE)
    done = _corral_map(tmp_path, "jobs:square", "missing.jsonl")
    assert done.returncode == 2
    assert done.stderr == (
        "corral map: error: cannot read missing.jsonl: No such file or directory\n"
    )


def test_an_unreadable_input_file_is_a_one_line_usage_error(tmp_path):
    (tmp_path / "jobs.py").write_text(MODULE)
    done = _corral_map(tmp_path, "jobs:square", ".")
    assert done.returncode == 2
    assert done.stderr == "corral map: error: cannot read .: Is a directory\n"


def test_options_may_come_between_and_after_the_positional_arguments(tmp_path):
    (tmp_path / "input.jsonl").write_text("1\n2\n3\n")
    done = _corral_map(tmp_path, "jobs:square", "--workers", "2", "input.jsonl", "--chunksize", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1", "4", "9"]


def test_help_is_plain_text(tmp_path):
    done = _corral_map(tmp_path, "--help")
    assert done.returncode == 0
    assert "MODULE:FUNCTION" in done.stdout
    assert "``" not in done.stdout


def test_version(tmp_path):
    import corral

    done = subprocess.run(
        [sys.executable, "-m", "corral", "--version"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"corral {corral.__version__}\n")


@pytest.mark.parametrize("value", ["abc", "0"])
def test_a_bad_option_value_names_the_option_not_a_function(tmp_path, value):
    done = _corral_map(tmp_path, "jobs:square", "--workers", value)
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last.startswith("corral map: error: argument --workers: "), last
    assert "_positive" not in done.stderr
    assert repr(value) in last


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_ctrl_c_prints_one_line_exits_130_and_leaves_no_worker(tmp_path, start_method):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    (tmp_path / "jobs.py").write_text(
        textwrap.dedent(
            f"""
            import threading

            def hang(x):
                with open({str(fifo)!r}, "w") as f:
                    f.write("started\\n")
                threading.Event().wait(600)
            """
        )
    )
    session = Session(
        "map", "jobs:hang", "--workers", "1", "--start-method", start_method,
        cwd=tmp_path, stdin="1\n",
    )  # fmt: skip
    assert wait_for_fifo_line(fifo) == "started"
    session.interrupt(signal.SIGINT)
    status, out, err = session.finish()
    assert (status, out, err) == (130, "", "corral map: interrupted\n")


def test_map_draws_a_progress_bar_on_a_terminal_only(tmp_path):
    (tmp_path / "jobs.py").write_text(MODULE)
    status, out, tty = corral_in_pty(
        "map", "jobs:square", "--workers", "2", stdin="1\n2\n3\n4\n", cwd=tmp_path
    )
    assert (status, out) == (0, "1\n4\n9\n16\n")
    assert "4 items" in tty or "4it" in tty  # the built-in bar, or tqdm's
    piped = _corral_map(tmp_path, "jobs:square", "--workers", "2")
    assert (piped.returncode, piped.stderr) == (0, "")


def test_a_reader_that_goes_away_stops_the_map_quietly(tmp_path):
    (tmp_path / "jobs.py").write_text(MODULE)
    (tmp_path / "numbers.jsonl").write_text("".join(f"{n}\n" for n in range(200_000)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "map", "jobs:square", "numbers.jsonl", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"0\n"
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert err == b""
