#!/usr/bin/python3
"""What the web dashboard costs a node (issue 19): the accept rate of a node
whose launcher runs no web server (`"web": false`) against the same network
with the web server on, a headless browser on its page `/` and a client
reading the event stream (GET /api/v1/events), in alternating, paired runs.

    /usr/bin/python3 bench/web_cost.py [--messages 20000] [--rounds 5]

Needs Debian's chromium, chromium-driver and python3-selenium. The browser:
/usr/bin/chromium driven by /usr/bin/chromedriver, headless, with a fresh
profile folder in the run's folder, opened on `/` (whatever the page is, it
runs as a user would see it: its scripts, its polling, its own event
stream) before the load begins and closed after. The event stream reader is
a thread of this script that reads GET /api/v1/events as fast as it comes
and counts the events. The load is accept.py's: smtp-source -s 20 -m N -l
4096, one message per connection and with -d (connections reused). Reported:
the rate, the node's and the launcher's CPU per message (utime+stime from
/proc), the paired ratio on ÷ off. Both networks are otherwise identical.
"""
import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
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
SERVERS = ("web off", "web on + browser + SSE")


def shape(web):
    def change(topology):
        topology["name"] = "bench-web-cost"
        topology["web"] = {"listen": f"127.0.0.1:{lib.free_ports(1)[0]}"} if web else False
    return change


STARTERS = {
    "web off": lambda w, p, s: accept.start_mailnet(w, p, s, shape=shape(False)),
    "web on + browser + SSE": lambda w, p, s: accept.start_mailnet(w, p, s, shape=shape(True)),
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


@contextlib.contextmanager
def dashboard(net, work):
    """A headless chromium on the web server's `/` and an event stream
    reader, for as long as the load runs."""
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
        reader = EventReader(host, port)
        reader.start()
        lib.wait_for(lambda: reader.status or reader.error, 30, "the event stream to answer")
        if not (reader.status or "").split()[1:2] == ["200"]:
            raise RuntimeError(f"GET /api/v1/events: {reader.status} {reader.error or ''}")
        browser = chromium_pids(driver_pid)
        pids = {"browser": browser[0]} if browser else {}
        dashboard.last = {"events": 0, "title": driver.title}
        yield pids
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
                        r = accept.one_run(server, mode_args, args, leftovers, starters=STARTERS,
                                           during=dashboard if web else None)
                        r.update(mode=mode, round=rnd)
                        if web:
                            r.update(dashboard.last)
                        runs.append(r)
                        lib.log(f"  round {rnd} {mode:15} {server:24} {r['rate']:8,.0f} msg/s  "
                                f"{r['cpu_us_per_msg']:6.0f} us node CPU/msg  "
                                f"{r.get('launcher_cpu_us_per_msg', 0):5.1f} launcher"
                                + (f"  {r['events']} events, {r.get('browser_cpu_us_per_msg', 0):.0f} us browser"
                                   if web else ""))
        finally:
            if runs:
                fault_cost.paired_report(
                    f"the web dashboard's cost: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}, "
                    f"{args.rounds} rounds", args, modes, runs, SERVERS, "web off", "on ÷ off, rate")
                web_runs = [r for r in runs if "events" in r]
                if web_runs:
                    print(f"\nWith the web on: events read from /api/v1/events per run "
                          f"{lib.summary([r['events'] for r in web_runs])}, the browser's main process "
                          f"{lib.summary([r.get('browser_cpu_us_per_msg', 0) for r in web_runs], '{:,.1f}')} µs CPU "
                          f"per message; the page's title: {web_runs[0].get('title')!r}")
            lib.cleanup(leftovers)


if __name__ == "__main__":
    main()
