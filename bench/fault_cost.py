#!/usr/bin/python3
"""What fault rules cost a node when none of them matches (issue 20): its
accept rate with no rules against the same network with ten rules for it
that never match, in alternating, paired runs.

    /usr/bin/python3 bench/fault_cost.py [--messages 20000] [--rounds 5]

Both networks are the same: jaku.com (the node under load) and deathstar.com
(so that a rule may name it as the sender). The ten rules all have
`"to": "jaku.com"` and `"from": "deathstar.com"`, at every stage a sender
can be known at (ehlo, mail, rcpt, data, end_of_data, quit, any) and with
every kind of action (reply, disconnect, hang, delay, rate_limit), so the
node checks each of them at each point of each session; the load comes from
smtp-source (EHLO client.example: a client, never deathstar.com), so none
ever fires. The load is accept.py's: smtp-source -s 20 -m N -l 4096, with one
message per connection and with -d (connections reused).
"""
import argparse
import os
import sys

import accept
import lib

RULES = [
    {"name": "r1-ehlo", "stage": "ehlo", "reply": "451 4.3.0 Simulated trouble"},
    {"name": "r2-mail", "stage": "mail", "reply": "451 4.3.0 Simulated trouble", "probability": 0.5},
    {"name": "r3-rcpt", "stage": "rcpt", "action": "delay", "delay": "100ms", "jitter": "50ms"},
    {"name": "r4-data", "stage": "data", "action": "disconnect", "every": 3},
    {"name": "r5-eod", "stage": "end_of_data", "action": "hang"},
    {"name": "r6-quit", "stage": "quit", "reply": "421 4.3.0 Simulated trouble"},
    {"name": "r7-any", "stage": "any", "reply": "451 4.3.0 Simulated trouble", "first": 5},
    {"name": "r8-rcpt", "stage": "rcpt", "reply": "550 5.1.1 Simulated trouble", "after": "1s", "for": "1h"},
    {"name": "r9-rate", "action": "rate_limit", "messages": 1, "per": "1m", "reply": "451 4.7.0 Slow down"},
    {"name": "r10-mail", "stage": "mail", "action": "delay", "delay": "1s"},
]
SERVERS = ("no rules", "10 rules, none matching")


def shape(rules):
    def change(topology):
        taken = topology["domains"][0]["listen"]
        port = next(p for p in lib.free_ports(2) if f"127.0.0.1:{p}" != taken)
        topology["name"] = "bench-fault-cost"
        topology["domains"].append({"name": "deathstar.com", "listen": f"127.0.0.1:{port}", "users": ["vader"]})
        if rules:
            topology["faults"] = {"seed": 42, "rules": [dict(r, to="jaku.com", **{"from": "deathstar.com"})
                                                        for r in RULES]}
    return change


def start(work, port, sessions, rules):
    started = accept.start_mailnet(work, port, sessions, shape=shape(rules))
    if rules:  # the node says how many rules it took: all ten, or the run means nothing
        log = os.path.join(started[4].run_dir, "jaku.com", "node.log")
        try:
            lib.wait_for(lambda: f"rules={len(RULES)}" in open(log).read(), 30, f"rules={len(RULES)} in {log}")
        except BaseException:
            started[0]()
            raise
    return started


STARTERS = {
    "no rules": lambda w, p, s: start(w, p, s, False),
    "10 rules, none matching": lambda w, p, s: start(w, p, s, True),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="per-connection,reused", help="per-connection, reused")
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"],
                    help="where run folders go: the temp folder, or a fresh ext4 on a loop device (root), as accept.py")
    args = ap.parse_args()
    lib.require(lib.SMTP_SOURCE, "postfix")
    modes = {k: v for k, v in accept.MODES.items() if k.split()[0] in args.modes.split(",")}
    lib.log(f"fault_cost: {args.messages} messages x {args.size} B, {args.sessions} sessions; {lib.machine()}")
    with lib.scratch_filesystem(args.fs):
        runs, leftovers = [], []
        try:
            for rnd in range(args.rounds):
                for mode, mode_args in modes.items():
                    order = list(SERVERS[rnd % 2:] + SERVERS[:rnd % 2])  # alternate who goes first
                    for server in order:
                        r = accept.one_run(server, mode_args, args, leftovers, starters=STARTERS)
                        r.update(mode=mode, round=rnd)
                        runs.append(r)
                        lib.log(f"  round {rnd} {mode:15} {server:24} {r['rate']:8,.0f} msg/s  "
                                f"{r['cpu_us_per_msg']:6.0f} us node CPU/msg")
        finally:
            if runs:
                report(args, modes, runs)
            lib.cleanup(leftovers)


def paired_report(title, args, modes, runs, servers, base, ratio_label):
    """The table of a paired A/B of mailnet networks: rate, node and
    launcher CPU per message, and the median of the per-round ratios to base."""
    print(f"\n## {title}")
    print(f"{lib.machine()}\n")
    print(f"| mode | network | msg/s median (min..max) | node CPU µs/msg | launcher CPU µs/msg | machine busy | "
          f"{ratio_label} (median of paired ratios) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        basis = {r["round"]: r for r in runs if r["mode"] == mode and r["server"] == base}
        for server in servers:
            rs = [r for r in runs if r["mode"] == mode and r["server"] == server]
            if not rs:
                continue
            ratio = cpu_ratio = "-"
            if server != base:
                pairs = [(r, basis[r["round"]]) for r in rs if r["round"] in basis]
                ratio = lib.summary([a["rate"] / b["rate"] for a, b in pairs], "{:.3f}") + "×"
                cpu_ratio = lib.summary([a["cpu_us_per_msg"] / b["cpu_us_per_msg"] for a, b in pairs], "{:.3f}")
                ratio += f" (node CPU/msg {cpu_ratio}×)"
            print(f"| {mode} | {server} | {lib.summary([r['rate'] for r in rs])} | "
                  f"{lib.summary([r['cpu_us_per_msg'] for r in rs])} | "
                  f"{lib.summary([r.get('launcher_cpu_us_per_msg', 0) for r in rs], '{:,.1f}')} | "
                  f"{lib.summary([100 * r['machine_busy'] for r in rs])} % | {ratio} |")
    sys.stdout.flush()


def report(args, modes, runs):
    paired_report(f"fault rules that never match: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}, "
                  f"{args.rounds} rounds", args, modes, runs, SERVERS, "no rules", "rules ÷ none, rate")


if __name__ == "__main__":
    main()
