"""Shared fixtures of the mooncake.engine tests: peers in their own processes
(peer_target.py), local engines on 127.0.0.1 in P2P mode, byte patterns."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mooncake.engine import TransferEngine

HERE = os.path.dirname(os.path.abspath(__file__))

# Same-host peers would otherwise use the shm transport; these tests are about
# the module over the network path.  MC_TE_SAME_HOST_TRANSPORT=1 runs them on shm.
os.environ.setdefault("MC_TE_SAME_HOST_TRANSPORT", "0")


def pattern(n, seed):
    """The bytes peer_target.py writes and checks for (n, seed)."""
    return ((np.arange(n, dtype=np.uint64) * 2654435761 + seed * 97 + 13) >> 7).astype(np.uint8)


class Peer:
    """A TransferEngine target in another process, driven by JSON lines."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "peer_target.py"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, **(env or {})))
        info = json.loads(self.proc.stdout.readline() or '{"error": "peer exited"}')
        if "error" in info:
            self.close()
            raise RuntimeError(f"peer failed to start: {info['error']}")
        self.segment = info["segment"]
        self.rpc_port = info["rpc_port"]
        self.addrs = info["addrs"]
        self.addr = self.addrs[0]
        self.size = info["size"]

    def call(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def fill(self, off, length, seed, buf=0):
        assert self.call(op="fill", buf=buf, off=off, len=length, seed=seed)["ok"]

    def check(self, off, length, seed, buf=0):
        return self.call(op="check", buf=buf, off=off, len=length, seed=seed)["ok"]

    def notifies(self):
        return self.call(op="notifies")["notifies"]

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()


@pytest.fixture
def make_peer():
    peers = []

    def make(*args, env=None):
        p = Peer(*args, env=env)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


@pytest.fixture(scope="module")
def peer():
    p = Peer("--size", str(4 << 20))
    yield p
    p.close()


def new_engine(protocol="tcp"):
    engine = TransferEngine()
    assert engine.initialize("127.0.0.1", "P2PHANDSHAKE", protocol, "") == 0
    return engine


@pytest.fixture(scope="module")
def engine():
    return new_engine()


class Local:
    """A registered local numpy buffer of an engine."""

    def __init__(self, engine, size):
        self.engine = engine
        self.buf = np.zeros(size, dtype=np.uint8)
        self.addr = self.buf.ctypes.data
        assert engine.register_memory(self.addr, size) == 0

    def close(self):
        assert self.engine.unregister_memory(self.addr) == 0


@pytest.fixture
def local(engine):
    made = []

    def make(size=1 << 20, eng=None):
        loc = Local(eng or engine, size)
        made.append(loc)
        return loc

    yield make
    for loc in made:
        loc.close()
