#!/usr/bin/python3
"""The accept rate with STARTTLS on every connection (issue 21): one mailnet
node against a private Postfix with TLS (bench/postfix_peer.py, root) and a
TLS sink, and the same node without STARTTLS (what TLS costs), in
alternating, paired rounds.

    /usr/bin/python3 bench/tls_accept.py [--messages 2000] [--rounds 3] [--servers ...]

Load: bench/tls_source.py (Postfix's smtp-source has no STARTTLS), N
sessions, one message of 4 KiB per connection: EHLO, STARTTLS, a full TLS
handshake checking the server's certificate against the CA for jaku.com,
EHLO, MAIL, RCPT, DATA, QUIT. Servers, each started fresh per run:

- mailnet: a node of `mailnet up -d`, its own network CA, policy.tls
  "optional" (the default); the client does STARTTLS on every connection.
- mailnet-plain: the same node and client without STARTTLS (--plain).
- mailnet-resumed: the same node, each client session offering the TLS
  session of its previous connection (--resume): what resumption saves a
  node as a server, per connection (--servers mailnet,mailnet-resumed).
- postfix: a private Postfix 3.7 (smtpd_tls_security_level = may, a P-256
  certificate made here like mailnet's, Postfix's TLS defaults otherwise)
  delivering with virtual(8) into a Maildir. postfix-plain: the same, plain.
- aiosmtpd-sink: smtp-sink has no STARTTLS, so the closest sink is
  aiosmtpd (python3-aiosmtpd) with STARTTLS, storing nothing
  (bench/aiosmtpd_maildir.py --sink): a ceiling of another TLS server, not
  of the machine.

Measures: msg/s from the start of the load to the last 250 (and for Postfix
until the last file is in new/), the server's CPU per message from /proc
(mailnet: the node; Postfix: the master and every daemon, the exited ones
included), the load's own CPU (its processes, waited for) and how busy the
machine was. Ratios are per round, then the median.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import accept
import lib
import postfix_peer

SERVERS = ("mailnet", "mailnet-plain", "postfix", "aiosmtpd-sink")


def make_certificates(folder):
    """A P-256 CA and a certificate for jaku.com (and mx.jaku.com, 127.0.0.1)
    signed by it, as `mailnet up` makes for a node: for the peers."""
    ca_key, ca, key, csr, cert = (os.path.join(folder, n) for n in ("ca.key", "ca.pem", "jaku.key", "jaku.csr",
                                                                    "jaku.pem"))
    ext = os.path.join(folder, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:jaku.com,DNS:mx.jaku.com,IP:127.0.0.1\n")
    for argv in (
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=bench CA", "-days", "2", "-keyout", ca_key, "-out", ca],
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=jaku.com", "-keyout", key, "-out", csr],
            ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
             "-extfile", ext, "-out", cert]):
        rc, out = lib.run_bounded(argv, 60)
        if rc != 0:
            raise SystemExit(f"{' '.join(argv)}: {out}")
    for p in (ca_key, key):
        os.chmod(p, 0o600)
    return {"ca": ca, "cert": cert, "key": key}


def start(server, work, port, args, certs):
    """(stop, server_cpu(), stored() or None, ca file, load options)"""
    options = ["--plain"] if server.endswith("-plain") else ["--resume"] if server.endswith("-resumed") else []
    if server.startswith("mailnet"):
        stop, pid, stored, _, net = accept.start_mailnet(work, port, args.sessions)
        return stop, (lambda: lib.cpu_seconds(pid)), stored, os.path.join(net.run_dir, "tls", "ca.pem"), options
    if server.startswith("postfix"):
        pf = postfix_peer.Postfix(work, port, ["jaku.com"], tls=(certs["cert"], certs["key"])).configure().start()
        new = pf.new_dir("jaku.com")
        return pf.stop, pf.cpu_seconds, (lambda: lib.count_files(new)), certs["ca"], options
    if server == "aiosmtpd-sink":
        argv = [lib.PYTHON, os.path.join(lib.HERE, "aiosmtpd_maildir.py"), "--port", str(port), "--sink",
                "--tls-cert", certs["cert"], "--tls-key", certs["key"]]
        p = lib.start_ready(argv, lambda: lib.smtp_greets(port), 20, "aiosmtpd to greet",
                            stdout=open(os.path.join(work, "aiosmtpd.log"), "wb"), stderr=subprocess.STDOUT)
        return p.stop, (lambda: lib.cpu_seconds(p.pid)), None, certs["ca"], options
    raise SystemExit(f"unknown server {server}")


def one_run(server, args, certs, leftovers):
    work = lib.workdir(f"mailnet-bench-tls-{server}-")
    leftovers.append(work)  # removed after the report (see accept.py)
    port = lib.free_ports(1)[0]
    stop, server_cpu, stored, ca, load_options = start(server, work, port, args, certs)
    try:
        cpu0 = server_cpu()
        load0 = lib.children_cpu_seconds()
        busy0, all0 = lib.machine_jiffies()
        argv = [lib.PYTHON, os.path.join(lib.HERE, "tls_source.py"), "--port", str(port),
                "--messages", str(args.messages), "--sessions", str(args.sessions), "--procs", str(args.procs),
                "--size", str(args.size), "--ca", ca, "--servername", "jaku.com",
                "--time-limit", str(60 + args.messages / 10), *load_options]
        t0 = time.monotonic()
        rc, out = lib.run_bounded(argv, 120 + args.messages / 5)
        elapsed = time.monotonic() - t0
        load_cpu = lib.children_cpu_seconds() - load0
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"tls_source against {server}: {out[-2000:]}")
        if rc != 0 or result["sent"] != args.messages:
            raise RuntimeError(f"tls_source against {server} ({rc}): {result}")
        stored_seconds = elapsed
        if stored:
            if server.startswith("mailnet"):
                n = stored()  # its 250 means the file is in new/ already
            else:
                n = lib.wait_for(lambda: (lambda c: c if c >= args.messages else 0)(stored()),
                                 60 + args.messages / 20, f"{args.messages} messages in {server}'s Maildir")
                stored_seconds = time.monotonic() - t0
            if n != args.messages:
                raise RuntimeError(f"{server}: {n} of {args.messages} messages in the Maildir")
        busy1, all1 = lib.machine_jiffies()
        cpu = server_cpu() - cpu0
        return {"server": server, "rate": args.messages / elapsed, "stored_rate": args.messages / stored_seconds,
                "cpu_us_per_msg": cpu / args.messages * 1e6, "load_cpu_us_per_msg": load_cpu / args.messages * 1e6,
                "machine_busy": (busy1 - busy0) / max(1, all1 - all0), "tls": result["tls"],
                "load": float(open("/proc/loadavg").read().split()[0])}
    finally:
        stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2, help="load processes (tls_source.py --procs)")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma list of mailnet, mailnet-plain, mailnet-resumed, postfix, postfix-plain (root), aiosmtpd-sink")
    ap.add_argument("--json", help="also write every run here")
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"])
    args = ap.parse_args()
    servers = args.servers.split(",")
    if any(s.startswith("postfix") for s in servers) and os.geteuid() != 0:
        raise SystemExit("the Postfix peer needs root; leave postfix out of --servers")
    if "aiosmtpd-sink" in servers:
        try:
            subprocess.run([lib.PYTHON, "-c", "import aiosmtpd"], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            raise SystemExit("aiosmtpd-sink needs python3-aiosmtpd (Debian)")
    runs, leftovers = [], []
    certs_dir = lib.workdir("mailnet-bench-tls-certs-")
    os.chmod(certs_dir, 0o755)
    leftovers.append(certs_dir)
    with lib.scratch_filesystem(args.fs):
        try:
            certs = make_certificates(certs_dir)
            lib.log(f"tls accept: {args.messages} messages x {args.size} B, {args.sessions} sessions; {lib.machine()}")
            for rnd in range(args.rounds):
                order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
                for server in order:
                    r = one_run(server, args, certs, leftovers)
                    r["round"] = rnd
                    runs.append(r)
                    lib.log(f"  round {rnd} {server:14} {r['rate']:7,.0f} msg/s (250s) {r['stored_rate']:7,.0f} (in new/)"
                            f"  server {r['cpu_us_per_msg']:6.0f} us/msg  load {r['load_cpu_us_per_msg']:6.0f} us/msg"
                            f"  busy {100 * r['machine_busy']:.0f}%  loadavg {r['load']:.1f}  {','.join(r['tls'])}")
        finally:
            if runs:
                report(args, servers, runs)
            lib.cleanup(leftovers)


def report(args, servers, runs):
    def by(server):
        return {r["round"]: r for r in runs if r["server"] == server}

    print(f"\n## accept rate with STARTTLS on every connection: tls_source.py -s {args.sessions} -m {args.messages} "
          f"-l {args.size}, one message per connection")
    print(f"{lib.machine()}\n")
    print("| server | load | msg/s (250s) median (min..max) | msg/s until the last is in new/ | server CPU µs/msg "
          "| load CPU µs/msg | machine busy | mailnet ÷ server, rate (paired) | mailnet ÷ server, CPU/msg (paired) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    mine = by("mailnet")
    for server in servers:
        rs = list(by(server).values())
        if not rs:
            continue
        rate_ratio = cpu_ratio = "-"
        if server != "mailnet" and mine:
            pairs = [(mine[r["round"]], r) for r in rs if r["round"] in mine]
            rate_ratio = lib.summary([a["rate"] / b["rate"] for a, b in pairs], "{:.2f}") + "×"
            cpu_ratio = lib.summary([a["cpu_us_per_msg"] / b["cpu_us_per_msg"] for a, b in pairs], "{:.2f}") + "×"
        load = "plain" if server.endswith("-plain") else "STARTTLS, resumed" if server.endswith("-resumed") else "STARTTLS"
        print(f"| {server} | {load} | {lib.summary([r['rate'] for r in rs])} | {lib.summary([r['stored_rate'] for r in rs])} "
              f"| {lib.summary([r['cpu_us_per_msg'] for r in rs])} | {lib.summary([r['load_cpu_us_per_msg'] for r in rs])} "
              f"| {lib.summary([100 * r['machine_busy'] for r in rs])} % | {rate_ratio} | {cpu_ratio} |")
    for tls_name, plain_name in (("mailnet", "mailnet-plain"), ("postfix", "postfix-plain"),
                                 ("mailnet-resumed", "mailnet")):
        a, b = by(tls_name), by(plain_name)
        pairs = [(a[k], b[k]) for k in a if k in b]
        if pairs:
            print(f"\n{tls_name} ÷ {plain_name} (paired): rate "
                  f"{lib.summary([x['rate'] / y['rate'] for x, y in pairs], '{:.2f}')}×, server CPU per message "
                  f"{lib.summary([x['cpu_us_per_msg'] / y['cpu_us_per_msg'] for x, y in pairs], '{:.2f}')}×")
    print(f"\nTLS seen by the load: {', '.join(sorted({t for r in runs for t in r['tls']}))}")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
