#!/usr/bin/python3
"""Figure 4: the resolver against dnsmasq, serving the same SRV record
(_smtp._tcp.deathstar.com → mx.deathstar.com:PORT, with its A record as
additional data), driven by dnsperf in alternating, paired runs.

    /usr/bin/python3 bench/resolver.py [--seconds 8] [--rounds 3]

mailnet-resolver runs inside `mailnet up -d` (as in use: it logs every query);
dnsmasq runs with no upstream, no hosts file and no query log.
"""
import argparse
import sys
import os
import re
import subprocess

import lib

DNSPERF = "/usr/bin/dnsperf"


def dig_ok(port):
    """True once a SRV query on port gets an answer (a readiness probe)."""
    import socket
    import struct
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in "_smtp._tcp.deathstar.com".split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 33, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(q, ("127.0.0.1", port))
            reply = s.recv(512)
            return reply[:2] == b"\x12\x34" and struct.unpack(">H", reply[6:8])[0] >= 1
        except OSError:
            return False


def start_mailnet(work, dns_port, smtp_port, bin_dir=None):
    topology = {"name": "bench-dns", "resolver": {"listen": f"127.0.0.1:{dns_port}"},
                "domains": [{"name": "deathstar.com", "listen": f"127.0.0.1:{smtp_port}", "users": ["vader"]}]}
    net = lib.Network(topology, work, bin_dir=bin_dir).up()
    return net.down, net.pids()["resolver"]


def start_dnsmasq(work, dns_port, smtp_port):
    argv = [lib.DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1", "--except-interface=nonexistent",
            f"--port={dns_port}", "--pid-file=", f"--log-facility={os.path.join(work, 'dnsmasq.log')}",
            f"--srv-host=_smtp._tcp.deathstar.com,mx.deathstar.com,{smtp_port},0,0",
            "--host-record=mx.deathstar.com,127.0.0.1"]
    if os.geteuid() == 0:
        argv.append("--user=root")  # stay as we are, so that our stop by pid works the same way
    p = lib.Started(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "dnsmasq.err"), "wb"))
    return p.stop, p.pid  # one_run waits for it to answer, and stops it either way


def one_run(server, args, leftovers):
    work = lib.workdir(f"mailnet-bench-dns-{server}-")
    leftovers.append(work)
    dns_port = lib.free_ports(1, lib.socket.SOCK_DGRAM)[0]
    smtp_port = lib.free_ports(1)[0]
    starters = {"mailnet": start_mailnet, "dnsmasq": start_dnsmasq,
                "mailnet-before": lambda w, d, s: start_mailnet(w, d, s, args.before_bin)}
    stop, pid = starters[server](work, dns_port, smtp_port)
    try:
        lib.wait_for(lambda: dig_ok(dns_port), 10, f"{server} to answer")
        queries = os.path.join(work, "queries.txt")
        with open(queries, "w") as f:
            f.write("_smtp._tcp.deathstar.com SRV\n")
        cpu0 = lib.cpu_seconds(pid)
        rc, out = lib.run_bounded([DNSPERF, "-s", "127.0.0.1", "-p", str(dns_port), "-d", queries,
                                   "-l", str(args.seconds), "-c", "4", "-q", str(args.outstanding)],
                                  args.seconds + 30)
        cpu = lib.cpu_seconds(pid) - cpu0
        qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
        completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
        lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
        latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
        return {"server": server, "qps": qps, "lost": lost,
                "cpu_us_per_query": cpu / max(completed, 1) * 1e6,
                "latency_ms": float(latency.group(1)) * 1000 if latency else float("nan")}
    finally:
        stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    ap.add_argument("--before-bin", help="bin folder of another build: adds server mailnet-before (an A/B)")
    args = ap.parse_args()
    servers = ["mailnet", "dnsmasq"] + (["mailnet-before"] if args.before_bin else [])
    lib.require(DNSPERF, "dnsperf")
    lib.require(lib.DNSMASQ, "dnsmasq")
    lib.log(f"resolver: dnsperf {args.seconds}s per run; {lib.machine()}")
    runs, leftovers = [], []
    try:
        for rnd in range(args.rounds):
            for server in servers[rnd % len(servers):] + servers[:rnd % len(servers)]:
                r = one_run(server, args, leftovers)
                r["round"] = rnd
                runs.append(r)
                lib.log(f"  round {rnd} {server:8} {r['qps']:9,.0f} q/s  lost {r['lost']}  "
                        f"{r['cpu_us_per_query']:.1f} us CPU/query  {r['latency_ms']:.2f} ms avg")
    except BaseException:
        lib.cleanup(leftovers)
        raise
    print(f"\n## resolver: dnsperf -c 4 -q {args.outstanding} -l {args.seconds}, one SRV query")
    print(f"{lib.machine()}\n")
    print("| server | queries/s median (min..max) | CPU µs/query | avg latency ms | mailnet ÷ server (paired) |")
    print("| --- | --- | --- | --- | --- |")
    mine = {r["round"]: r["qps"] for r in runs if r["server"] == "mailnet"}
    for server in servers:
        rs = [r for r in runs if r["server"] == server]
        ratio = "-" if server == "mailnet" else lib.summary([mine[r["round"]] / r["qps"] for r in rs], "{:.2f}") + "×"
        print(f"| {server} | {lib.summary([r['qps'] for r in rs])} | {lib.summary([r['cpu_us_per_query'] for r in rs], '{:.1f}')} "
              f"| {lib.summary([r['latency_ms'] for r in rs], '{:.2f}')} | {ratio} |")

    sys.stdout.flush()
    lib.cleanup(leftovers)

if __name__ == "__main__":
    main()
