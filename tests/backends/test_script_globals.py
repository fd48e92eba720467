"""A script's initializer sets a global that its tasks read, on each backend (issue 15).

The stdlib's pattern (``def init(v): global G; G = v``, tasks read ``G``) with
both functions in the script's ``__main__``: on a cluster they travel by value,
and must still share one namespace in a worker, as in a local pool's worker.
Each backend runs in a script of its own (a fresh process), under a timeout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(180)

SCRIPT = """
import corral

def init(value):
    global G
    G = value

def helper():
    return G

def get(x):
    return (globals().get("G"), helper(), x)

if __name__ == "__main__":
    with corral.Pool(2, backend={backend!r}, initializer=init, initargs=(42,)) as pool:
        print(pool.map(get, range(4), chunksize=1))
        print(pool.apply(get, (9,)))
"""


@pytest.mark.parametrize(
    ("backend", "package"), [("process", "corral"), ("dask", "distributed"), ("ray", "ray")]
)
def test_an_initializers_global_reaches_the_tasks(tmp_path, backend, package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"needs {package}: pip install 'corral[{backend}]'")
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(SCRIPT.format(backend=backend)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-2:] == [str([(42, 42, i) for i in range(4)]), str((42, 42, 9))]
