#!/usr/bin/python3
"""What DKIM signing costs (issue 22): mail from jaku.com's own sender to a
deathstar.com user, accepted by jaku.com (which signs it: From load@jaku.com,
a remote recipient) and relayed to deathstar.com, with signing on (the
default) against the same network with `"dkim": false` for jaku.com, in
alternating, paired runs.

    /usr/bin/python3 bench/dkim_cost.py [--messages 5000] [--rounds 5] [--sessions 20] [--before-bin OTHER/bin]

The load is relay.py's: smtp-source -s 20 -m N -l 4096 -f load@jaku.com
(one message per connection; smtp-source writes a From: header with its -f
sender, so every message is signed when signing is on: the first run checks
that a delivered message carries a DKIM-Signature, and that none does
without). Figures per run: the accept rate (N over smtp-source's time: every
250 is after the signature, made on the node's disk pool), the rate until
the last message is in deathstar.com's new/, and CPU µs per message of
jaku.com's node (where signing happens) and of every process. Each run
brings a fresh network up (`up --fresh`: its keys made then, outside the
timing) and down. Medians over rounds; ratios on/off within a round.

--before-bin DIR adds "signing on, before": signing on with the binaries of
another build (an A/B of a change to signing), in the same rounds, the order
rotating; the report adds this build's signing on ÷ that one's, paired.
"""
import argparse
import os
import sys
import time

import lib
import relay

MODES = ("signing on", "signing off")
BEFORE = "signing on, before"


def topology(ports, resolver_port, signing):
    topo = relay.topology(ports, resolver_port)
    topo["name"] = "bench-dkim-cost"
    if not signing:
        topo["domains"][0]["dns"] = {"dkim": False}
    return topo


def first_message(folder):
    name = sorted(os.listdir(folder))[0]
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


def run_once(args, signing, leftovers, check, bin_dir=None):
    work = lib.workdir("mailnet-bench-dkim-")
    leftovers.append(work)
    ports = lib.free_ports(2)
    net = lib.Network(topology(ports, lib.free_ports(1, lib.socket.SOCK_DGRAM)[0], signing), work,
                      timeout=120, bin_dir=bin_dir).up()
    try:
        new = os.path.join(net.run_dir, "deathstar.com", "mail", "bench", "new")
        jaku = net.pids()["jaku.com"]
        all_pids = list(net.pids().values()) + [net.launcher_pid()]
        cpu_jaku0 = lib.cpu_seconds(jaku)
        cpu0 = sum(lib.cpu_seconds(p) for p in all_pids)
        t0 = time.monotonic()
        relay.smtp_source(ports[0], args, "bench@deathstar.com")
        accepted = time.monotonic() - t0
        lib.wait_for(lambda: lib.count_files(new) >= args.messages, 120 + args.messages / 20,
                     f"{args.messages} messages in {new}")
        elapsed = time.monotonic() - t0
        cpu_jaku = lib.cpu_seconds(jaku) - cpu_jaku0
        cpu = sum(lib.cpu_seconds(p) for p in all_pids) - cpu0
        if check:
            head = first_message(new).split(b"\n\n", 1)[0]
            if (b"\nDKIM-Signature:" in head) != signing:
                raise RuntimeError(f"{'no' if signing else 'a'} DKIM-Signature with {MODES[0 if signing else 1]}:\n"
                                   + head.decode(errors="replace"))
        return {"accept_rate": args.messages / accepted, "rate": args.messages / elapsed,
                "node_us": cpu_jaku / args.messages * 1e6, "all_us": cpu / args.messages * 1e6,
                "load": float(open("/proc/loadavg").read().split()[0])}
    finally:
        net.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--before-bin", help="bin folder of another build: adds \"signing on, before\" (an A/B)")
    args = ap.parse_args()
    lib.require(lib.SMTP_SOURCE, "postfix")
    lib.raise_nofile()
    lib.log(f"dkim cost: {args.rounds} rounds of {args.messages} messages; {lib.machine()}")
    modes = MODES + ((BEFORE,) if args.before_bin else ())
    results = {m: [] for m in modes}
    leftovers = []
    try:
        for rnd in range(args.rounds):
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]  # rotate which goes first
            for mode in order:
                r = run_once(args, mode != MODES[1], leftovers, check=rnd == 0,
                             bin_dir=os.path.abspath(args.before_bin) if mode == BEFORE else None)
                results[mode].append(r)
                lib.log(f"  round {rnd + 1} {mode}: accept {r['accept_rate']:,.0f} msg/s, to new/ {r['rate']:,.0f} "
                        f"msg/s, CPU {r['node_us']:.0f} µs/msg in jaku.com's node, {r['all_us']:.0f} in all")
            lib.cleanup(leftovers)
            leftovers.clear()
    finally:
        lib.cleanup(leftovers)
    on, off = results[MODES[0]], results[MODES[1]]
    pairs = list(zip(on, off))
    print(f"\n## DKIM signing: smtp-source -s {args.sessions} -m {args.messages} -l 4096, jaku.com → deathstar.com "
          f"({time.strftime('%Y-%m-%d')}), {args.rounds} paired rounds")
    print("| figure (median (min..max)) | signing on | signing off (`\"dkim\": false`) | on ÷ off (paired) |")
    print("| --- | --- | --- | --- |")
    for label, key, fmt in (("accept rate, msg/s", "accept_rate", "{:,.0f}"),
                            ("rate until the last file in new/, msg/s", "rate", "{:,.0f}"),
                            ("CPU µs/msg, jaku.com's node", "node_us", "{:,.0f}"),
                            ("CPU µs/msg, every mailnet process", "all_us", "{:,.0f}")):
        ratios = [a[key] / b[key] for a, b in pairs]
        print(f"| {label} | {lib.summary([r[key] for r in on], fmt)} | {lib.summary([r[key] for r in off], fmt)} "
              f"| {lib.summary(ratios, '{:.2f}')}× |")
    print(f"| load average (1 min) at the end | {lib.summary([r['load'] for r in on], '{:.1f}')} "
          f"| {lib.summary([r['load'] for r in off], '{:.1f}')} | |")
    if args.before_bin:
        before = results[BEFORE]
        print(f"\n| figure (median (min..max)) | signing on | signing on, {args.before_bin} | this ÷ before (paired) |")
        print("| --- | --- | --- | --- |")
        for label, key, fmt in (("accept rate, msg/s", "accept_rate", "{:,.0f}"),
                                ("CPU µs/msg, jaku.com's node", "node_us", "{:,.0f}"),
                                ("CPU µs/msg, every mailnet process", "all_us", "{:,.0f}")):
            ratios = [a[key] / b[key] for a, b in zip(on, before)]
            print(f"| {label} | {lib.summary([r[key] for r in on], fmt)} | {lib.summary([r[key] for r in before], fmt)} "
                  f"| {lib.summary(ratios, '{:.2f}')}× |")
        saved = [b["node_us"] - a["node_us"] for a, b in zip(on, before)]
        print(f"| node CPU saved per message, µs | | | {lib.summary(saved)} |")
    print(f"\n{lib.machine()}")


if __name__ == "__main__":
    sys.exit(main())
