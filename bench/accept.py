#!/usr/bin/python3
"""Figure 2: a node's accept rate, against smtp-sink (the ceiling: stores
nothing), an aiosmtpd server with a fsync'd Maildir (bench/aiosmtpd_maildir.py)
and a private Postfix delivering to a Maildir (bench/postfix_peer.py, root
only: `--servers mailnet,postfix`), in alternating, paired runs.

    /usr/bin/python3 bench/accept.py [--messages 20000] [--rounds 3]

Load: Postfix's smtp-source -s 20 -m N -l 4096, once with one message per
connection and once with -d (connections reused). Each run starts its server
fresh, measures wall time and the server's CPU (utime+stime from /proc), checks
that every message is in the Maildir, and stops the server by pid. Two rates:
the 250s (the last 250 received), and until the last message is in new/ (for
Postfix later than its 250: the queue file is delivered by virtual(8) after).
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import lib
import postfix_peer

SERVERS = ("mailnet", "smtp-sink", "aiosmtpd", "aiosmtpd-pool")
MODES = {"per-connection": [], "reused (-d)": ["-d"]}


def start_mailnet(work, port, sessions, bin_dir=None, shape=None):
    """shape(topology), when given, changes the topology before `up` (other
    benchmarks: the web server off, fault rules, more domains)."""
    topology = {
        "name": "bench-accept",
        "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1)[0]}"},
        "domains": [{"name": "jaku.com", "listen": f"127.0.0.1:{port}", "users": ["bench"],
                     "limits": {"connections": max(200, 2 * sessions)}}],
    }
    if shape:
        shape(topology)
    net = lib.Network(topology, work, bin_dir=bin_dir).up()
    pids = net.pids()
    mail = os.path.join(net.run_dir, "jaku.com", "mail", "bench", "new")
    extra = {"launcher": net.launcher_pid()}
    return net.down, pids["jaku.com"], (lambda: lib.count_files(mail)), extra, net


def no_checks(topology):
    for d in topology["domains"]:
        d.setdefault("policy", {})["dmarc"] = "off"


def start_postfix(work, port, sessions):
    pf = postfix_peer.Postfix(work, port, ["jaku.com"]).configure().start()
    new = pf.new_dir("jaku.com")
    # Its smtpd processes come and go: the CPU is the master's group's, dead children included.
    return pf.stop, pf.master.pid, (lambda: lib.count_files(new)), {}, pf.cpu_seconds


def start_sink(work, port, sessions):
    argv = [lib.SMTP_SINK]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]  # required when run as root
    argv += [f"127.0.0.1:{port}", "1024"]
    p = lib.start_ready(argv, lambda: lib.smtp_greets(port), 10, "smtp-sink to greet",
                        stdout=open(os.path.join(work, "sink.log"), "wb"), stderr=subprocess.STDOUT)
    return p.stop, p.pid, None, {}


def start_aiosmtpd(work, port, sessions, pool=False):
    root = os.path.join(work, "mail")
    argv = [lib.PYTHON, os.path.join(lib.HERE, "aiosmtpd_maildir.py"), "--port", str(port), "--root", root]
    if pool:
        argv.append("--pool")
    p = lib.start_ready(argv, lambda: lib.smtp_greets(port), 20, "aiosmtpd to greet",
                        stdout=open(os.path.join(work, "aiosmtpd.log"), "wb"), stderr=subprocess.STDOUT)
    mail = os.path.join(root, "bench", "new")
    return p.stop, p.pid, (lambda: lib.count_files(mail)), {}


def one_run(server, mode_args, args, leftovers, starters=None, during=None):
    """starters: more servers by name, each (work, port, sessions) -> what the
    ones below return; during(net or None, work): a context manager held
    around the load (a browser on the dashboard, say), giving {name: pid} of
    processes whose CPU is read too."""
    work = lib.workdir(f"mailnet-bench-{server}-")
    # Removed only after the last run: on ext4 without a journal (these VMs)
    # every inode freed in the last ~30 s is skipped, one block lookup each,
    # by every later inode allocation in its group (recently_deleted() in
    # fs/ext4/ialloc.c); deleting a run's 20,000 files between runs made the
    # next run spend a third of its CPU there.
    leftovers.append(work)
    port = lib.free_ports(1)[0]
    starter = {"mailnet": start_mailnet, "smtp-sink": start_sink, "aiosmtpd": start_aiosmtpd,
               "aiosmtpd-pool": lambda w, p, s: start_aiosmtpd(w, p, s, pool=True),
               "postfix": start_postfix,
               "mailnet-before": lambda w, p, s: start_mailnet(w, p, s, args.before_bin),
               # The node without its SPF, DKIM and DMARC checks (policy.dmarc "off"):
               # the same work as a Postfix with no policy service or milter.
               "mailnet-nochecks": lambda w, p, s: start_mailnet(w, p, s, shape=no_checks),
               **(starters or {})}[server]
    # A starter's fifth value, when it has one: the network (for `during`), or
    # a function giving the server's CPU seconds (Postfix: all its processes).
    stop, pid, stored, extra, *more = starter(work, port, args.sessions)
    net = next((m for m in more if not callable(m)), None)
    server_cpu = next((m for m in more if callable(m)), None) or (lambda: lib.cpu_seconds(pid))
    try:
        with (during(net, work) if during else contextlib.nullcontext()) as more_pids:
            extra.update(more_pids or {})  # their CPU is read too: {name: pid}
            return load_run(server, mode_args, args, port, server_cpu, stored, extra)
    finally:
        stop()


def load_run(server, mode_args, args, port, server_cpu, stored, extra):
    cpu0 = server_cpu()
    extra_cpu0 = {k: lib.cpu_seconds(v) for k, v in extra.items()}
    # args.load_args, when a benchmark sets it: its own sender, HELO or message file (-F) instead.
    load_args = getattr(args, "load_args", None) or ["-M", "client.example", "-f", "load@client.example"]
    size_args = [] if "-F" in load_args else ["-l", str(args.size)]  # -F: the file's size
    argv = [lib.SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages), *size_args,
            *mode_args, *load_args, "-t", "bench@jaku.com", f"127.0.0.1:{port}"]
    load_cpu0 = lib.children_cpu_seconds()
    busy0, all0 = lib.machine_jiffies()
    t0 = time.monotonic()
    rc, out = lib.run_bounded(argv, 60 + args.messages / 50)
    elapsed = time.monotonic() - t0
    load_cpu = lib.children_cpu_seconds() - load_cpu0
    if rc != 0 or "fatal" in out:
        raise RuntimeError(f"smtp-source against {server} failed ({rc}): {out[-2000:]}")
    stored_seconds = elapsed
    if stored:
        # mailnet: a 250 means the file is in new/ already, no waiting.
        # Postfix: a 250 means the queue file is synced; virtual(8) follows.
        if server.startswith("mailnet"):
            n = stored()
        else:
            n = lib.wait_for(lambda: (lambda c: c if c >= args.messages else 0)(stored()),
                             60 + args.messages / 20, f"{args.messages} messages in {server}'s Maildir")
            stored_seconds = time.monotonic() - t0
        if n != args.messages:
            raise RuntimeError(f"{server}: {n} of {args.messages} messages in the Maildir")
    busy1, all1 = lib.machine_jiffies()
    cpu = server_cpu() - cpu0
    extra_cpu = {k: lib.cpu_seconds(v) - extra_cpu0[k] for k, v in extra.items()}
    r = {"server": server, "rate": args.messages / elapsed, "seconds": elapsed,
         "stored_rate": args.messages / stored_seconds if stored else None,
         "cpu_us_per_msg": cpu / args.messages * 1e6,
         # smtp-source's own CPU, and how busy the whole machine was: with
         # both cores busy, the load and the server share them, and a
         # server's rate cannot pass cores / (its CPU + the load's) per message.
         "load_cpu_us_per_msg": load_cpu / args.messages * 1e6,
         "machine_busy": (busy1 - busy0) / max(1, all1 - all0)}
    for k, v in extra_cpu.items():
        r[f"{k}_cpu_us_per_msg"] = v / args.messages * 1e6
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma list of mailnet, smtp-sink, aiosmtpd (fsync on the event loop), aiosmtpd-pool, "
                         "postfix (a private instance, root), mailnet-nochecks (policy.dmarc off)")
    ap.add_argument("--modes", default="per-connection,reused", help="per-connection, reused")
    ap.add_argument("--json", help="also write every run here")
    ap.add_argument("--before-bin", help="bin folder of another build: adds server mailnet-before (an A/B)")
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"],
                    help="where run folders go: the temp folder, or a fresh ext4 (journaled, or not) on a loop device (root)")
    args = ap.parse_args()
    lib.require(lib.SMTP_SOURCE, "postfix")
    lib.require(lib.SMTP_SINK, "postfix")
    servers = args.servers.split(",")
    if args.before_bin and "mailnet-before" not in servers:
        servers.append("mailnet-before")
    modes = {k: v for k, v in MODES.items() if k.split()[0] in args.modes.split(",")}
    with lib.scratch_filesystem(args.fs):
        lib.log(f"accept: {args.messages} messages x {args.size} B, {args.sessions} sessions; {lib.machine()}")
        runs = []
        leftovers = []
        try:
            measure(args, servers, modes, runs, leftovers)
        finally:
            if runs:
                report(args, servers, modes, runs)
            lib.cleanup(leftovers)


def measure(args, servers, modes, runs, leftovers):
    for rnd in range(args.rounds):
        for mode, mode_args in modes.items():
            # Alternate the order every round so that no server always runs first.
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for server in order:
                r = one_run(server, mode_args, args, leftovers)
                r.update(mode=mode, round=rnd)
                runs.append(r)
                stored_rate = f"{r['stored_rate']:8,.0f}" if r["stored_rate"] else "       -"
                lib.log(f"  round {rnd} {mode:15} {server:15} {r['rate']:8,.0f} msg/s (250s), {stored_rate} "
                        f"(in new/)  {r['cpu_us_per_msg']:6.0f} us CPU/msg  load {open('/proc/loadavg').read().split()[0]}")


def report(args, servers, modes, runs):
    print(f"\n## accept rate: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}")
    print(f"{lib.machine()}\n")
    print("| mode | server | msg/s (250s) median (min..max) | msg/s until the last is in new/ | server CPU µs/msg | smtp-source CPU µs/msg | machine busy | mailnet ÷ server (median of paired ratios; in new/) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        mine = {r["round"]: r["rate"] for r in runs if r["mode"] == mode and r["server"] == "mailnet"}
        mine_stored = {r["round"]: r["stored_rate"] for r in runs if r["mode"] == mode and r["server"] == "mailnet"}
        for server in servers:
            rs = [r for r in runs if r["mode"] == mode and r["server"] == server]
            if not rs:  # a run that failed part way: report what there is
                continue
            cpu = lib.summary([r["cpu_us_per_msg"] for r in rs])
            if server == "mailnet" and "launcher_cpu_us_per_msg" in rs[0]:
                cpu += f" (+ launcher {lib.median([r['launcher_cpu_us_per_msg'] for r in rs]):.0f})"
            ratio = "-"
            if server != "mailnet" and mine:
                ratios = [mine[r["round"]] / r["rate"] for r in rs if r["round"] in mine]
                ratio = lib.summary(ratios, "{:.2f}") + "×"
                if rs[0]["stored_rate"] and mine_stored:
                    ratios = [mine_stored[r["round"]] / r["stored_rate"] for r in rs if r["round"] in mine_stored]
                    ratio += f"; {lib.summary(ratios, '{:.2f}')}×"
            stored = lib.summary([r["stored_rate"] for r in rs]) if rs[0]["stored_rate"] else "-"
            load = lib.summary([r["load_cpu_us_per_msg"] for r in rs])
            busy = lib.summary([100 * r["machine_busy"] for r in rs]) + " %"
            print(f"| {mode} | {server} | {lib.summary([r['rate'] for r in rs])} | {stored} | {cpu} | {load} | {busy} | {ratio} |")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
