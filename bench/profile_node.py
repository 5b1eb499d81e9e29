#!/usr/bin/python3
"""Figure 7: where a node's time goes under load. Brings up one node, runs
smtp-source against it, and records the node with `perf record -e cpu-clock`
(software clock: works in VMs without hardware counters) or, with --strace,
counts its system calls with `strace -c -f`.

    /usr/bin/python3 bench/profile_node.py [--messages 5000] [--strace] [--out DIR]
                                           [--auth] [--callgraph [--dwarf]] [--bin DIR]

--auth: auth_cost.py's load instead (a DKIM-signed message from
vader@mail.deathstar.com, whose SPF, DKIM key and DMARC records the network
publishes): where the SPF, DKIM and DMARC checks spend the node's time.
--dwarf: user stacks unwound from DWARF (a Release build has no frame
pointers); perf.data grows large, so use fewer messages.

Prints the top of `perf report` (or strace's table) and leaves perf.data in --out.
"""
import argparse
import os
import signal
import subprocess
import time

import lib
from accept import start_mailnet


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--reuse", action="store_true", help="smtp-source -d")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--callgraph", action="store_true", help="perf record -g (kernel stacks; user stacks need frame pointers)")
    ap.add_argument("--dwarf", action="store_true", help="with --callgraph: --call-graph dwarf")
    ap.add_argument("--auth", action="store_true", help="auth_cost.py's signed load, the checks on")
    ap.add_argument("--bin", default=None, help="bin folder of the build to profile (default: MAILNET_BIN_DIR)")
    ap.add_argument("--out", default=None, help="where perf.data or strace.txt stays (default: a new temp folder)")
    args = ap.parse_args()
    args.out = args.out or lib.workdir("mailnet-profile-")
    os.makedirs(args.out, exist_ok=True)
    work = lib.workdir("mailnet-profile-run-")
    port = lib.free_ports(1)[0]
    load_args = ["-l", "4096", "-M", "client.example", "-f", "load@client.example"]
    shape = None
    if args.auth:
        import auth_cost
        text, key_record = auth_cost.signed_message(4096)
        message_file = os.path.join(work, "signed.eml")
        with open(message_file, "wb") as f:
            f.write(text)
        load_args = ["-M", "mail.deathstar.com", "-f", "vader@mail.deathstar.com", "-F", message_file]
        shape = auth_cost.shape(True, key_record)
    stop, pid, stored, *_ = start_mailnet(work, port, args.sessions, bin_dir=args.bin, shape=shape)
    tracer = None
    try:
        out_file = os.path.join(args.out, "strace.txt" if args.strace else "perf.data")
        if args.strace:
            argv = ["strace", "-c", "-f", "-o", out_file, "-p", str(pid)]
        else:
            argv = ["perf", "record", "-e", "cpu-clock", "-F", "2000", "-o", out_file, "-p", str(pid)]
            if args.callgraph:
                argv[2:2] = ["--call-graph", "dwarf,16384"] if args.dwarf else ["-g"]
        err_file = os.path.join(args.out, "tracer.err")
        tracer = lib.Started(argv, stdout=subprocess.DEVNULL, stderr=open(err_file, "wb"))
        # Attached: strace says so on stderr; perf has written its file header.
        if args.strace:
            lib.wait_for(lambda: "attached" in open(err_file).read(), 10, "strace to attach")
        else:
            lib.wait_for(lambda: os.path.exists(out_file) and os.path.getsize(out_file) > 0, 10, "perf to start")
        load = [lib.SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages),
                *(["-d"] if args.reuse else []), *load_args, "-t", "bench@jaku.com", f"127.0.0.1:{port}"]
        t0 = time.monotonic()
        rc, out = lib.run_bounded(load, 60 + args.messages / 20)
        lib.log(f"{args.messages} messages in {time.monotonic() - t0:.2f}s (rc {rc}); stored {stored()}")
        os.kill(tracer.pid, signal.SIGINT)
        tracer.proc.wait(60)
    finally:
        if tracer:
            tracer.stop()
        stop()
        lib.remove_tree(work)
    if args.strace:
        print(open(out_file).read())
    else:
        rc, report = lib.run_bounded(["perf", "report", "-i", out_file, "--no-children", "--sort", "dso,symbol",
                                      "--stdio"], 120)
        print("\n".join(l for l in report.splitlines() if l and not l.startswith("#"))[:8000])
    lib.log(f"kept {out_file}")


if __name__ == "__main__":
    main()
