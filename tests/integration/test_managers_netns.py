"""A remote manager across two network namespaces joined by a veth pair.

The server runs in one namespace, the clients in the other: the only way
between them is the virtual link, as between two hosts. Needs root and
iproute2 (``ip netns``); where the sandbox cannot make namespaces the test is
skipped with the reason (the loopback tests in test_managers.py still run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import corral

SERVER_IP = "10.213.0.1"
CLIENT_IP = "10.213.0.2"
TIMEOUT = 60

SERVER = """
import queue, sys
from corral.managers import BaseManager
q = queue.Queue()
class Server(BaseManager):
    pass
Server.register("get_queue", callable=lambda: q)
server = Server(address=("", 0), authkey=b"netns-key").get_server()
print(server.address[1], flush=True)
server.serve_forever()
"""

CLIENT = """
import sys
from corral.managers import BaseManager
class Client(BaseManager):
    pass
Client.register("get_queue")
m = Client(address=(sys.argv[1], int(sys.argv[2])), authkey=b"netns-key")
m.connect()
q = m.get_queue()
if sys.argv[3] == "put":
    q.put({"from": "the other namespace"})
    print("put", flush=True)
else:
    print(q.get(timeout=30), flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_namespaces():
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 to make network namespaces")
    tag = f"{os.getpid() % 100000}"
    a, b = f"corral-a-{tag}", f"corral-b-{tag}"
    made = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", f"cva{tag}", "type", "veth", "peer", "name", f"cvb{tag}")
        for ns, dev, ip in ((a, f"cva{tag}", SERVER_IP), (b, f"cvb{tag}", CLIENT_IP)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        stderr = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot make network namespaces here: {exc} {stderr.decode()}")
    try:
        yield a, b
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _python_in(ns: str, tmp_path, name: str, code: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(corral.__file__))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def test_remote_manager_between_two_namespaces(two_namespaces, tmp_path):
    server_ns, client_ns = two_namespaces
    server = _python_in(server_ns, tmp_path, "server", SERVER)
    try:
        port = server.stdout.readline().strip()  # type: ignore[union-attr]
        assert port.isdigit(), server.stderr.read()  # type: ignore[union-attr]
        putter = _python_in(client_ns, tmp_path, "putter", CLIENT, SERVER_IP, port, "put")
        out, err = putter.communicate(timeout=TIMEOUT)
        assert putter.returncode == 0 and out.strip() == "put", err
        getter = _python_in(client_ns, tmp_path, "getter", CLIENT, SERVER_IP, port, "get")
        out, err = getter.communicate(timeout=TIMEOUT)
        assert getter.returncode == 0, err
        assert out.strip() == "{'from': 'the other namespace'}"
    finally:
        server.kill()
        server.communicate(timeout=TIMEOUT)
