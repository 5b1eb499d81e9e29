#!/usr/bin/python3
"""The dashboard's Network page with many domains: `mailnet up -d` of a
generated topology (500 domains by default), some mail relayed between
random pairs of domains (their lines are drawn from the events the launcher
keeps), then the page opened in a headless Chromium (Debian's chromium and
chromium-driver, python3-selenium; tests/e2e/browser.py), --rounds times:

- load: from the start of navigation to the graph's first frame (the page's
  window.mailnetGraph.loadMs()), and the wall time of driver.get until the
  graph holds every node;
- GET /api/v1/network: the reply time the page pays on each refresh.

    /usr/bin/python3 bench/network_page.py [--domains 500] [--mails 200] [--rounds 3]
"""
import argparse
import json
import os
import random
import smtplib
import statistics
import sys
import time
import urllib.request

import lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import browser  # noqa: E402


def topology(n):
    ports = lib.free_ports(n)
    return {
        "name": f"bench-page-{n}",
        "resolver": {"listen": f"127.0.0.1:{lib.free_ports(1, lib.socket.SOCK_DGRAM)[0]}"},
        "domains": [{"name": f"d{i:03d}.example", "listen": f"127.0.0.1:{p}", "users": ["u"]}
                    for i, p in enumerate(ports)],
    }


def send_some(topo, count, rng):
    domains = topo["domains"]
    for i in range(count):
        a, b = rng.sample(domains, 2)
        host, port = a["listen"].rsplit(":", 1)
        with smtplib.SMTP(host, int(port), timeout=60) as s:
            s.sendmail(f"u@{a['name']}", [f"u@{b['name']}"],
                       f"From: u@{a['name']}\r\nTo: u@{b['name']}\r\nSubject: {i}\r\n\r\nhi\r\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=500)
    ap.add_argument("--mails", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    lib.raise_nofile()
    lib.log(f"network page: {args.domains} domains, {args.mails} mails; {lib.machine()}")
    work = lib.workdir("mailnet-bench-page-")
    topo = topology(args.domains)
    net = lib.Network(topo, work, timeout=300)
    url = f"http://{topo['web']['listen']}"
    loads, walls, api_ms, edges = [], [], [], []
    try:
        net.up()
        lib.log(f"  up in {net.up_seconds:.1f}s")
        send_some(topo, args.mails, random.Random(7))
        # Wait until the last one is delivered: the lines are then all in the kept events.
        expected = args.mails

        def delivered():
            with urllib.request.urlopen(url + "/api/v1/network", timeout=60) as r:
                doc = json.loads(r.read())
            return sum(n.get("delivered", 0) for n in doc["nodes"]) >= expected
        lib.wait_for(delivered, 120, "the mail delivered")
        for _ in range(args.rounds):
            t0 = time.monotonic()
            with urllib.request.urlopen(url + "/api/v1/network", timeout=60) as r:
                r.read()
            api_ms.append((time.monotonic() - t0) * 1000)
        with browser.Chromium() as b:
            for rnd in range(args.rounds):
                t0 = time.monotonic()
                b.driver.get(url + "/")
                b.wait(lambda d: d.execute_script(
                    "return window.mailnetGraph && window.mailnetGraph.loadMs() !== null && "
                    "window.mailnetGraph.nodes().length"), 120, "the graph")
                walls.append((time.monotonic() - t0) * 1000)
                loads.append(b.driver.execute_script("return window.mailnetGraph.loadMs()"))
                count = b.driver.execute_script("return window.mailnetGraph.nodes().length")
                assert count == args.domains + 1, count
                b.wait(lambda d: len(d.execute_script("return window.mailnetGraph.edges()")) > 0, 60, "lines")
                edges.append(len(b.driver.execute_script("return window.mailnetGraph.edges()")))
                layout = b.driver.execute_script("return window.mailnetGraph.layout()")
                marks = b.driver.execute_script(
                    "return performance.getEntriesByType('mark').concat(performance.getEntriesByType('resource'))"
                    ".map(m => m.name.replace(/^http:[^/]*\\/\\/[^/]*/, '') + ' ' + Math.round(m.startTime) + "
                    "(m.duration ? '+' + Math.round(m.duration) : ''))")
                lib.log("    " + ", ".join(marks))
                lib.log(f"  round {rnd}: first frame {loads[-1]} ms after navigation, graph complete "
                        f"{walls[-1]:.0f} ms after get(), {count} nodes, {edges[-1]} lines, layout {layout}")
            b.screenshot(f"network-{args.domains}")
            errors = b.console_errors()
    finally:
        net.down(timeout=120)
        lib.cleanup([work])
    print(f"\n## network page with {args.domains} domains ({args.mails} mails relayed before)")
    print(f"{lib.machine()}\n")
    print("| first frame after navigation (ms) | graph complete after get() (ms) | GET /api/v1/network (ms) | lines drawn |")
    print("| --- | --- | --- | --- |")
    print(f"| {lib.summary(loads)} | {lib.summary(walls)} | {lib.summary(api_ms)} | {statistics.median(edges):.0f} |")
    if errors:
        print("console errors:", *[e.get("message") for e in errors], sep="\n  ")


if __name__ == "__main__":
    main()
