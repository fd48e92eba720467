"""Recipe: shell commands in parallel from Python (docs/guide.md, "Shell commands in parallel").

``corral.run_commands`` is what ``corral run`` uses: each command runs in a
process group of its own, its output is captured whole, a timeout stops the
group (grandchildren included), and the results come back in input order as
``subprocess.CompletedProcess`` objects.

Run: python examples/commands_in_parallel.py
"""

from __future__ import annotations

import corral

COMMANDS = [
    "echo compressing a; echo warning about a >&2",
    "printf '%s\\n' b c | wc -l",
    "exit 3",
    "sleep 60 & sleep 60",  # two processes: both are stopped at the timeout
]


def main() -> None:
    results = corral.run_commands(COMMANDS, jobs=4, timeout=1.0)
    for result in results:
        if result.timed_out:
            outcome = "timed out"
        elif result.returncode:
            outcome = f"failed with status {result.returncode}"
        else:
            outcome = f"printed {result.stdout.strip()!r}, warned {result.stderr.strip()!r}"
        print(f"{result.args}: {outcome}")
    try:
        corral.run_commands(["true", "false"], check=True)
    except corral.CommandFailedError as exc:  # a subprocess.CalledProcessError
        print(f"check=True: {exc}")


if __name__ == "__main__":
    main()
