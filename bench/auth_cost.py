#!/usr/bin/python3
"""What the SPF, DKIM and DMARC checks cost a node (issue 22): its accept
rate with the checks on (policy.dmarc "report", the default) against the same
network with them off (policy.dmarc "off"), in alternating, paired runs.

    /usr/bin/python3 bench/auth_cost.py [--messages 5000] [--rounds 5] [--before-bin OTHER/bin]

The load is accept.py's smtp-source -s 20, but every message is one file
(-F) signed by dkimpy with a 2048-bit key: From and MAIL FROM
vader@mail.deathstar.com, whose SPF record allows 127.0.0.1 (smtp-source's
address), whose DKIM key and DMARC record (p=reject) deathstar.com's
dns.records publish. So with the checks on, each message costs a full SPF
evaluation (MAIL FROM and HELO), an RSA-2048 verification and a DMARC
evaluation; the DNS answers come from the node's resolver client and its
cache (resolver.ttl, 5 s). The first run with the checks on must deliver
spf=pass dkim=pass dmarc=pass, or the figures mean nothing.

--before-bin DIR adds a third network, "checks on, before": the checks on
with the binaries of another build (an A/B of a change to the checks), in
the same rounds and alternating order; the report adds the paired ratios of
this build's checks to that one's. "checks off" is this build's (the checks
off run none of the code they measure).

Also a leak watch: the node's VmRSS at the end of each run, beside the
count of messages it checked (a library call path that leaks per message
shows as RSS growing with the checks on and not off).
"""
import argparse
import base64
import contextlib
import os
import subprocess
import sys
import tempfile

import accept
import fault_cost
import lib

SERVERS = ("checks off", "checks on")
BEFORE = "checks on, before"
SELECTOR = "bench"


def signed_message(size):
    """(LF-ended message file text, DKIM TXT record value)."""
    import dkim  # python3-dkim
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                             capture_output=True).stdout
        with open(key, "rb") as f:
            private = f.read()
    line = b"The plans are in the droid; the exhaust port is two metres wide.\r\n"
    body = line * max(1, size // len(line))
    msg = (b"From: Vader <vader@mail.deathstar.com>\r\nTo: bench@jaku.com\r\nSubject: bench\r\n"
           b"Message-ID: <bench@mail.deathstar.com>\r\n\r\n" + body)
    sig = dkim.sign(msg, SELECTOR.encode(), b"mail.deathstar.com", private,
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    # smtp-source appends CRLF to each line of the file: the wire form is the signed one.
    return (sig + msg).replace(b"\r\n", b"\n"), "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def shape(checks, key_record):
    add_deathstar = fault_cost.shape(False)

    def change(topology):
        add_deathstar(topology)
        topology["name"] = "bench-auth-cost"
        jaku, deathstar = topology["domains"]
        jaku.setdefault("policy", {})["dmarc"] = "report" if checks else "off"
        txt = lambda name, value: {"name": name, "type": "TXT", "value": value}  # noqa: E731
        deathstar["dns"] = {"records": [txt("mail.deathstar.com", "v=spf1 ip4:127.0.0.1 -all"),
                                        txt("_dmarc.mail.deathstar.com", "v=DMARC1; p=reject"),
                                        txt(f"{SELECTOR}._domainkey.mail.deathstar.com", key_record)]}
    return change


def before_after_report(modes, runs, before_bin):
    """This build's checks against the other build's, round by round."""
    print(f"\n| mode | checks on: this build ÷ {before_bin} (median of paired ratios) | rate | node CPU µs/msg |")
    print("| --- | --- | --- | --- |")
    for mode in modes:
        before = {r["round"]: r for r in runs if r["mode"] == mode and r["server"] == BEFORE}
        pairs = [(r, before[r["round"]]) for r in runs
                 if r["mode"] == mode and r["server"] == "checks on" and r["round"] in before]
        if not pairs:
            continue
        rate = lib.summary([a["rate"] / b["rate"] for a, b in pairs], "{:.3f}")
        cpu = lib.summary([a["cpu_us_per_msg"] / b["cpu_us_per_msg"] for a, b in pairs], "{:.3f}")
        saved = lib.summary([b["cpu_us_per_msg"] - a["cpu_us_per_msg"] for a, b in pairs])
        print(f"| {mode} | {len(pairs)} pairs | {rate}× | {cpu}× (saved {saved} µs/msg) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="per-connection,reused", help="per-connection, reused")
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"])
    ap.add_argument("--before-bin", help="bin folder of another build: adds network \"checks on, before\" (an A/B)")
    args = ap.parse_args()
    servers = SERVERS + ((BEFORE,) if args.before_bin else ())
    lib.require(lib.SMTP_SOURCE, "postfix")
    text, key_record = signed_message(args.size)
    work = lib.workdir("mailnet-bench-auth-")
    message_file = os.path.join(work, "signed.eml")
    with open(message_file, "wb") as f:
        f.write(text)
    args.load_args = ["-M", "mail.deathstar.com", "-f", "vader@mail.deathstar.com", "-F", message_file]
    rss = {}  # (server, round, mode) -> (KiB at the end, messages checked)
    checked_once = []

    def watch(server):
        @contextlib.contextmanager
        def during(net, _work):
            yield {}
            node_log = os.path.join(net.run_dir, "jaku.com", "node.log")
            pid = net.pids()["jaku.com"]
            rss[server].append(lib.status_kib(pid, "VmRSS"))
            if server != "checks off" and checked_once.count(server) == 0:
                with open(node_log) as f:
                    log = f.read()
                for want in ("event=spf result=pass", "event=dkim result=pass", "event=dmarc result=pass"):
                    if want not in log:
                        raise RuntimeError(f"the checks did not pass ({want} missing in {node_log})")
                checked_once.append(server)
        return during

    starters = {
        "checks off": lambda w, p, s: accept.start_mailnet(w, p, s, shape=shape(False, key_record)),
        "checks on": lambda w, p, s: accept.start_mailnet(w, p, s, shape=shape(True, key_record)),
        BEFORE: lambda w, p, s: accept.start_mailnet(w, p, s, bin_dir=os.path.abspath(args.before_bin),
                                                     shape=shape(True, key_record)),
    }
    rss = {s: [] for s in servers}
    modes = {k: v for k, v in accept.MODES.items() if k.split()[0] in args.modes.split(",")}
    lib.log(f"auth_cost: {args.messages} signed messages x {args.size} B, {args.sessions} sessions; {lib.machine()}")
    with lib.scratch_filesystem(args.fs):
        runs, leftovers = [], [work]
        try:
            for rnd in range(args.rounds):
                for mode, mode_args in modes.items():
                    order = list(servers[rnd % len(servers):] + servers[:rnd % len(servers)])  # alternate who goes first
                    for server in order:
                        r = accept.one_run(server, mode_args, args, leftovers, starters=starters,
                                           during=watch(server))
                        r.update(mode=mode, round=rnd, rss_kib=rss[server][-1])
                        runs.append(r)
                        lib.log(f"  round {rnd} {mode:15} {server:17} {r['rate']:8,.0f} msg/s  "
                                f"{r['cpu_us_per_msg']:6.0f} us node CPU/msg  VmRSS {r['rss_kib']:,} KiB")
        finally:
            if runs:
                fault_cost.paired_report(
                    f"SPF, DKIM and DMARC checks: smtp-source -s {args.sessions} -m {args.messages}, a signed "
                    f"{args.size} B message, {args.rounds} rounds", args, modes, runs, servers, "checks off",
                    "on ÷ off, rate")
                if args.before_bin:
                    before_after_report(modes, runs, args.before_bin)
                print("\n| network | node VmRSS at the end of a run, KiB: median (min..max) |\n| --- | --- |")
                for server in servers:
                    print(f"| {server} | {lib.summary([r['rss_kib'] for r in runs if r['server'] == server])} |")
            lib.cleanup(leftovers)


if __name__ == "__main__":
    sys.exit(main())
