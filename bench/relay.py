#!/usr/bin/python3
"""Figure 3: relay. Mail sent to jaku.com for a deathstar.com user crosses the
queue, the resolver and a second SMTP hop.

    /usr/bin/python3 bench/relay.py [--messages 20000] [--rounds 3] [--latency-messages 500]
    /usr/bin/python3 bench/relay.py --peer postfix [--messages 5000]     # root

jaku.com relays only for its own senders, so the load comes from load@jaku.com.

Throughput: smtp-source -s 20 -m N -l 4096 against jaku.com for
bench@deathstar.com, timed until the last message is in deathstar.com's
Maildir; paired in the same round with the same load delivered locally by one
node (the accept rate), so the ratio is from one run.

Latency: a paced client (100 msg/s, one connection) sends to jaku.com; the time
from its 250 to the file appearing in deathstar.com's new/ (seen with inotify,
through ctypes) gives p50 and p99.

With --resumption, the pairing is between two mailnet networks, the relay
resuming TLS sessions (the default) and not (MAILNET_TLS_RESUMPTION=off):
the same relayed load, rates until the last file is in deathstar.com's new/,
CPU of all mailnet processes, and the handshakes deathstar.com served (full
and resumed, from its node.log). The relay keeps idle connections for the
next message (at most 8 per peer, 3 s), so only part of the messages need a
new connection: the count of handshakes says how many did.

With --peer postfix, the pairing is against two private Postfix instances
(bench/postfix_peer.py) relaying to each other, jaku.com's by a transport map
`deathstar.com smtp:[127.0.0.1]:PORT` (no DNS): the same load, timed until the
last file is in the far Maildir, and the same paced latency run, for both.
"""
import argparse
import sys
import ctypes
import os
import select
import smtplib
import struct
import threading
import time

import lib
import postfix_peer

IN_CREATE, IN_MOVED_TO = 0x100, 0x80


class NewFiles:
    """Records the monotonic time each name appears in a folder (inotify)."""

    def __init__(self, folder):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, folder.encode(), IN_CREATE | IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify on " + folder)
        self.seen = {}
        self.stop_flag = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            now = time.monotonic()
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            pos = 0
            while pos + 16 <= len(buf):
                _, _, _, length = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16:pos + 16 + length].rstrip(b"\0").decode()
                self.seen.setdefault(name, now)
                pos += 16 + length

    def close(self):
        self.stop_flag = True
        self.thread.join(2)
        os.close(self.fd)


def topology(ports, resolver_port, plain=False):
    topo = {
        "name": "bench-relay",
        "resolver": {"listen": f"127.0.0.1:{resolver_port}"},
        "defaults": {"retry": {"first": "1s", "max": "5s", "give_up_after": "10m"}},
        "domains": [
            {"name": "jaku.com", "listen": f"127.0.0.1:{ports[0]}", "users": ["bench"]},
            {"name": "deathstar.com", "listen": f"127.0.0.1:{ports[1]}", "users": ["bench"]},
        ],
    }
    if plain:
        # The work a stock Postfix does on this hop: plain SMTP between the
        # two, no DKIM signature at jaku.com, no SPF/DKIM/DMARC checks at
        # deathstar.com (mailnet's defaults do all three).
        topo["tls"] = False
        topo["defaults"]["dns"] = {"dkim": False}
        topo["defaults"]["policy"] = {"dmarc": "off"}
    return topo


def smtp_source(port, args, to, reuse=False):
    argv = [lib.SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages), "-l", "4096",
            *(["-d"] if reuse else []), "-M", "client.example", "-f", "load@jaku.com", "-t", to,
            f"127.0.0.1:{port}"]
    rc, out = lib.run_bounded(argv, 60 + args.messages / 50)
    if rc != 0 or "fatal" in out:
        raise RuntimeError(f"smtp-source failed ({rc}): {out[-2000:]}")


class MailnetPair:
    """jaku.com and deathstar.com as two mailnet nodes (with the resolver)."""

    def __init__(self, work, env=None, plain=False):
        self.ports = lib.free_ports(2)
        self.net = lib.Network(topology(self.ports, lib.free_ports(1, lib.socket.SOCK_DGRAM)[0], plain), work,
                               env=env).up()
        self.port = self.ports[0]

    def handshakes(self, domain="deathstar.com"):
        """(full, resumed) TLS handshakes the domain's node served, from its node.log."""
        full = resumed = 0
        with open(os.path.join(self.net.run_dir, domain, "node.log"), errors="replace") as f:
            for line in f:
                if " event=tls client=" in line:
                    if line.rstrip().endswith("resumed=yes"):
                        resumed += 1
                    else:
                        full += 1
        return full, resumed

    def new_dir(self, domain):
        return os.path.join(self.net.run_dir, domain, "mail", "bench", "new")

    def cpu_seconds(self):
        pids = list(self.net.pids().values()) + [self.net.launcher_pid()]
        return sum(lib.cpu_seconds(p) for p in pids)

    def close(self):
        self.net.down()


class PostfixPair:
    """jaku.com and deathstar.com as two private Postfix instances, each
    sending the other's domain to its port by a transport map."""

    def __init__(self, work):
        a, b = lib.free_ports(2)
        self.port = a
        os.chmod(work, 0o755)  # the daemons run as postfix and nobody
        self.jaku = postfix_peer.Postfix(os.path.join(work, "jaku.com"), a, ["jaku.com"],
                                         relays={"deathstar.com": b})
        self.deathstar = postfix_peer.Postfix(os.path.join(work, "deathstar.com"), b, ["deathstar.com"],
                                              relays={"jaku.com": a})
        try:
            for pf in (self.jaku, self.deathstar):
                os.mkdir(pf.work)
                pf.configure().start()
        except BaseException:
            self.close()
            raise

    def new_dir(self, domain):
        return (self.jaku if domain == "jaku.com" else self.deathstar).new_dir(domain)

    def cpu_seconds(self):
        return self.jaku.cpu_seconds() + self.deathstar.cpu_seconds()

    def close(self):
        self.jaku.stop()
        self.deathstar.stop()


def open_pair(system, work):
    return {"mailnet": MailnetPair, "postfix": PostfixPair,
            "mailnet-plain": lambda w: MailnetPair(w, plain=True),
            "resumption": MailnetPair,
            "no-resumption": lambda w: MailnetPair(w, env={"MAILNET_TLS_RESUMPTION": "off"})}[system](work)


def run_throughput(args, relay, leftovers, system="mailnet"):
    work = lib.workdir(f"mailnet-bench-relay-{system}-")
    leftovers.append(work)
    pair = open_pair(system, work)
    try:
        target = "deathstar.com" if relay else "jaku.com"
        new = pair.new_dir(target)
        cpu0 = pair.cpu_seconds()
        t0 = time.monotonic()
        smtp_source(pair.port, args, f"bench@{target}")
        accepted = time.monotonic() - t0
        lib.wait_for(lambda: lib.count_files(new) >= args.messages, 120 + args.messages / 20,
                     f"{args.messages} messages in {new}")
        elapsed = time.monotonic() - t0
        cpu = pair.cpu_seconds() - cpu0
        r = {"rate": args.messages / elapsed, "accept_seconds": accepted, "seconds": elapsed,
             "accept_rate": args.messages / accepted, "cpu_us_per_msg": cpu / args.messages * 1e6,
             "load": float(open("/proc/loadavg").read().split()[0])}
        if hasattr(pair, "handshakes"):
            r["full"], r["resumed"] = pair.handshakes()
        return r
    finally:
        pair.close()


def run_latency(args, leftovers, system="mailnet"):
    work = lib.workdir(f"mailnet-bench-latency-{system}-")
    leftovers.append(work)
    pair = open_pair(system, work)
    watcher = None
    try:
        new = pair.new_dir("deathstar.com")
        watcher = NewFiles(new)
        n = args.latency_messages
        acked = {}
        body = ("x" * 78 + "\r\n") * 50  # 4 KiB in legal lines
        with smtplib.SMTP("127.0.0.1", pair.port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            t0 = time.monotonic()
            for i in range(n):
                due = t0 + i / args.latency_rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not synchronising
                msg = f"From: load@jaku.com\r\nTo: bench@deathstar.com\r\nX-Bench-Seq: {i}\r\n" \
                      f"Subject: latency {i}\r\n\r\n{body}"
                smtp.sendmail("load@jaku.com", ["bench@deathstar.com"], msg)
                acked[i] = time.monotonic()
        lib.wait_for(lambda: len(watcher.seen) >= n, 120, f"{n} messages in {new}")
        latencies = []
        for name, when in watcher.seen.items():
            with open(os.path.join(new, name), "rb") as f:
                head = f.read(8192)
            tag = head.split(b"X-Bench-Seq: ", 1)[1].split(b"\r\n", 1)[0].split(b"\n", 1)[0]
            latencies.append((when - acked[int(tag)]) * 1000)
        latencies.sort()
        return {"p50_ms": latencies[len(latencies) // 2], "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
                "max_ms": latencies[-1]}
    finally:
        if watcher:
            watcher.close()
        pair.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-messages", type=int, default=500)
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--peer", choices=["postfix"],
                    help="pair mailnet's relay with two private Postfix instances' (root) instead of local delivery")
    ap.add_argument("--resumption", action="store_true",
                    help="pair the relay resuming TLS sessions with the relay not resuming them")
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"],
                    help="where run folders go: the temp folder, or a fresh ext4 (journaled, or not) on a loop device (root)")
    args = ap.parse_args()
    lib.require(lib.SMTP_SOURCE, "postfix")
    with lib.scratch_filesystem(args.fs):
        if args.resumption:
            run_resumption(args)
        elif args.peer:
            run_against_peer(args)
        else:
            run(args)


def run_against_peer(args):
    """mailnet's relay against the peer's, alternating, paired by round."""
    # mailnet as it comes (verified STARTTLS between the nodes, a DKIM
    # signature at jaku.com, SPF/DKIM/DMARC checks at deathstar.com) and
    # mailnet doing what the stock Postfix pair does (none of the three).
    systems = ["mailnet", "mailnet-plain", args.peer]
    lib.log(f"relay against {args.peer}: {args.messages} messages, {args.sessions} sessions; {lib.machine()}")
    thr = {s: [] for s in systems}
    lat = {s: [] for s in systems}
    leftovers = []
    try:
        for rnd in range(args.rounds):
            order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
            for system in order:
                r = run_throughput(args, True, leftovers, system)
                thr[system].append(r)
                lib.log(f"  round {rnd} {system:13} {r['rate']:8,.0f} msg/s until the last file is in new/ "
                        f"(250s {r['accept_rate']:,.0f} msg/s, last 250 after {r['accept_seconds']:.1f}s, last file "
                        f"after {r['seconds']:.1f}s) {r['cpu_us_per_msg']:.0f} us CPU/msg, load {r['load']:.1f}")
            for system in order:
                r = run_latency(args, leftovers, system)
                lat[system].append(r)
                lib.log(f"  round {rnd} {system:13} latency p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                        f"max {r['max_ms']:.1f} ms")
    except BaseException:
        lib.cleanup(leftovers)
        raise
    peer = args.peer
    print(f"\n## relay jaku.com → deathstar.com, mailnet against {peer}: smtp-source -s {args.sessions} "
          f"-m {args.messages} -l 4096, one message per connection; latency {args.latency_messages} messages at "
          f"{args.latency_rate:.0f} msg/s")
    print(f"{lib.machine()}\n")
    print("mailnet: the defaults (verified STARTTLS on the hop, DKIM signing, SPF/DKIM/DMARC checks); "
          "mailnet-plain: none of the three, as the stock Postfix pair\n")
    print("| figure | " + " | ".join(systems) + " |")
    print("|" + " --- |" * (len(systems) + 1))

    def row(label, values, fmt="{:,.0f}"):
        print(f"| {label} | " + " | ".join(lib.summary(v, fmt) if v else "" for v in values) + " |")

    for label, key in (("msg/s until the last file is in the far new/", "rate"), ("msg/s of 250s at jaku.com", "accept_rate")):
        row(label, [[r[key] for r in thr[s]] for s in systems])
    for mine in ("mailnet", "mailnet-plain"):
        ratios = [a["rate"] / b["rate"] for a, b in zip(thr[mine], thr[peer])]
        row(f"{mine} ÷ {peer}, until the last file (paired)",
            [ratios if s == mine else [] for s in systems], "{:.2f}")
    row("CPU µs/msg, all processes of both domains", [[r["cpu_us_per_msg"] for r in thr[s]] for s in systems])
    for label, key in (("latency 250 at jaku.com → file in deathstar.com new/, p50 ms", "p50_ms"),
                       ("same, p99 ms", "p99_ms"), ("same, max ms", "max_ms")):
        row(label, [[r[key] for r in lat[s]] for s in systems], "{:.2f}")
    row("load average (1 min) at the end of the throughput runs", [[r["load"] for r in thr[s]] for s in systems],
        "{:.1f}")
    sys.stdout.flush()
    lib.cleanup(leftovers)


def run_resumption(args):
    """The relay with TLS session resumption against without, alternating, paired by round."""
    systems = ["resumption", "no-resumption"]
    lib.log(f"relay, TLS resumption on and off: {args.messages} messages, {args.sessions} sessions; {lib.machine()}")
    thr = {s: [] for s in systems}
    leftovers = []
    try:
        for rnd in range(args.rounds):
            order = systems if rnd % 2 == 0 else list(reversed(systems))
            for system in order:
                r = run_throughput(args, True, leftovers, system)
                thr[system].append(r)
                lib.log(f"  round {rnd} {system:14} {r['rate']:8,.0f} msg/s until the last file is in new/ "
                        f"(250s {r['accept_rate']:,.0f} msg/s) {r['cpu_us_per_msg']:.0f} us CPU/msg, handshakes "
                        f"{r['full']} full + {r['resumed']} resumed, load {r['load']:.1f}")
    except BaseException:
        lib.cleanup(leftovers)
        raise
    on, off = thr["resumption"], thr["no-resumption"]
    print(f"\n## relay jaku.com → deathstar.com over verified TLS, resumption on and off: smtp-source -s "
          f"{args.sessions} -m {args.messages} -l 4096, one message per connection into jaku.com")
    print(f"{lib.machine()}\n")
    print("| figure | resumption on | off (MAILNET_TLS_RESUMPTION=off) |")
    print("| --- | --- | --- |")
    for label, key, fmt in (("msg/s until the last file is in the far new/", "rate", "{:,.0f}"),
                            ("msg/s of 250s at jaku.com", "accept_rate", "{:,.0f}"),
                            ("CPU µs/msg, all mailnet processes", "cpu_us_per_msg", "{:,.0f}"),
                            ("full handshakes at deathstar.com", "full", "{:,.0f}"),
                            ("resumed handshakes at deathstar.com", "resumed", "{:,.0f}")):
        print(f"| {label} | {lib.summary([r[key] for r in on], fmt)} | {lib.summary([r[key] for r in off], fmt)} |")
    print(f"| on ÷ off, rate (paired) | {lib.summary([a['rate'] / b['rate'] for a, b in zip(on, off)], '{:.2f}')}× | |")
    print(f"| on ÷ off, CPU per message (paired) | "
          f"{lib.summary([a['cpu_us_per_msg'] / b['cpu_us_per_msg'] for a, b in zip(on, off)], '{:.2f}')}× | |")
    sys.stdout.flush()
    lib.cleanup(leftovers)


def run(args):
    lib.log(f"relay: {args.messages} messages, {args.sessions} sessions; {lib.machine()}")
    local, relayed, lat, leftovers = [], [], [], []
    try:
        for rnd in range(args.rounds):
            order = [False, True] if rnd % 2 == 0 else [True, False]
            for relay in order:
                r = run_throughput(args, relay, leftovers)
                (relayed if relay else local).append(r)
                lib.log(f"  round {rnd} {'relay' if relay else 'local':5} {r['rate']:8,.0f} msg/s "
                        f"(250s done after {r['accept_seconds']:.1f}s, last file after {r['seconds']:.1f}s) "
                        f"{r['cpu_us_per_msg']:.0f} us CPU/msg (all mailnet processes)")
            r = run_latency(args, leftovers)
            lat.append(r)
            lib.log(f"  round {rnd} latency p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms max {r['max_ms']:.1f} ms")
    except BaseException:
        lib.cleanup(leftovers)
        raise

    ratios = [b["rate"] / a["rate"] for a, b in zip(local, relayed)]
    print(f"\n## relay: smtp-source -s {args.sessions} -m {args.messages} -l 4096, one message per connection")
    print(f"{lib.machine()}\n")
    print("| figure | median (min..max) |")
    print("| --- | --- |")
    print(f"| local delivery, msg/s until the last file is in new/ | {lib.summary([r['rate'] for r in local])} |")
    print(f"| relayed jaku.com → deathstar.com, msg/s until the last file is in new/ | "
          f"{lib.summary([r['rate'] for r in relayed])} |")
    print(f"| relay ÷ local (paired) | {lib.summary(ratios, '{:.2f}')}× |")
    print(f"| CPU µs/msg, all mailnet processes: local / relay | {lib.summary([r['cpu_us_per_msg'] for r in local])}"
          f" / {lib.summary([r['cpu_us_per_msg'] for r in relayed])} |")
    print(f"| latency 250 at jaku.com → file in deathstar.com new/, p50 ms, {args.latency_rate:.0f} msg/s | "
          f"{lib.summary([r['p50_ms'] for r in lat], '{:.2f}')} |")
    print(f"| same, p99 ms | {lib.summary([r['p99_ms'] for r in lat], '{:.2f}')} |")

    sys.stdout.flush()
    lib.cleanup(leftovers)


if __name__ == "__main__":
    main()
