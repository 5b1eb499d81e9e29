#!/usr/bin/python3
"""Figure 6: a node's memory with 1,000 concurrent idle SMTP connections.
Opens the connections, reads each greeting (so every session is live and
waiting for a command), then reads the node's VmRSS and peak VmHWM from /proc;
also RssAnon (the node's own memory; RssFile is shared libraries) and the
growth per connection. Connections are closed and the node stopped by the end.

    /usr/bin/python3 bench/memory.py [--connections 1000] [--rounds 3]
"""
import argparse
import sys
import os
import selectors
import socket
import time

import lib


def status(pid):
    return {k: lib.status_kib(pid, k) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def one_run(n, leftovers):
    work = lib.workdir("mailnet-bench-memory-")
    leftovers.append(work)
    port = lib.free_ports(1)[0]
    topology = {"name": "bench-memory", "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1, socket.SOCK_DGRAM)[0]}"},
                "domains": [{"name": "jaku.com", "listen": f"127.0.0.1:{port}", "users": ["bench"],
                             "limits": {"connections": n + 100}}]}
    net = lib.Network(topology, work).up()
    socks = []
    try:
        pid = net.pids()["jaku.com"]
        idle = status(pid)
        sel = selectors.DefaultSelector()
        deadline = time.monotonic() + 60
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        greeted = 0
        while greeted < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {greeted} of {n} greetings within 60 s")
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(512)
                if not data.startswith(b"220"):
                    raise RuntimeError(f"unexpected greeting {data[:80]!r}")
                sel.unregister(key.fileobj)
                greeted += 1
        loaded = status(pid)
        return {"idle_rss": idle["VmRSS"], "rss": loaded["VmRSS"], "hwm": loaded["VmHWM"],
                "anon": loaded["RssAnon"], "kib_per_conn": (loaded["VmRSS"] - idle["VmRSS"]) * 1024 / n}
    finally:
        for s in socks:
            s.close()
        net.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if lib.raise_nofile() < args.connections + 50:
        raise SystemExit("the open-file limit is too low for this many connections")
    lib.log(f"memory: {args.connections} idle connections; {lib.machine()}")
    runs, leftovers = [], []
    try:
        for rnd in range(args.rounds):
            r = one_run(args.connections, leftovers)
            runs.append(r)
            lib.log(f"  round {rnd}: idle {r['idle_rss']:.1f} MiB, with connections {r['rss']:.1f} MiB "
                    f"(peak {r['hwm']:.1f}, anon {r['anon']:.1f}), {r['kib_per_conn']:.1f} KiB/connection")
    except BaseException:
        lib.cleanup(leftovers)
        raise
    print(f"\n## memory: one node, {args.connections} concurrent idle connections (greeted, waiting for a command)")
    print(f"{lib.machine()}\n")
    print("| figure | median (min..max) |")
    print("| --- | --- |")
    print(f"| node RSS idle, MiB | {lib.summary([r['idle_rss'] for r in runs], '{:.1f}')} |")
    print(f"| node RSS with the connections, MiB | {lib.summary([r['rss'] for r in runs], '{:.1f}')} |")
    print(f"| node peak RSS (VmHWM), MiB | {lib.summary([r['hwm'] for r in runs], '{:.1f}')} |")
    print(f"| of which anonymous (RssAnon), MiB | {lib.summary([r['anon'] for r in runs], '{:.1f}')} |")
    print(f"| growth per connection, KiB | {lib.summary([r['kib_per_conn'] for r in runs], '{:.1f}')} |")

    sys.stdout.flush()
    lib.cleanup(leftovers)

if __name__ == "__main__":
    main()
