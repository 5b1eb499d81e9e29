#!/usr/bin/python3
"""Figure 5: start-up at scale. `mailnet up -d` of generated topologies with
10, 100 and 500 domains: time until it returns (every node ready), RSS per
idle node, the launcher's open-file limit; then `mailnet down` (timed too).
Last, a 500-domain topology under a hard open-file limit of 256, to show the
launcher's message when a topology cannot fit.

    /usr/bin/python3 bench/scale.py [--sizes 10,100,500] [--rounds 3]
"""
import argparse
import sys
import resource
import statistics
import time

import lib


def topology(n):
    ports = lib.free_ports(n)
    return {
        "name": f"bench-scale-{n}",
        "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1, lib.socket.SOCK_DGRAM)[0]}"},
        "domains": [{"name": f"d{i:03d}.example", "listen": f"127.0.0.1:{p}", "users": ["u"]}
                    for i, p in enumerate(ports)],
    }


def nofile_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return 0


def one_run(n, leftovers):
    work = lib.workdir(f"mailnet-bench-scale-{n}-")
    leftovers.append(work)
    net = lib.Network(topology(n), work, timeout=120)
    try:
        net.up()
        pids = net.pids()
        nodes = [p for name, p in pids.items() if name != "resolver"]
        rss = [lib.status_kib(p, "VmRSS") / 1024 for p in nodes]
        anon = [lib.status_kib(p, "RssAnon") / 1024 for p in nodes]  # RSS less the shared libraries' pages
        launcher = net.launcher_pid()
        r = {"ready_s": net.up_seconds, "rss_median_mib": statistics.median(rss), "rss_max_mib": max(rss),
             "anon_median_mib": statistics.median(anon),
             "resolver_mib": lib.status_kib(pids["resolver"], "VmRSS") / 1024,
             "launcher_mib": lib.status_kib(launcher, "VmRSS") / 1024, "launcher_nofile": nofile_limit(launcher),
             "nodes": len(nodes)}
    finally:
        t0 = time.monotonic()
        net.down(timeout=120)
        down = time.monotonic() - t0
    r["down_s"] = down
    return r


def cannot_fit(leftovers):
    """500 domains under a hard limit of 256 open files: the launcher must refuse, clearly."""
    work = lib.workdir("mailnet-bench-scale-fit-")
    leftovers.append(work)
    net = lib.Network(topology(500), work, timeout=60)

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    import os
    import subprocess
    try:
        p = subprocess.run([lib.binary("mailnet"), "up", "-d", "--fresh", net.topology_file, "--dir", net.run_dir],
                           cwd=work, preexec_fn=low_limit, capture_output=True, text=True, timeout=60)
    finally:
        if os.path.exists(os.path.join(net.run_dir, "network.json")):  # it started after all (or timed out)
            net.down()
    return p.returncode, (p.stdout + p.stderr).strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    lib.raise_nofile()  # free_ports(500) holds 500 sockets at once
    lib.log(f"scale: {args.sizes}; {lib.machine()}")
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {n: [] for n in sizes}
    leftovers = []
    try:
        for rnd in range(args.rounds):
            for n in (sizes if rnd % 2 == 0 else list(reversed(sizes))):
                r = one_run(n, leftovers)
                results[n].append(r)
                lib.log(f"  round {rnd} {n:4} domains: ready {r['ready_s']:.2f}s, node RSS median "
                        f"{r['rss_median_mib']:.1f} MiB max {r['rss_max_mib']:.1f}, down {r['down_s']:.2f}s, "
                        f"launcher nofile {r['launcher_nofile']}")
        rc, message = cannot_fit(leftovers)
    except BaseException:
        lib.cleanup(leftovers)
        raise
    print("\n## scale: `mailnet up -d` of generated topologies (each domain one user)")
    print(f"{lib.machine()}\n")
    print("| domains | ready (s) | RSS per idle node, median (MiB) | of which private (RssAnon) | max node RSS (MiB) | resolver / launcher RSS (MiB) | launcher open-file limit | down (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        rs = results[n]
        print(f"| {n} | {lib.summary([r['ready_s'] for r in rs], '{:.2f}')} "
              f"| {lib.summary([r['rss_median_mib'] for r in rs], '{:.1f}')} "
              f"| {lib.summary([r['anon_median_mib'] for r in rs], '{:.1f}')} "
              f"| {lib.summary([r['rss_max_mib'] for r in rs], '{:.1f}')} "
              f"| {lib.median([r['resolver_mib'] for r in rs]):.1f} / {lib.median([r['launcher_mib'] for r in rs]):.1f} "
              f"| {rs[0]['launcher_nofile']} | {lib.summary([r['down_s'] for r in rs], '{:.2f}')} |")
    print(f"\n500 domains under `ulimit -Hn 256`: exit {rc}: {message[-600:]}")

    sys.stdout.flush()
    lib.cleanup(leftovers)

if __name__ == "__main__":
    main()
