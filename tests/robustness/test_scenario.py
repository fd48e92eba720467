"""The scenario helper itself: what a test waits for is what the script printed."""

from __future__ import annotations

import signal

import pytest

from tests.robustness.scenario import Scenario

pytestmark = pytest.mark.timeout(60)

TWO_LINES_AT_ONCE = """
if __name__ == "__main__":
    sys.stdout.write("first\\nsecond\\nthird\\n")  # one write: the lines arrive together
    sys.stdout.flush()
    threading.Event().wait(60)
"""


def test_lines_that_arrive_together_are_each_seen(tmp_path):
    scenario = Scenario(tmp_path, TWO_LINES_AT_ONCE)
    assert scenario.wait_for_line("first", timeout=10) == "first"
    assert scenario.wait_for_line("second", timeout=10) == "second"
    scenario.proc.send_signal(signal.SIGKILL)
    _code, out, _err = scenario.finish(timeout=30)
    assert out == "third\n"  # read ahead, handed back by finish()
