#!/usr/bin/python3
"""What the web dashboard costs a node (issue 19): the accept rate of a node
whose launcher runs no web server (`"web": false`) against the same network
with the web server on and a headless browser on its network page `/`, in
alternating, paired runs.

    /usr/bin/python3 bench/web_cost.py [--messages 10000] [--rounds 7] [--sse-reader]

Needs Debian's chromium, chromium-driver and python3-selenium. The browser:
/usr/bin/chromium driven by /usr/bin/chromedriver, headless, with a fresh
profile folder of its own, opened on `/` (the network page, as a user sees
it: its scripts, its poll of /api/v1/network, its own event stream) before
the load begins and closed after. With --sse-reader a thread of this script
also reads the whole GET /api/v1/events (every event, unfiltered) as fast as
it comes: a second client, which the issue's condition does not include. The
load is accept.py's: smtp-source -s 20 -m N -l 4096, one message per
connection and with -d (connections reused). Reported: the rate, the node's
and the launcher's CPU per message (utime+stime from /proc), the paired ratio
on ÷ off; with the web on, the CPU of every chromium process (the browser,
its renderer, its GPU and network processes: all under chromedriver) per
message, and the web's whole extra CPU (launcher on − launcher off +
chromium) against the node's and launcher's with the web off, per round.
Both networks are otherwise identical. The load starts once the page has
settled (chromium under 5 % of a core for 2 seconds in a row, at most 20 s):
the page's own start-up is not the cost of a page left open.
"""
import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import accept
import fault_cost
import lib

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SERVERS = ("web off", "web on + network page")


def shape(web):
    def change(topology):
        topology["name"] = "bench-web-cost"
        topology["web"] = {"listen": f"127.0.0.1:{lib.free_ports(1)[0]}"} if web else False
    return change


STARTERS = {
    "web off": lambda w, p, s: accept.start_mailnet(w, p, s, shape=shape(False)),
    "web on + network page": lambda w, p, s: accept.start_mailnet(w, p, s, shape=shape(True)),
}


class EventReader(threading.Thread):
    """GET /api/v1/events read as it comes, as an EventSource would; counts
    the events (blank-line separated). Stopped by closing its socket."""

    def __init__(self, host, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                          f"Cache-Control: no-cache\r\n\r\n".encode())
        self.events = 0
        self.bytes = 0
        self.status = None
        self.error = None
        self.stopping = False

    def run(self):
        tail = b""
        try:
            self.sock.settimeout(None)
            while not self.stopping:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                self.bytes += len(data)
                if self.status is None:
                    self.status = data.split(b"\r\n", 1)[0].decode("latin-1")
                tail += data
                self.events += tail.count(b"\n\n")
                tail = tail[tail.rfind(b"\n\n") + 2:] if b"\n\n" in tail else tail[-1:]
        except OSError as e:
            if not self.stopping:
                self.error = str(e)

    def stop(self):
        self.stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.join(10)


def chromium_pids(driver_pid):
    """The chromium processes under chromedriver (for their CPU): its child
    and that child's descendants."""
    out, todo = [], [driver_pid]
    for _ in range(1000):
        if not todo:
            break
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


def tree_cpu(driver_pid):
    """{pid: CPU seconds} of each chromium process now (one that ends between
    two readings loses its share: chromium keeps its processes for the page's
    life)."""
    out = {}
    for pid in chromium_pids(driver_pid):
        with contextlib.suppress(OSError):
            out[pid] = lib.cpu_seconds(pid)
    return out


def settle(driver_pid, quiet_share=0.05, seconds=2, timeout=20):
    """Wait until the page is open as a user leaves it: chromium's CPU below
    quiet_share of a core in each of `seconds` consecutive seconds (its
    start-up, parsing, the first frames and the first polls, take about a
    fifth of a core in the first second after the graph has drawn: measured
    into a 3-second run, that start-up would be counted as the open page's
    cost). Bounded by timeout; returns the seconds it took."""
    start = time.monotonic()
    quiet = 0
    prev = sum(tree_cpu(driver_pid).values())
    while quiet < seconds and time.monotonic() - start < timeout:
        time.sleep(1)
        cur = sum(tree_cpu(driver_pid).values())
        quiet = quiet + 1 if cur - prev < quiet_share else 0
        prev = cur
    return round(time.monotonic() - start, 1)


@contextlib.contextmanager
def dashboard(net, work, sse_reader=False):
    """A headless chromium on the web server's `/` (and with sse_reader an
    event stream reader), for as long as the load runs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with open(net.topology_file) as f:
        host, port = json.load(f)["web"]["listen"].rsplit(":", 1)
    port = int(port)
    # The browser's profile and temp files: a folder of their own, short (its
    # singleton socket's path must fit in a sockaddr_un), removed after.
    holder = tempfile.mkdtemp(prefix="mnb-chr-")
    profile, tmp = os.path.join(holder, "profile"), os.path.join(holder, "tmp")
    os.makedirs(profile)
    os.makedirs(tmp)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in CHROMIUM_ARGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(a)
    # MAILNET_BENCH_DRIVER_LOG=FILE: chromedriver --verbose writes there (why a browser did not start).
    log = os.environ.get("MAILNET_BENCH_DRIVER_LOG")
    service = Service(CHROMEDRIVER, service_args=["--verbose"] if log else [], log_path=log or os.devnull,
                      env=dict(os.environ, TMPDIR=tmp))
    driver = webdriver.Chrome(service=service, options=opts)
    driver_pid = service.process.pid
    reader = None
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"http://{host}:{port}/")
        lib.wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 60,
                     "the dashboard page to load")
        # The page is up when its graph has drawn (or said why not) and its
        # event stream is open.
        lib.wait_for(lambda: driver.execute_script(
            "return !!window.mailnetGraph && (window.mailnetGraph.loadMs() !== null)"), 60, "the network page's graph")
        if sse_reader:
            reader = EventReader(host, port)
            reader.start()
            lib.wait_for(lambda: reader.status or reader.error, 30, "the event stream to answer")
            if not (reader.status or "").split()[1:2] == ["200"]:
                raise RuntimeError(f"GET /api/v1/events: {reader.status} {reader.error or ''}")
        dashboard.last = {"events": 0, "title": driver.title,
                          "settle_s": settle(driver_pid)}
        cpu0 = tree_cpu(driver_pid)
        yield {}
        cpu1 = tree_cpu(driver_pid)
        dashboard.last["chromium_cpu_s"] = sum(c - cpu0.get(pid, 0.0) for pid, c in cpu1.items())
        dashboard.last["chromium_processes"] = len(cpu1)
        dashboard.last["graph"] = driver.execute_script("return window.mailnetGraph.available()")
        if reader:
            dashboard.last["events"] = reader.events
            dashboard.last["event_bytes"] = reader.bytes
            dashboard.last["sse_error"] = reader.error
    finally:
        if reader:
            reader.stop()
        browser = chromium_pids(driver_pid)
        with contextlib.suppress(Exception):
            driver.quit()
        # Whatever of ours survived quit(): by pid.
        for pid in [driver_pid] + browser:
            deadline = time.monotonic() + 5
            while lib.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if lib.pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(holder, ignore_errors=True)


dashboard.last = {}


def web_report(runs, modes, args):
    """The web's CPU beside the table: per round, chromium's CPU per message,
    the launcher's extra, and their sum against what the network with the
    web off spent (node + launcher) per message in the same round."""
    print("\n| mode | chromium CPU µs/msg | chromium, share of one core | launcher extra µs/msg (on − off) | "
          "web's extra CPU ÷ off's node+launcher CPU | the page's graph drawn |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        off = {r["round"]: r for r in runs if r["mode"] == mode and r["server"] == SERVERS[0]}
        on = [r for r in runs if r["mode"] == mode and r["server"] == SERVERS[1] and r["round"] in off]
        if not on:
            continue
        chromium = [r["chromium_cpu_us_per_msg"] for r in on]
        launcher = [r["launcher_cpu_us_per_msg"] - off[r["round"]]["launcher_cpu_us_per_msg"] for r in on]
        share = [100 * (c + l) / (off[r["round"]]["cpu_us_per_msg"] + off[r["round"]]["launcher_cpu_us_per_msg"])
                 for r, c, l in zip(on, chromium, launcher)]
        core = [100 * r["chromium_cpu_s"] / r["seconds"] for r in on]
        print(f"| {mode} | {lib.summary(chromium, '{:,.1f}')} | {lib.summary(core, '{:,.1f}')} % | "
              f"{lib.summary(launcher, '{:,.1f}')} | "
              f"{lib.summary(share, '{:,.1f}')} % | {sum(bool(r.get('graph')) for r in on)} of {len(on)} runs |")
    if args.sse_reader:
        print(f"\nEvents read from /api/v1/events per run {lib.summary([r['events'] for r in runs if 'events' in r])}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sse-reader", action="store_true",
                    help="with the web on, also a reader of the whole unfiltered /api/v1/events")
    ap.add_argument("--json", help="write every run's figures to this file as they come")
    ap.add_argument("--modes", default="per-connection,reused", help="per-connection, reused")
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"],
                    help="where run folders go: the temp folder, or a fresh ext4 on a loop device (root), as accept.py")
    args = ap.parse_args()
    lib.require(lib.SMTP_SOURCE, "postfix")
    lib.require(CHROMIUM, "chromium")
    lib.require(CHROMEDRIVER, "chromium-driver")
    modes = {k: v for k, v in accept.MODES.items() if k.split()[0] in args.modes.split(",")}
    lib.log(f"web_cost: {args.messages} messages x {args.size} B, {args.sessions} sessions; {lib.machine()}")
    with lib.scratch_filesystem(args.fs):
        runs, leftovers = [], []
        try:
            for rnd in range(args.rounds):
                for mode, mode_args in modes.items():
                    order = list(SERVERS[rnd % 2:] + SERVERS[:rnd % 2])  # alternate who goes first
                    for server in order:
                        web = server != "web off"
                        during = (lambda n, w: dashboard(n, w, args.sse_reader)) if web else None
                        r = accept.one_run(server, mode_args, args, leftovers, starters=STARTERS, during=during)
                        r.update(mode=mode, round=rnd)
                        if web:
                            r.update(dashboard.last)
                            r["chromium_cpu_us_per_msg"] = r["chromium_cpu_s"] / args.messages * 1e6
                        runs.append(r)
                        if args.json:
                            with open(args.json, "w") as f:
                                json.dump(runs, f, indent=1)
                        lib.log(f"  round {rnd} {mode:15} {server:24} {r['rate']:8,.0f} msg/s  "
                                f"{r['cpu_us_per_msg']:6.0f} us node CPU/msg  "
                                f"{r.get('launcher_cpu_us_per_msg', 0):5.1f} launcher"
                                + (f"  {r.get('chromium_cpu_us_per_msg', 0):.1f} us chromium "
                                   f"({100 * r['chromium_cpu_s'] / r['seconds']:.1f} % of a core, "
                                   f"{r['chromium_processes']} processes, settled in {r['settle_s']} s)"
                                   + (f", {r['events']} events read" if args.sse_reader else "") if web else ""))
        finally:
            if runs:
                fault_cost.paired_report(
                    f"the web dashboard's cost: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}, "
                    f"{args.rounds} rounds", args, modes, runs, SERVERS, "web off", "on ÷ off, rate")
                web_report(runs, modes, args)
            lib.cleanup(leftovers)

if __name__ == "__main__":
    main()
