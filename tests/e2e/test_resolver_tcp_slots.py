#!/usr/bin/python3
"""End to end: slow TCP clients cannot lock the real mailnet-resolver's TCP side.

The resolver takes at most 64 TCP connections. Here 70 clients connect and
say nothing, or send one byte of a query and stop: `dig +tcp` must still get
its answer (the newcomer pushes out the longest-idle connection, or else the
oldest slow one), and a slow client's connection must be closed by the
resolver's query deadline (2 s; the check allows far more, for ASan).
"""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import test_resolver_dig as resolver_test  # noqa: E402  (binary lookup, dig, ready line)

SLOW_CLIENTS = 70          # more than the resolver's 64 slots
CLOSED_WITHIN = 8.0        # the deadline is 2 s; generous for a loaded machine under ASan
DIG_DEADLINE = 20          # seconds for dig's whole run


def connect_many(port, count, first_bytes):
    conns = []
    for _ in range(count):
        c = harness.tracked(socket.create_connection(("127.0.0.1", port), timeout=10))
        if first_bytes:
            c.sendall(first_bytes)
        conns.append(c)
    return conns


def dig_tcp(port):
    cmd = [resolver_test.DIG, "@127.0.0.1", "-p", str(port), "+norecurse", "+tcp", "+time=5", "+tries=1",
           "SRV", "_smtp._tcp.jaku.com"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DIG_DEADLINE)
    assert out.returncode == 0 and "status: NOERROR" in out.stdout, \
        "dig +tcp got no answer while slow clients held connections:\n%s%s" % (out.stdout, out.stderr)
    assert resolver_test.answer_lines(out.stdout) == ["_smtp._tcp.jaku.com. 60 IN SRV 0 0 1025 mx.jaku.com."], out.stdout


def closed_by_server(conn, within):
    """True when the resolver ends the connection (EOF or reset) within `within` seconds."""
    conn.settimeout(within)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def close_all(conns):
    for c in conns:
        c.close()


def check_slow_clients(port, sent):
    conns = connect_many(port, SLOW_CLIENTS, sent)
    try:
        dig_tcp(port)
    finally:
        close_all(conns)


def check_silent_clients(port):
    check_slow_clients(port, b"")


def check_one_byte_clients(port):
    check_slow_clients(port, b"\x00")


def check_deadline(port):
    # One client that says nothing, one that stops after the length's first byte,
    # one that stops inside the query: each is closed by the resolver.
    query = resolver_test.good_query(0x4242)
    framed = len(query).to_bytes(2, "big") + query
    for what, sent in (("silent", b""), ("one byte", framed[:1]), ("half a query", framed[:10])):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            if sent:
                c.sendall(sent)
            assert closed_by_server(c, CLOSED_WITHIN), \
                "a %s TCP client was still connected %.0f s later" % (what, time.monotonic() - started)
    # A client that completes a query and then trickles the next one is closed too.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(framed)
        size = int.from_bytes(resolver_test.recv_exactly(c, 2), "big")
        resolver_test.recv_exactly(c, size)
        c.sendall(framed[:3])
        assert closed_by_server(c, CLOSED_WITHIN), "a client trickling its second query was not closed"


def main():
    binary = resolver_test.find_binary()
    with tempfile.TemporaryDirectory(prefix="mailnet_resolver_tcp_") as tmp:
        port = harness.free_udp_port()
        topology = {"name": "tcpslots", "resolver": {"listen": "127.0.0.1:%d" % port, "ttl": 60},
                    "domains": [{"name": "jaku.com", "listen": "127.0.0.1:1025", "users": ["rey"]}]}
        topology_file = os.path.join(tmp, "topology.json")
        with open(topology_file, "w") as f:
            json.dump(topology, f)
        proc = subprocess.Popen([binary, "--topology", topology_file, "--run-dir", os.path.join(tmp, "run")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = queue.Queue()
            threading.Thread(target=resolver_test.read_lines, args=(proc.stdout, lines), daemon=True).start()
            resolver_test.wait_ready(proc, lines)
            tests = []
            for check in (check_silent_clients, check_one_byte_clients, check_deadline):
                def test(check=check):
                    check(port)
                test.__name__ = check.__name__
                tests.append(test)
            code = harness.run_tests(tests, exit=False)
            assert proc.poll() is None, "the resolver exited during the test"
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=30)
            output = []
            while (line := lines.get(timeout=10)) is not None:
                output.append(line)
            # It has exited: its report (a leak is found at exit) is in its output or its report file.
            report = harness.sanitizer_report("".join(output)) or harness.take_sanitizer_reports()
            assert not report, "sanitizer report from the resolver:\n" + report
            assert exit_code == 0, "the resolver exited %d after SIGTERM:\n%s" % (exit_code, "".join(output))
            return code
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
