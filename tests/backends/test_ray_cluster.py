"""corral on a Ray cluster deployed as a user would: ``ray start`` head plus a second node.

Two ``ray start`` invocations (one CPU each) make a two-node cluster on this
machine, in a temp dir of its own, with the dashboard off and no usage
reporting. A program connects ``corral.Pool`` to it by address (and by
``RAY_ADDRESS``), sees its capacity and runs tasks on both nodes; the cluster
outlives the program (corral never stops a cluster it did not start). The test
stops exactly the processes it started: ``ray start`` runs in a new session, so
its daemons share its process group, which the test signals (``ray stop`` would
stop every Ray cluster on the machine, other users' too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs ray: pip install 'corral[ray]'")

from ..conftest import run_script  # noqa: E402
from .test_ray_engine import RAY_ENV  # noqa: E402

pytestmark = pytest.mark.timeout(120)

RAY_CLI = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def _stop_groups(pgids: list[int]) -> None:
    """SIGTERM (Ray's daemons exit cleanly on it), then SIGKILL what is left; wait."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = [p for pgid in pgids for p in _group(pgid)]
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=5 if sig == signal.SIGTERM else 10)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A head and a second node started with ``ray start``; yields the head's address."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    temp = tempfile.mkdtemp(prefix="crt-", dir="/tmp")  # short: Ray's socket paths
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus=1", f"--temp-dir={temp}", "--object-store-memory=80000000"]
    head = ["--head", f"--port={address.split(':')[1]}", "--include-dashboard=false"]
    commands = [
        [RAY_CLI, "start", *head, "--disable-usage-stats", *common],
        [RAY_CLI, "start", f"--address={address}", *common],
    ]
    pgids: list[int] = []
    try:
        for command in commands:
            proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its daemons keep this process group
            )
            pgids.append(proc.pid)
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out[-3000:]
        yield address
    finally:
        _stop_groups(pgids)
        left = [p for pgid in pgids for p in _group(pgid)]
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"the test's Ray cluster left processes: {left}"


PROGRAM = """
import json, os, sys, time
import corral
from corral.backends import Ray

def where(_):
    import ray
    time.sleep(0.3)
    return os.getpid(), ray.get_runtime_context().get_node_id()

backend = Ray(address=sys.argv[1]) if sys.argv[1] != "env" else "ray"
with corral.Pool(backend=backend) as pool:
    seen = pool.map(where, range(8), chunksize=1)
    report = {
        "capacity": pool._processes,
        "pids": len({pid for pid, _ in seen}),
        "nodes": len({node for _, node in seen}),
    }
pool.join()
print(json.dumps(report))
"""


def test_a_pool_on_a_two_node_cluster_started_with_ray_start(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcs = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "gcs_server"]
    for how in (ray_cluster, "env"):
        if how == "env":
            monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
        result = run_script(tmp_path, PROGRAM, how, timeout=90)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report == {"capacity": 2, "pids": 2, "nodes": 2}
    # corral disconnected, and left the cluster it did not start running.
    assert gcs and all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in gcs)


UNREACHABLE = """
import sys, time
import corral
from corral.backends import Ray

address = sys.argv[1]
backend = "ray" if sys.argv[2] == "env" else Ray(address=address)
start = time.monotonic()
try:
    corral.Pool(backend=backend)
except ConnectionError as exc:
    print(f"{time.monotonic() - start:.1f}", exc)
else:
    print("no error")
"""


@pytest.mark.parametrize("how", ["address", "ray-client", "env"])
def test_an_address_where_nothing_listens_raises_connection_error_soon(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ray.init alone retried such an address for minutes ("Failed to connect to GCS").
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    address = f"127.0.0.1:{_free_port()}"  # closed at once: nothing listens there
    if how == "ray-client":
        address = f"ray://{address}"
    if how == "env":
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = run_script(tmp_path, UNREACHABLE, address, how, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    seconds, _, message = result.stdout.strip().partition(" ")
    assert seconds != "no", result.stdout
    assert float(seconds) < 30
    assert f"cannot reach the Ray cluster at '{address}'" in message
    assert ("RAY_ADDRESS" if how == "env" else "address") in message
    assert "ray status" in message
