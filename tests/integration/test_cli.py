"""``corral map`` (the command line): results in order, errors per input, the backend options."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from corral import cli

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
