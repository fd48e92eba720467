"""corral.run_commands: results are CompletedProcess[str] with duration and timed_out."""

from __future__ import annotations

import subprocess

from typing_extensions import assert_type

import corral


def main() -> None:
    results = corral.run_commands(["echo hi", ["printf", "%s", "x"]], jobs=2, timeout=10.0)
    assert_type(results, list[corral.CompletedCommand])
    first: subprocess.CompletedProcess[str] = results[0]
    seconds: float = results[0].duration
    late: bool = results[0].timed_out
    output: str | None = first.stdout
    try:
        corral.run_commands(["exit 1"], check=True)
    except corral.CommandFailedError as error:
        failed: list[corral.CompletedCommand] = error.failed
        print(len(error.results), len(failed), error.returncode)
    print(output, seconds, late)


if __name__ == "__main__":
    main()
