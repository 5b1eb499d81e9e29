#!/usr/bin/python3
"""What one idle node's stop costs: from its SIGTERM to its end, the CPU it
spends (every thread, user and system, the kernel's teardown included) and
the wall time, without the launcher in between.

`mailnet up -d` of N generated domains makes the run folder (each node's own
topology, its key, its folders); `mailnet down` stops it again. Then this
script starts every node itself, with the command line the launcher gave it
(from /proc/PID/cmdline), so that it is their parent: once all say ready,

- one at a time: each node's CPU so far (the sum of /proc/PID/task/*/schedstat,
  nanoseconds), SIGTERM, wait4() for it; its rusage (user + system of all its
  threads, whenever they ended) minus the CPU before is what the stop cost,
  and the time from kill() to wait4()'s return its wall time;
- all at once (as `mailnet down` does): SIGTERM to every node, then wait4()
  for each; the CPU of all of them together and the wall time until the
  last is reaped.

    /usr/bin/python3 bench/node_exit.py [--nodes 40] [--rounds 3] [--no-dkim] [--before-bin OTHER/bin]

With --before-bin the same is done with that build's binaries in every round
(mailnet-before), the two alternating (which goes first swaps each round),
and the table adds the ratios of the medians (this build / before).

No resolver runs while the nodes are started this way: an idle node asks it
nothing. Everything is stopped by pid; the folder is removed at the end.
"""
import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import time

import lib


def mailnet(bin_dir, args, timeout):
    env = dict(os.environ, MAILNET_BIN_DIR=os.path.abspath(bin_dir))
    return lib.run_bounded([lib.binary("mailnet", bin_dir), *args], timeout, env=env)


def task_cpu_ns(pid):
    """CPU so far of every live thread of pid, in nanoseconds."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def node_command_lines(n, bin_dir, work, dkim, timeout):
    """Makes the run folder of n domains with `up -d` then `down`; the nodes' argv."""
    ports = lib.free_ports(n + 1)
    topo = {
        "name": f"bench-exit-{n}",
        "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1, kind=socket.SOCK_DGRAM)[0]}"},
        "web": False,
        "domains": [{"name": f"d{i}.test", "listen": f"127.0.0.1:{ports[i]}", "users": ["u"]} for i in range(n)],
    }
    if not dkim:
        topo["defaults"] = {"dns": {"dkim": False}}
    topo_file = os.path.join(work, "topology.json")
    with open(topo_file, "w") as f:
        json.dump(topo, f)
    run_dir = os.path.join(work, "run")
    rc, out = mailnet(bin_dir, ["up", "-d", "--fresh", topo_file, "--dir", run_dir], timeout)
    if rc != 0:
        mailnet(bin_dir, ["down", "--dir", run_dir], timeout)
        raise RuntimeError(f"mailnet up -d failed ({rc}): {out[-2000:]}")
    try:
        with open(os.path.join(run_dir, "network.json")) as f:
            nodes = [x for x in json.load(f)["nodes"] if x["name"] != "resolver"]
        argvs = []
        for x in nodes:
            with open(f"/proc/{x['pid']}/cmdline", "rb") as f:
                argvs.append([a.decode() for a in f.read().split(b"\0")[:-1]])
    finally:
        rc, out = mailnet(bin_dir, ["down", "--dir", run_dir], timeout)
        if rc != 0:
            raise RuntimeError(f"mailnet down failed ({rc}): {out[-2000:]}")
    return argvs


def start_nodes(argvs, timeout):
    """Starts each node as our child; returns them once every one logged ready."""
    procs = []
    try:
        for argv in argvs:
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for p in procs:
            seen = b""
            while b" event=ready " not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or p.poll() is not None:
                    raise RuntimeError(f"node {p.args[-3]} not ready: {seen[-500:]!r}")
                ready, _, _ = select.select([p.stdout], [], [], left)
                if ready:
                    seen += os.read(p.stdout.fileno(), 65536)
        return procs
    except BaseException:
        stop_all(procs)
        raise


def stop_all(procs):
    for p in procs:
        if p.returncode is None and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def reap(p):
    """wait4 for p: (exit status, CPU seconds of its whole life)."""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    return p.returncode, usage.ru_utime + usage.ru_stime


def one_run(args, bin_dir, work):
    argvs = node_command_lines(args.nodes, bin_dir, work, args.dkim, args.timeout)
    r = {}
    # One at a time.
    procs = start_nodes(argvs, args.timeout)
    cpu, wall = [], []
    try:
        for p in procs:
            before = task_cpu_ns(p.pid) / 1e9
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGTERM)
            code, total = reap(p)
            wall.append(time.monotonic() - t0)
            if code != 0:
                raise RuntimeError(f"a node exited {code} after SIGTERM")
            cpu.append(total - before)
    finally:
        stop_all(procs)
    r["one_cpu_ms"] = statistics.median(cpu) * 1e3
    r["one_wall_ms"] = statistics.median(wall) * 1e3
    # All at once.
    procs = start_nodes(argvs, args.timeout)
    try:
        before = sum(task_cpu_ns(p.pid) for p in procs) / 1e9
        t0 = time.monotonic()
        for p in procs:
            os.kill(p.pid, signal.SIGTERM)
        total = 0.0
        for p in procs:
            code, cpu_s = reap(p)
            if code != 0:
                raise RuntimeError(f"a node exited {code} after SIGTERM")
            total += cpu_s
        r["all_wall_s"] = time.monotonic() - t0
        r["all_cpu_s"] = total - before
    finally:
        stop_all(procs)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-dkim", dest="dkim", action="store_false", help="no DKIM key per domain")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--before-bin", help="bin folder of another build: each round runs it too, alternating")
    args = ap.parse_args()
    lib.raise_nofile()
    builds = [("mailnet", lib.BIN_DIR)]
    if args.before_bin:
        builds.append(("mailnet-before", os.path.abspath(args.before_bin)))
    lib.log(f"node exit: {args.nodes} nodes, builds {[b for b, _ in builds]}; {lib.machine()}")
    results = {b: [] for b, _ in builds}
    for rnd in range(args.rounds):
        for build, bin_dir in (builds if rnd % 2 == 0 else builds[::-1]):
            work = lib.workdir("mailnet-bench-exit-")
            try:
                r = one_run(args, bin_dir, work)
            finally:
                lib.remove_tree(work)
            lib.log(f"  round {rnd} {build}: one node {r['one_cpu_ms']:.2f} ms CPU, {r['one_wall_ms']:.2f} ms wall; "
                    f"{args.nodes} at once {r['all_cpu_s'] * 1e3:.0f} ms CPU, {r['all_wall_s'] * 1e3:.0f} ms wall; "
                    f"load {os.getloadavg()[0]:.1f}")
            results[build].append(r)
    print(f"\n## node exit: {args.nodes} idle nodes, SIGTERM to reaped ({time.strftime('%Y-%m-%d')})")
    print(f"{lib.machine()}\n")
    print("| build | one node: CPU (ms) | one node: wall (ms) | all at once: CPU per node (ms) | all at once: wall (ms) |")
    print("| --- | --- | --- | --- | --- |")
    med = {}
    for build, _ in builds:
        rs = results[build]
        med[build] = {k: lib.median([x[k] for x in rs]) for k in rs[0]}
        m = med[build]
        print(f"| {build} | {lib.summary([x['one_cpu_ms'] for x in rs], '{:.2f}')} "
              f"| {lib.summary([x['one_wall_ms'] for x in rs], '{:.2f}')} "
              f"| {m['all_cpu_s'] * 1e3 / args.nodes:.2f} | {m['all_wall_s'] * 1e3:.0f} |")
    if len(builds) == 2:
        a, b = med["mailnet"], med["mailnet-before"]
        print(f"| ratio (this / before) | {a['one_cpu_ms'] / b['one_cpu_ms']:.2f}x | {a['one_wall_ms'] / b['one_wall_ms']:.2f}x "
              f"| {a['all_cpu_s'] / b['all_cpu_s']:.2f}x | {a['all_wall_s'] / b['all_wall_s']:.2f}x |")


if __name__ == "__main__":
    main()
