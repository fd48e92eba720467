"""Per-class table of public-API results from ../shared/conformance/run.py JSON files.

Usage:
    python ../shared/conformance/run.py --package corral --start-method fork \\
        --suite mp --timeout 30 --json /tmp/conf/fork.json      # likewise spawn, forkserver
    python tools/conformance_table.py /tmp/conf/fork.json /tmp/conf/spawn.json ...

Prints a Markdown table (pass/total public tests per class and start method) for
the classes named with --classes (default: the classes of the foundation issue),
the totals, and the public tests of those classes that do not pass, with the
last line of their error.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

FOUNDATION = [
    "WithProcessesTestProcess",
    "WithProcessesTestSubclassingProcess",
    "WithProcessesTestConnection",
    "WithProcessesTestListener",
    "WithProcessesTestListenerClient",
    "WithProcessesTestPicklingConnections",
    "WithProcessesTestPoll",
    "WithProcessesTestPollEintr",
    "WithProcessesTestLogging",
    "TestStartMethod",
    "TestWait",
    "TestFlags",
    "TestCloseFds",
    "TestIgnoreEINTR",
    "TestNoForkBomb",
    "TestInvalidFamily",
    "TestTimeouts",
    "TestStdinBadfiledescriptor",
    "OtherTest",
    "MiscTestCase",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--classes", nargs="*", default=FOUNDATION)
    args = parser.parse_args()
    runs = {}
    for path in args.reports:
        report = json.loads(path.read_text())
        method = report.get("start_method") or path.stem
        runs[method] = report["suites"]["multiprocessing"]
    print("| class | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for cls in args.classes:
        cells = []
        for suite in runs.values():
            c = collections.Counter()
            for test in suite["tests"]:
                if test["class"] == cls and test["api"] == "public":
                    c[test["outcome"]] += 1
                    c["total"] += 1
            cell = f"{c['pass']}/{c['total']}"
            if c["skip"]:
                cell += f" ({c['skip']} skip)"
            cells.append(cell)
        print(f"| {cls} | " + " | ".join(cells) + " |")
    print()
    for method, suite in runs.items():
        public = suite["summary"]["public"]
        print(
            f"{method}: public {public['pass']}/{public['total']} pass, "
            f"{public['skip']} skip, {public['fail']} fail, {public['error']} error, "
            f"{public['timeout']} timeout"
        )
    print()
    for method, suite in runs.items():
        for test in suite["tests"]:
            if (
                test["class"] in args.classes
                and test["api"] == "public"
                and test["outcome"] not in ("pass", "skip")
            ):
                last = (test.get("detail") or "").strip().splitlines()[-1:] or [""]
                print(f"- {method} {test['id']}: {test['outcome']}: {last[0][:160]}")


if __name__ == "__main__":
    main()
