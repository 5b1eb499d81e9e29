#!/usr/bin/python3
"""GET /api/v1/messages over 10,000 delivered messages (issue 19): how long
the web API takes to list them, the first time after the launcher starts and
again and again after.

    /usr/bin/python3 bench/web_messages.py [--messages 10000] [--real 1000] [--runs 50] [--rounds 3]
                                           [--before-bin OTHER/bin]

The Maildirs: a network of two domains (jaku.com: luke, leia, han, bench;
deathstar.com: vader, tarkin, bench). `--real` messages are delivered for real
over SMTP to each node (one in five to two users of the node: one file linked
into both Maildirs); the rest are written straight into the Maildirs as the
node names its files (in new/, and one in four in cur/ with ":2,S"), one in 25
with a small attachment. One in ten has "plans" in its subject. The network is
then stopped, and each round restarts it (`mailnet up -d` without --fresh, the
same run folder) with each build in turn (alternating which goes first):

- first listing right after `up` returns (the launcher has just started);
- first listing after the launcher has been up 3 s (a second restart);
- then each listing variant `--runs` times, interleaved: the median and p99;
- then 20 times: 5 messages delivered for real, then the default listing.

Every answer's `total` is checked against the files in the Maildirs. The
launcher's CPU time and RSS are read from /proc once the first listing is in.
Loopback only, free ports, every wait bounded; the network is stopped with
`mailnet down` (and its pids checked), the run folder removed at the end.
"""
import argparse
import email.utils
import http.client
import json
import os
import smtplib
import statistics
import sys
import time

import lib

DOMAINS = {"jaku.com": ["luke", "leia", "han", "bench"], "deathstar.com": ["vader", "tarkin", "bench"]}
VARIANTS = {
    "all, limit 100 (default)": "",
    "all, limit=10000": "?limit=10000",
    "q=plans (1 in 10 match)": "?q=plans",
    "q matching nothing": "?q=zzqqxx",
    "domain=deathstar.com": "?domain=deathstar.com",
    "domain=jaku.com&user=luke": "?domain=jaku.com&user=luke",
    "domain, user and q": "?domain=jaku.com&user=luke&q=plans",
}


def message_text(i, frm, to, attachment=False):
    subject = f"Death Star plans, part {i}" if i % 10 == 0 else f"Weekly report {i}"
    body = "".join(f"Line {k} of message {i}: the shield generator is on the forest moon.\n" for k in range(20))
    head = (f"From: {frm}\nTo: {to}\nSubject: {subject}\nDate: {email.utils.formatdate(localtime=False)}\n"
            f"Message-ID: <{i}.bench@client.example>\nMIME-Version: 1.0\n")
    if not attachment:
        return head + "Content-Type: text/plain; charset=us-ascii\n\n" + body
    return (head + 'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain\n\n' + body +
            '--b1\nContent-Type: application/octet-stream; name="data.bin"\nContent-Disposition: attachment; '
            'filename="data.bin"\nContent-Transfer-Encoding: base64\n\n' + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n" * 8 +
            "--b1--\n")


def deliver(net, ports, count, start):
    """count messages over SMTP, spread over the domains' nodes (one
    connection per node); one in five to two users of the node."""
    clients = {d: smtplib.SMTP("127.0.0.1", ports[d], timeout=60) for d in DOMAINS}
    try:
        for i in range(start, start + count):
            d = list(DOMAINS)[i % len(DOMAINS)]
            users = DOMAINS[d]
            rcpts = [f"{users[i % len(users)]}@{d}"]
            if i % 5 == 0:
                rcpts.append(f"{users[(i + 1) % len(users)]}@{d}")
            clients[d].sendmail("load@client.example", rcpts,
                                message_text(i, "load@client.example", ", ".join(rcpts)).replace("\n", "\r\n"))
    finally:
        for c in clients.values():
            c.quit()


def write_files(run_dir, count, start):
    """count files written straight into the Maildirs, named as the node names
    them (seconds.Mmicros P pid Q n), older than the delivered ones."""
    now = int(time.time())
    for k in range(count):
        i = start + k
        d = list(DOMAINS)[i % len(DOMAINS)]
        user = DOMAINS[d][(i // 2) % len(DOMAINS[d])]
        seconds, micros = now - 100000 + k // 10, (k % 10) * 1000 + 7
        name = f"{seconds}.M{micros:06d}P4242Q{i}.bench"
        sub = "new"
        if k % 4 == 3:
            sub, name = "cur", name + ":2,S"
        path = os.path.join(run_dir, d, "mail", user, sub, name)
        with open(path, "w") as f:
            f.write(message_text(i, "writer@client.example", f"{user}@{d}", attachment=k % 25 == 0))


def files_in_maildirs(run_dir, domain=None, user=None):
    n = 0
    for d, users in DOMAINS.items():
        for u in users:
            if (domain and d != domain) or (user and u != user):
                continue
            for sub in ("new", "cur"):
                n += lib.count_files(os.path.join(run_dir, d, "mail", u, sub))
    return n


def get(port, target):
    """(seconds, document) of one GET on a new connection, as a browser or curl."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("GET", "/api/v1/messages" + target)
        r = c.getresponse()
        body = r.read()
    finally:
        c.close()
    elapsed = time.monotonic() - t0
    if r.status != 200:
        raise RuntimeError(f"GET {target}: {r.status} {body[:300]!r}")
    return elapsed, json.loads(body)


def check_total(doc, run_dir, target):
    if target in ("", "?limit=10000"):
        want = files_in_maildirs(run_dir)
    elif target == "?domain=deathstar.com":
        want = files_in_maildirs(run_dir, "deathstar.com")
    elif target == "?domain=jaku.com&user=luke":
        want = files_in_maildirs(run_dir, "jaku.com", "luke")
    else:
        return
    if doc["total"] != want:
        raise RuntimeError(f"GET {target}: total {doc['total']}, but {want} files in the Maildirs")


def p99(values):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def one_up(net, port, ports, wait, args, measure_all, next_id):
    """Starts the network again on its folder; the first listing (after wait
    seconds), then (measure_all) the variants and the incremental listings."""
    net.up(fresh=False)
    out = {"up_seconds": net.up_seconds}
    try:
        if wait:
            time.sleep(wait)  # the launcher idle: its index being built in the background
        out["first"], doc = get(port, "")
        check_total(doc, net.run_dir, "")
        launcher = net.launcher_pid()
        out["launcher_cpu_s"] = lib.cpu_seconds(launcher)
        out["launcher_rss_mib"] = lib.status_kib(launcher, "VmRSS") / 1024
        if not measure_all:
            return out, next_id
        times = {v: [] for v in VARIANTS}
        cpu = {v: 0.0 for v in VARIANTS}  # the launcher's, summed per variant
        for _ in range(args.runs):
            for v, target in VARIANTS.items():
                c0 = lib.cpu_seconds(launcher)
                t, doc = get(port, target)
                cpu[v] += lib.cpu_seconds(launcher) - c0
                check_total(doc, net.run_dir, target)
                times[v].append(t)
        out["variants"] = times
        out["cpu_per_request"] = {v: c / args.runs for v, c in cpu.items()}
        inc = []
        for _ in range(20):
            deliver(net, ports, 5, next_id)
            next_id += 5
            t, doc = get(port, "")
            check_total(doc, net.run_dir, "")
            inc.append(t)
        out["incremental"] = inc
        return out, next_id
    finally:
        net.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10000, help="files in the Maildirs before the first round")
    ap.add_argument("--real", type=int, default=1000, help="of them, delivered over SMTP (the rest written as files)")
    ap.add_argument("--runs", type=int, default=50, help="listings of each variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before-bin", help="bin folder of another build, run on the same folder in the same rounds")
    ap.add_argument("--json", help="also write every figure here")
    args = ap.parse_args()
    builds = {"mailnet": None}
    if args.before_bin:
        builds["mailnet-before"] = args.before_bin
    lib.log(f"web_messages: {args.messages} messages ({args.real} over SMTP); {lib.machine()}")
    work = lib.workdir("mailnet-bench-webmsg-")
    results = []
    try:
        ports = dict(zip(DOMAINS, lib.free_ports(len(DOMAINS))))
        web_port = lib.free_ports(1)[0]
        topology = {
            "name": "bench-web-messages",
            "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1)[0]}"},
            "web": {"listen": f"127.0.0.1:{web_port}"},
            "domains": [{"name": d, "listen": f"127.0.0.1:{ports[d]}", "users": u} for d, u in DOMAINS.items()],
        }
        nets = {b: lib.Network(dict(topology), work, bin_dir=bin_dir) for b, bin_dir in builds.items()}
        first = nets["mailnet"]
        first.up()
        try:
            t0 = time.monotonic()
            # Real deliveries: one recipient each, one in five two: more files than messages.
            deliver(first, ports, args.real, 0)
            delivered = files_in_maildirs(first.run_dir)
            lib.log(f"  {args.real} messages over SMTP ({delivered} files) in {time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            write_files(first.run_dir, max(0, args.messages - delivered), args.real)
            lib.log(f"  {max(0, args.messages - delivered)} files written in {time.monotonic() - t0:.1f} s")
        finally:
            first.down()
        next_id = 10 ** 6
        names = list(builds)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for b in order:
                net = nets[b]
                r = {"build": b, "round": rnd}
                cold, next_id = one_up(net, web_port, ports, 0, args, False, next_id)
                r["first_at_up"] = cold["first"]
                r["cpu_at_up"] = cold["launcher_cpu_s"]
                settled, next_id = one_up(net, web_port, ports, 3, args, True, next_id)
                r.update(first_after_3s=settled["first"], launcher_cpu_s=settled["launcher_cpu_s"],
                         launcher_rss_mib=settled["launcher_rss_mib"], variants=settled["variants"],
                         cpu_per_request=settled["cpu_per_request"],
                         incremental=settled["incremental"], files=files_in_maildirs(net.run_dir))
                results.append(r)
                lib.log(f"  round {rnd} {b:15} first at up {1000 * r['first_at_up']:7.1f} ms, after 3 s "
                        f"{1000 * r['first_after_3s']:6.1f} ms, default median "
                        f"{1000 * statistics.median(r['variants']['all, limit 100 (default)']):6.1f} ms")
    finally:
        if results:
            report(args, builds, results)
        lib.cleanup([work])


def ms(values):
    return f"{1000 * statistics.median(values):,.1f}"


def report(args, builds, results):
    print(f"\n## GET /api/v1/messages over {results[0]['files']:,}+ files ({args.real} messages over SMTP, "
          f"the rest written), {args.rounds} rounds")
    print(f"{lib.machine()}\n")
    print("| build | first listing right after `up` ms | first listing 3 s after `up` ms | launcher CPU s / RSS MiB then |")
    print("| --- | --- | --- | --- |")
    for b in builds:
        rs = [r for r in results if r["build"] == b]
        print(f"| {b} | {lib.summary([1000 * r['first_at_up'] for r in rs], '{:,.1f}')} | "
              f"{lib.summary([1000 * r['first_after_3s'] for r in rs], '{:,.1f}')} | "
              f"{lib.summary([r['launcher_cpu_s'] for r in rs], '{:.2f}')} / "
              f"{lib.summary([r['launcher_rss_mib'] for r in rs], '{:.0f}')} |")
    print(f"\nRepeated listings, {args.runs} per variant per round, interleaved; median and p99 over all "
          f"rounds' runs (ms, each on a new connection, as curl); the launcher's CPU per request (ms, the "
          f"median over rounds of each round's mean; /proc counts in 10 ms ticks):\n")
    head = " | ".join(f"{b} median | {b} p99 | {b} launcher CPU" for b in builds)
    print(f"| request | {head} |")
    print("| --- |" + " --- | --- | --- |" * len(builds))
    rows = list(VARIANTS) + ["default, after 5 new messages (x20)"]
    for v in rows:
        cells = []
        for b in builds:
            rs = [r for r in results if r["build"] == b]
            vals = [t for r in rs for t in (r["incremental"] if v.startswith("default, after") else r["variants"][v])]
            cpu = "-" if v not in VARIANTS else ms([r["cpu_per_request"][v] for r in rs])
            cells.append(f"{ms(vals)} | {1000 * p99(vals):,.1f} | {cpu}")
        print(f"| {v} | {' | '.join(cells)} |")
    if len(builds) > 1:
        ratios = []
        for rnd in range(args.rounds):
            a = [r for r in results if r["round"] == rnd and r["build"] == "mailnet"]
            b = [r for r in results if r["round"] == rnd and r["build"] == "mailnet-before"]
            if a and b:
                ratios.append(statistics.median(a[0]["variants"]["all, limit 100 (default)"]) /
                              statistics.median(b[0]["variants"]["all, limit 100 (default)"]))
        print(f"\nDefault listing, mailnet ÷ before (median of paired rounds): {lib.summary(ratios, '{:.2f}')}×")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
