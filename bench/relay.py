#!/usr/bin/python3
"""Figure 3: relay. Mail sent to jaku.com for a deathstar.com user crosses the
queue, the resolver and a second SMTP hop.

    /usr/bin/python3 bench/relay.py [--messages 20000] [--rounds 3] [--latency-messages 500]

jaku.com relays only for its own senders, so the load comes from load@jaku.com.

Throughput: smtp-source -s 20 -m N -l 4096 against jaku.com for
bench@deathstar.com, timed until the last message is in deathstar.com's
Maildir; paired in the same round with the same load delivered locally by one
node (the accept rate), so the ratio is from one run.

Latency: a paced client (100 msg/s, one connection) sends to jaku.com; the time
from its 250 to the file appearing in deathstar.com's new/ (seen with inotify,
through ctypes) gives p50 and p99.
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


def topology(ports, resolver_port):
    return {
        "name": "bench-relay",
        "resolver": {"listen": f"127.0.0.1:{resolver_port}"},
        "defaults": {"retry": {"first": "1s", "max": "5s", "give_up_after": "10m"}},
        "domains": [
            {"name": "jaku.com", "listen": f"127.0.0.1:{ports[0]}", "users": ["bench"]},
            {"name": "deathstar.com", "listen": f"127.0.0.1:{ports[1]}", "users": ["bench"]},
        ],
    }


def smtp_source(port, args, to, reuse=False):
    argv = [lib.SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages), "-l", "4096",
            *(["-d"] if reuse else []), "-M", "client.example", "-f", "load@jaku.com", "-t", to,
            f"127.0.0.1:{port}"]
    rc, out = lib.run_bounded(argv, 60 + args.messages / 50)
    if rc != 0 or "fatal" in out:
        raise RuntimeError(f"smtp-source failed ({rc}): {out[-2000:]}")


def run_throughput(args, relay, leftovers):
    work = lib.workdir("mailnet-bench-relay-")
    leftovers.append(work)
    ports = lib.free_ports(2)
    net = lib.Network(topology(ports, lib.free_ports(1, lib.socket.SOCK_DGRAM)[0]), work).up()
    try:
        pids = net.pids()
        target = "deathstar.com" if relay else "jaku.com"
        new = os.path.join(net.run_dir, target, "mail", "bench", "new")
        cpu0 = sum(lib.cpu_seconds(p) for p in pids.values())
        t0 = time.monotonic()
        smtp_source(ports[0], args, f"bench@{target}")
        accepted = time.monotonic() - t0
        lib.wait_for(lambda: lib.count_files(new) >= args.messages, 120 + args.messages / 50,
                     f"{args.messages} messages in {new}")
        elapsed = time.monotonic() - t0
        cpu = sum(lib.cpu_seconds(p) for p in pids.values()) - cpu0
        return {"rate": args.messages / elapsed, "accept_seconds": accepted, "seconds": elapsed,
                "cpu_us_per_msg": cpu / args.messages * 1e6}
    finally:
        net.down()


def run_latency(args, leftovers):
    work = lib.workdir("mailnet-bench-latency-")
    leftovers.append(work)
    ports = lib.free_ports(2)
    net = lib.Network(topology(ports, lib.free_ports(1, lib.socket.SOCK_DGRAM)[0]), work).up()
    watcher = None
    try:
        new = os.path.join(net.run_dir, "deathstar.com", "mail", "bench", "new")
        watcher = NewFiles(new)
        n = args.latency_messages
        acked = {}
        body = ("x" * 78 + "\r\n") * 50  # 4 KiB in legal lines
        with smtplib.SMTP("127.0.0.1", ports[0], timeout=30) as smtp:
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
        lib.wait_for(lambda: len(watcher.seen) >= n, 60, f"{n} messages in {new}")
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
        net.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-messages", type=int, default=500)
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"],
                    help="where run folders go: the temp folder, or a fresh ext4 (journaled, or not) on a loop device (root)")
    args = ap.parse_args()
    lib.require(lib.SMTP_SOURCE, "postfix")
    with lib.scratch_filesystem(args.fs):
        run(args)


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
