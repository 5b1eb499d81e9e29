#!/usr/bin/python3
"""One message to many users of one node: the disk it takes and how fast it
is delivered, this build against another (the single-instance store of
issue 16: one file hard-linked into every Maildir, attachments saved once).

    /usr/bin/python3 bench/fanout.py --before-bin /path/to/old/build/bin
        [--messages 3] [--recipients 100] [--rounds 3] [--fs tmp]

Per run: `mailnet up -d` of one domain with the recipients as users, then
--messages messages of 1.37 MB (a 1 MB attachment, base64) sent one after the
other over one connection, each to every recipient. Measured: the time from
the first MAIL FROM to the last 250 (every copy is in new/ at its 250), the
time until the node logged every copy's attachments, the node's CPU
(utime+stime) over the run, and the disk the domain's folder takes then
(st_blocks of each inode once, like du). Builds alternate in every round
(which goes first alternates too); medians with min..max, and the paired
ratio this ÷ before.
"""
import argparse
import email.message
import email.policy
import os
import re
import smtplib
import time

import lib

ATTACHMENT_BYTES = 1_000_000  # base64 makes the message 1.37 MB


def topology(n):
    port, = lib.free_ports(1)
    dns, = lib.free_ports(1, kind=lib.socket.SOCK_DGRAM)
    return {"name": "fanout", "resolver": {"listen": f"127.0.0.1:{dns}"},
            "domains": [{"name": "jaku.com", "listen": f"127.0.0.1:{port}",
                         "users": ["rey"] + [f"u{i:03d}" for i in range(n)]}]}, port


def message(i):
    msg = email.message.EmailMessage()
    msg["From"] = "rey@jaku.com"
    msg["To"] = "everyone@jaku.com"
    msg["Subject"] = f"plans {i}"
    msg.set_content("The plans, for everyone.\n")
    msg.add_attachment(os.urandom(ATTACHMENT_BYTES), maintype="application", subtype="octet-stream",
                       filename="plans.bin")
    return msg.as_bytes(policy=email.policy.SMTP)


def disk_bytes(folder):
    """Bytes allocated under folder, each inode counted once (du's rule)."""
    seen, total = set(), 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def events(run_dir, what):
    try:
        with open(os.path.join(run_dir, "jaku.com", "node.log"), encoding="utf-8", errors="replace") as f:
            return len(re.findall(rf"event={what} ", f.read()))
    except FileNotFoundError:
        return 0


def one_run(bin_dir, args, bodies, leftovers):
    topo, port = topology(args.recipients)
    work = lib.workdir("mailnet-bench-fanout-")
    leftovers.append(work)
    rcpts = [f"u{i:03d}@jaku.com" for i in range(args.recipients)]
    with lib.Network(topo, work, bin_dir=bin_dir) as net:
        node = net.pids()["jaku.com"]
        cpu0 = lib.cpu_seconds(node)
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
            for body in bodies:
                refused = s.sendmail("rey@jaku.com", rcpts, body)
                if refused:
                    raise RuntimeError(f"refused: {refused}")
        accepted = time.monotonic() - t0
        want = args.messages * args.recipients
        lib.wait_for(lambda: events(net.run_dir, "attachments") + events(net.run_dir, "attachment_error") >= want,
                     300, f"{want} attachment events")
        extracted = time.monotonic() - t0
        cpu = lib.cpu_seconds(node) - cpu0
        if events(net.run_dir, "attachment_error"):
            raise RuntimeError("attachment errors: see " + os.path.join(net.run_dir, "jaku.com", "node.log"))
        used = disk_bytes(os.path.join(net.run_dir, "jaku.com"))
    return {"accepted": accepted, "extracted": extracted, "cpu": cpu, "disk": used}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-bin", required=True, help="bin folder of the build to compare with")
    ap.add_argument("--messages", type=int, default=3)
    ap.add_argument("--recipients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"])
    args = ap.parse_args()
    builds = {"mailnet": None, "mailnet-before": os.path.abspath(args.before_bin)}
    bodies = [message(i) for i in range(args.messages)]
    size = len(bodies[0])
    with lib.scratch_filesystem(args.fs):
        lib.log(f"fanout: {args.messages} × {size:,} bytes to {args.recipients} users; {lib.machine()}")
        results = {b: [] for b in builds}
        leftovers = []
        try:
            for rnd in range(args.rounds):
                order = list(builds) if rnd % 2 == 0 else list(reversed(builds))
                for b in order:
                    r = one_run(builds[b], args, bodies, leftovers)
                    results[b].append(r)
                    lib.log(f"  round {rnd} {b:15} {r['accepted']:6.2f} s to the last 250, "
                            f"{r['extracted']:6.2f} s with attachments, CPU {r['cpu']:5.2f} s, "
                            f"disk {r['disk'] / 1e6:7.1f} MB")
                    lib.cleanup([leftovers.pop()])  # a before run writes ~240 MB per message
            report(results, args, size)
        finally:
            lib.cleanup(leftovers)


def report(results, args, size):
    n = args.messages
    copies = n * args.recipients
    print(f"\n## fanout: {n} messages of {size:,} bytes, each to {args.recipients} users of one node\n"
          f"{lib.machine()}\n")
    print("| build | disk MB per message | messages/s (to the last 250) | copies/s | "
          "s per message with attachments saved | node CPU s per message |")
    print("| --- | --- | --- | --- | --- | --- |")
    for b, rs in results.items():
        print(f"| {b} | {lib.summary([r['disk'] / n / 1e6 for r in rs], '{:,.1f}')} "
              f"| {lib.summary([n / r['accepted'] for r in rs], '{:,.2f}')} "
              f"| {lib.summary([copies / r['accepted'] for r in rs], '{:,.0f}')} "
              f"| {lib.summary([r['extracted'] / n for r in rs], '{:,.2f}')} "
              f"| {lib.summary([r['cpu'] / n for r in rs], '{:,.3f}')} |")
    now, before = results["mailnet"], results["mailnet-before"]
    ratio = lambda key: lib.summary([a[key] / b[key] for a, b in zip(now, before)], "{:,.3f}")
    print(f"\nPaired ratios, this ÷ before: disk {ratio('disk')}×, time to the last 250 {ratio('accepted')}×, "
          f"time with attachments {ratio('extracted')}×, node CPU {ratio('cpu')}×")


if __name__ == "__main__":
    main()
