#!/usr/bin/python3
"""Figure 7: start and size. N domains as mailnet nodes (`mailnet up -d`)
against N private Postfix instances (bench/postfix_peer.py, root), N = 10 and
50: the time until every domain answers with its SMTP banner, and the memory
per domain, once up and greeted once.

    /usr/bin/python3 bench/start_size.py [--sizes 10,50] [--rounds 3] [--postfix direct,start-fg] [--fresh]

mailnet: a first `mailnet up -d --fresh`, off the clock, makes the run
folder, the certificates and each domain's DKIM key (an RSA-2048 key is a
quarter of a second of CPU), then `mailnet down`; the clock runs from the
second `mailnet up -d` (which keeps them, as every `up` after the first does,
and returns when every node is ready) until each port has answered 220.
With --fresh the clock runs from a `mailnet up -d --fresh` instead (keys
and certificates made on the clock). Postfix: every instance's folder, main.cf, master.cf, maps and
queue (`postfix check`) are made first, off the clock (as mailnet's topology
file is written off the clock); then all N are started at once, and the clock
runs until each port has answered 220. Two ways to start Postfix: `direct`
(its master, `master -d`, is our child: the fastest there is) and `start-fg`
(`postfix start-fg`: postfix-script's checks, then the master; what an
administrator runs).

Memory, from /proc/PID/smaps_rollup once every domain has greeted once: Rss,
Pss and Private (Private_Clean + Private_Dirty), for mailnet of each node
process, for Postfix summed over each instance's processes (its master and
the daemons it runs: pickup, qmgr, postlogd, and the smtpd and anvil of that
one connection, idle). mailnet's launcher and resolver serve all N domains:
they are shown apart, and divided by N in the per-domain total.
"""
import argparse
import os
import statistics
import sys
import time

import lib
import postfix_peer


def topology(n):
    ports = lib.free_ports(n)
    return {
        "name": f"bench-start-{n}",
        "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1, lib.socket.SOCK_DGRAM)[0]}"},
        "domains": [{"name": f"d{i:03d}.example", "listen": f"127.0.0.1:{p}", "users": ["bench"]}
                    for i, p in enumerate(ports)],
    }, ports


def all_greet(ports, timeout, what, check=None):
    """Waits until every port has answered 220 (each asked until it does)."""
    pending = list(ports)

    def poll():
        if check:
            check()
        pending[:] = [p for p in pending if not lib.smtp_greets(p)]
        return not pending
    lib.wait_for(poll, timeout, what)


def run_mailnet(n, leftovers, fresh=False):
    work = lib.workdir(f"mailnet-bench-start-{n}-")
    leftovers.append(work)
    topo, ports = topology(n)
    net = lib.Network(topo, work, timeout=300)
    if not fresh:
        # Off the clock, as Postfix's folders and configuration are: the run
        # folder, the certificates, the DKIM keys.
        net.up()
        net.down(timeout=120)
    t0 = time.monotonic()
    try:
        net.up(fresh=fresh)
        all_greet(ports, 60, f"{n} mailnet nodes to greet")
        ready = time.monotonic() - t0
        pids = net.pids()
        nodes = [postfix_peer.smaps_kib(p) for name, p in pids.items() if name != "resolver"]
        shared = [postfix_peer.smaps_kib(p) for p in (pids["resolver"], net.launcher_pid())]
        return {"ready_s": ready, "up_s": net.up_seconds,
                "rss": statistics.median(m["Rss"] for m in nodes) / 1024,
                "pss": statistics.median(m["Pss"] for m in nodes) / 1024,
                "private": statistics.median(m["Private"] for m in nodes) / 1024,
                "shared_rss": sum(m["Rss"] for m in shared) / 1024,
                "shared_private": sum(m["Private"] for m in shared) / 1024,
                "processes": 1}
    finally:
        net.down(timeout=120)


def run_postfix(n, direct, leftovers):
    work = lib.workdir(f"mailnet-bench-start-postfix-{n}-")
    leftovers.append(work)
    os.chmod(work, 0o755)  # the daemons run as postfix and nobody
    ports = lib.free_ports(n)
    instances = []
    try:
        for i, port in enumerate(ports):
            d = f"d{i:03d}.example"
            pf = postfix_peer.Postfix(os.path.join(work, d), port, [d])
            os.mkdir(pf.work)
            instances.append(pf.configure())

        def alive():
            for pf in instances:
                if pf.master.proc.poll() is not None:
                    raise RuntimeError(f"postfix {pf.name} exited ({pf.master.proc.returncode}):\n{pf.log_tail()}")
        t0 = time.monotonic()
        for pf in instances:
            pf.direct = direct
            pf.spawn()
        all_greet(ports, 60 + 2 * n, f"{n} Postfix instances to greet", alive)
        ready = time.monotonic() - t0
        mem = [pf.memory_kib() for pf in instances]
        return {"ready_s": ready,
                "rss": statistics.median(m["Rss"] for m in mem) / 1024,
                "pss": statistics.median(m["Pss"] for m in mem) / 1024,
                "private": statistics.median(m["Private"] for m in mem) / 1024,
                "processes": statistics.median(m["processes"] for m in mem),
                "shared_rss": 0.0, "shared_private": 0.0}
    finally:
        for pf in instances:
            pf.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,50")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--postfix", default="direct,start-fg", help="ways to start Postfix: direct, start-fg")
    ap.add_argument("--fresh", action="store_true",
                    help="time `mailnet up -d --fresh` (the DKIM keys and certificates made on the clock)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the Postfix instances run their masters as root: run as root")
    lib.raise_nofile()
    sizes = [int(s) for s in args.sizes.split(",")]
    systems = ["mailnet"] + [f"postfix {w}" for w in args.postfix.split(",") if w]
    lib.log(f"start and size: {sizes} domains; {lib.machine()}")
    results = {(s, n): [] for s in systems for n in sizes}
    leftovers = []
    try:
        for rnd in range(args.rounds):
            for n in sizes:
                order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
                for system in order:
                    if system == "mailnet":
                        r = run_mailnet(n, leftovers, args.fresh)
                    else:
                        r = run_postfix(n, system.endswith("direct"), leftovers)
                    r["load"] = float(open("/proc/loadavg").read().split()[0])
                    results[(system, n)].append(r)
                    lib.log(f"  round {rnd} {n:3} {system:17} all greet after {r['ready_s']:.2f}s; per domain "
                            f"RSS {r['rss']:.1f} MiB, PSS {r['pss']:.1f}, private {r['private']:.2f} "
                            f"({r['processes']:.0f} processes); load {r['load']:.1f}")
            lib.cleanup(leftovers)  # a few hundred files per round; nothing timed follows on them
    except BaseException:
        lib.cleanup(leftovers)
        raise
    print("\n## start and size: N domains as mailnet nodes and as N private Postfix instances")
    print(f"{lib.machine()}\n")
    print("| N | system | all greet (s) | mailnet faster (paired) | RSS per domain (MiB) | PSS per domain | private per domain | + shared launcher and resolver, private ÷ N | processes per domain | load (1 min) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        mine = [r["ready_s"] for r in results[("mailnet", n)]]
        for system in systems:
            rs = results[(system, n)]
            ratio = "-"
            if system != "mailnet":
                ratio = lib.summary([r["ready_s"] / m for r, m in zip(rs, mine)], "{:.1f}") + "×"
            shared = "-"
            if system == "mailnet":
                shared = (f"{lib.median([r['shared_private'] for r in rs]) / n:.2f} "
                          f"(launcher + resolver: RSS {lib.median([r['shared_rss'] for r in rs]):.1f}, "
                          f"private {lib.median([r['shared_private'] for r in rs]):.1f})")
            print(f"| {n} | {system} | {lib.summary([r['ready_s'] for r in rs], '{:.2f}')} | {ratio} "
                  f"| {lib.summary([r['rss'] for r in rs], '{:.1f}')} | {lib.summary([r['pss'] for r in rs], '{:.1f}')} "
                  f"| {lib.summary([r['private'] for r in rs], '{:.2f}')} | {shared} "
                  f"| {lib.median([r['processes'] for r in rs]):.0f} | {lib.summary([r['load'] for r in rs], '{:.1f}')} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
