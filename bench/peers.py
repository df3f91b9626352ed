#!/usr/bin/python3
"""bench/peers.py - what one engine holds per peer: threads, open file
descriptors and resident memory of a process with one engine ("A") that
talks to N peers (engines spread over a few helper processes, P2PHANDSHAKE
metadata, tcp only), at N = 0, 64, 256, 1024; then while A and the peers
stay idle for 1.5 x MC_TCP_IDLE_TIMEOUT_MS; then after the peers' processes
exit.  At each step every peer so far gets one 4 KiB write and one read
from A (A is the initiator: lane threads and connections) and writes 4 KiB
to A (A is the target: data port connections).  Figures, not assertions:

    PYTHONPATH=build/python /usr/bin/python3 bench/peers.py [--peers 64,256,1024]
        [--procs 8] [--idle-ms 3000] [--json]

MC_TCP_IDLE_TIMEOUT_MS is set to --idle-ms in every process (the engine's
default is 300000), so the idle row comes within seconds.
"""
import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import time

BLOCK = 4096


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))


def new_engine():
    from mooncake.engine import TransferEngine, last_error
    e = TransferEngine()
    rc = e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")
    if rc != 0:
        raise RuntimeError(f"initialize failed: {rc}: {last_error()}")
    buf = ctypes.create_string_buffer(BLOCK)
    addr = ctypes.addressof(buf)
    if e.register_memory(addr, BLOCK) != 0:
        raise RuntimeError("register_memory failed")
    return e, buf, addr


# ---- helper process: a few hundred peer engines, driven over stdin ----------

def helper():
    raise_fd_limit()
    engines = []
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "start":  # start K: K more engines, their names and buffers
            fresh = [new_engine() for _ in range(int(cmd[1]))]
            engines += fresh
            print(json.dumps([[f"127.0.0.1:{e.get_rpc_port()}", a] for e, _, a in fresh]),
                  flush=True)
        elif cmd[0] == "write":  # write SESSION ADDR: every new engine writes to A
            done = 0
            for e, _, a in engines[int(cmd[3]):]:
                done += e.transfer_sync_write(cmd[1], a, int(cmd[2]), BLOCK) == 0
            print(done, flush=True)
        elif cmd[0] == "exit":
            break
    os._exit(0)  # the engines go away with the process, as a crashed peer's would


# ---- A ------------------------------------------------------------------------

def usage():
    st = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if v.split():
                st[k] = v.split()[0]
    return {"threads": int(st["Threads"]), "fds": len(os.listdir("/proc/self/fd")),
            "rss_kib": int(st["VmRSS"])}


class Helpers:
    def __init__(self, n):
        env = dict(os.environ)
        self.procs = [subprocess.Popen([sys.executable, __file__, "--helper"], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for _ in range(n)]
        self.count = [0] * n

    def ask(self, i, line):
        p = self.procs[i]
        p.stdin.write(line + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    def grow(self, total):
        """Starts engines until there are `total`, spread evenly; returns the new ones."""
        new = []
        for i in range(len(self.procs)):
            want = total // len(self.procs) + (i < total % len(self.procs)) - self.count[i]
            if want > 0:
                new += [(i, s, a) for s, a in self.ask(i, f"start {want}")]
        return new

    def write_to(self, session, addr, first):
        done = 0
        for i in range(len(self.procs)):
            done += self.ask(i, f"write {session} {addr} {first[i]}")
        return done

    def stop(self):
        for p in self.procs:
            p.stdin.write("exit\n")
            p.stdin.flush()
        for p in self.procs:
            p.wait()
            p.stdin.close()
            p.stdout.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", default="64,256,1024")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--idle-ms", type=int, default=3000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--helper", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("MC_TE_TRANSPORTS", "tcp")
    if not args.helper:  # helpers inherit A's
        os.environ["MC_TCP_IDLE_TIMEOUT_MS"] = str(args.idle_ms)
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
    # Two ports per engine (RPC, tcp data): 1025 engines need more than the
    # default 15000..17000.
    os.environ.setdefault("MC_MIN_RPC_PORT", "20000")
    os.environ.setdefault("MC_MAX_RPC_PORT", "40000")
    if args.helper:
        return helper()
    raise_fd_limit()
    a, _abuf, aaddr = new_engine()
    session = f"127.0.0.1:{a.get_rpc_port()}"
    rows = []

    def row(what, peers, extra=None):
        r = {"state": what, "peers": peers, **usage(), **(extra or {})}
        rows.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{what:<28} {peers:>5} {r['threads']:>8} {r['fds']:>6} {r['rss_kib']:>10}"
                  + (f"  {extra}" if extra else ""), flush=True)

    if not args.json:
        print(f"{'A (one engine) after':<28} {'peers':>5} {'threads':>8} {'fds':>6} {'RSS KiB':>10}")
    row("start", 0)
    helpers = Helpers(args.procs)
    peers = []
    for n in [int(x) for x in args.peers.split(",")]:
        new = helpers.grow(n)
        for i, _, _ in new:
            helpers.count[i] += 1
        peers += new
        t0 = time.time()  # every peer so far, so that none has been idle long
        ok = 0
        for _, s, addr in peers:
            ok += a.transfer_sync_write(s, aaddr, addr, BLOCK) == 0
            ok += a.transfer_sync_read(s, aaddr, addr, BLOCK) == 0
        written = helpers.write_to(session, aaddr, [0] * len(helpers.procs))
        row("talked to every peer", len(peers),
            {"ok_transfers": ok + written, "expected": 3 * len(peers),
             "seconds": round(time.time() - t0, 2)})
    wait = args.idle_ms / 1000 * 1.5 + 1
    time.sleep(wait)
    row(f"idle, peers alive (+{wait:.1f} s)", len(peers))
    helpers.stop()
    time.sleep(1.0)
    row("peers gone (+1 s)", len(peers))
    if not args.json:
        n0, last = rows[0], [r for r in rows if r["state"] == "talked to every peer"][-1]
        dp = max(last["peers"], 1)
        print(f"per peer while connected: {(last['threads'] - n0['threads']) / dp:.2f} threads, "
              f"{(last['fds'] - n0['fds']) / dp:.2f} fds, "
              f"{(last['rss_kib'] - n0['rss_kib']) / dp:.1f} KiB RSS")
        end = rows[-1]
        print(f"left after the peers went away: {end['threads'] - n0['threads']} threads, "
              f"{end['fds'] - n0['fds']} fds, {end['rss_kib'] - n0['rss_kib']} KiB RSS "
              f"more than at the start")


if __name__ == "__main__":
    sys.exit(main())
