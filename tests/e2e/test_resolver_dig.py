#!/usr/bin/python3
"""End to end: the real mailnet-resolver process, asked by dig and by raw UDP and TCP.

Starts mailnet-resolver on a free loopback port, waits for its event=ready
line, checks SRV/MX/A/AAAA/NXDOMAIN/NODATA answers through dig, then sends
every class of malformed packet from a Python socket and checks that the
process still answers a good query right after each one. Finally SIGTERM
must end it with exit code 0. Standard library and the tests' harness only.
"""

import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

READY_TIMEOUT = 10.0
DIG = shutil.which("dig") or "/usr/bin/dig"


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def find_binary():
    bin_dir = os.environ.get("MAILNET_BIN_DIR", "")
    candidates = []
    if bin_dir:
        # The launcher's folder, or the build tree's resolver/ next to it.
        candidates += [os.path.join(bin_dir, "mailnet-resolver"),
                       os.path.join(bin_dir, "resolver", "mailnet-resolver"),
                       os.path.join(bin_dir, "..", "resolver", "mailnet-resolver")]
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "..", "..", "build", "resolver", "mailnet-resolver"))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    fail("mailnet-resolver not found; set MAILNET_BIN_DIR (looked in: %s)" % ", ".join(candidates))


def read_lines(stream, lines):
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def wait_ready(proc, lines):
    deadline = time.monotonic() + READY_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            fail("mailnet-resolver exited (code %s) before event=ready; output:\n%s"
                 % (proc.wait(), "".join(seen)))
        seen.append(line)
        if "event=ready" in line:
            return line
    fail("no event=ready line within %.0f s; output so far:\n%s" % (READY_TIMEOUT, "".join(seen)))


def dig(port, *args):
    cmd = [DIG, "@127.0.0.1", "-p", str(port), "+norecurse", "+time=2", "+tries=1"] + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    if out.returncode != 0:
        fail("%s exited %d:\n%s%s" % (" ".join(cmd), out.returncode, out.stdout, out.stderr))
    return out.stdout


def expect(output, needle, what):
    if needle not in output:
        fail("%s: expected %r in dig output:\n%s" % (what, needle, output))


def answer_lines(output):
    """Records of the ANSWER SECTION, whitespace collapsed."""
    records, inside = [], False
    for line in output.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            inside = True
            continue
        if inside:
            if not line.strip() or line.startswith(";"):
                break
            records.append(" ".join(line.split()))
    return records


def header(qd=1, an=0, ns=0, ar=0, flags=0x0100, ident=0xABCD):
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


JAKU = b"\x04jaku\x03com\x00"
A_IN = b"\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"


def good_query(ident):
    return header(ident=ident) + b"\x05_smtp\x04_tcp" + JAKU + b"\x00\x21\x00\x01"


# (name, packet, expected): "drop" means no reply at all; a number is the RCODE
# of a reply that must echo the id.
MALFORMED = [
    ("empty datagram", b"", "drop"),
    ("5 bytes", b"\xab\xcd\x01\x00\x00", "drop"),
    ("11 bytes", header()[:11], "drop"),
    ("a response (QR=1)", header(flags=0x8100) + JAKU + A_IN, "drop"),
    ("opcode NOTIFY", header(flags=0x2100) + JAKU + A_IN, 4),
    ("opcode UPDATE", header(flags=0x2900) + JAKU + A_IN, 4),
    ("no question", header(qd=0), 1),
    ("two questions", header(qd=2) + JAKU + A_IN + JAKU + A_IN, 1),
    ("question count past the end", header(qd=1), 1),
    ("answer count past the end", header(an=5) + JAKU + A_IN, 1),
    ("all counts 0xFFFF", header(0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF) + JAKU + A_IN, 1),
    ("pointer to itself", header() + b"\xc0\x0c" + A_IN, 1),
    ("two-pointer loop", header() + b"\xc0\x0e\xc0\x0c" + A_IN, 1),
    ("label then pointer back", header() + b"\x01a\xc0\x0c" + A_IN, 1),
    ("pointer out of bounds", header() + b"\xc0\xc8" + A_IN, 1),
    ("pointer into the header", header() + b"\xc0\x04" + A_IN, 1),
    ("forward pointer", header() + b"\xc0\x12" + A_IN + JAKU, 1),
    ("label length 0x40", header() + b"\x40" + b"a" * 64 + b"\x00" + A_IN, 1),
    ("label length 0x80", header() + b"\x80" + b"a" * 64 + b"\x00" + A_IN, 1),
    ("label length 0xBF", header() + b"\xbf" + b"a" * 64 + b"\x00" + A_IN, 1),
    ("name of 257 octets", header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + A_IN, 1),
    ("unterminated name", header() + b"\x04jaku", 1),
    ("truncated QTYPE", header() + JAKU + b"\x00", 1),
    ("truncated QCLASS", header() + JAKU + b"\x00\x01\x00", 1),
    ("trailing garbage", header() + JAKU + A_IN + b"\xde\xad", 1),
    ("two OPT records", header(ar=2) + JAKU + A_IN + OPT + OPT, 1),
    ("OPT not at the root", header(ar=1) + JAKU + A_IN + b"\x01x" + OPT, 1),
    ("OPT RDATA past the end", header(ar=1) + JAKU + A_IN + OPT[:-2] + b"\x00\x09", 1),
    ("64 KiB of zeros", b"\x00" * 65000, 1),
]


def exchange(sock, port, packet, wait):
    sock.sendto(packet, ("127.0.0.1", port))
    sock.settimeout(wait)
    try:
        data, _ = sock.recvfrom(65535)
        return data
    except socket.timeout:
        return None


def check_malformed(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for index, (name, packet, expected) in enumerate(MALFORMED):
            reply = exchange(sock, port, packet, 0.3 if expected == "drop" else 2.0)
            if expected == "drop":
                if reply is not None:
                    fail("%s: expected no reply, got %r" % (name, reply[:32]))
            else:
                if reply is None:
                    fail("%s: expected RCODE %d, got no reply" % (name, expected))
                ident, flags = struct.unpack("!HH", reply[:4])
                want_id = struct.unpack("!H", packet[:2])[0]
                if ident != want_id or not flags & 0x8000 or (flags & 0xF) != expected:
                    fail("%s: expected id %#x QR RCODE %d, got id %#x flags %#06x"
                         % (name, want_id, expected, ident, flags))
            # The process must still answer a good query right after.
            ident = 0x1000 + index
            good = exchange(sock, port, good_query(ident), 2.0)
            if good is None:
                fail("no answer to a good query after %r: the resolver stopped serving" % name)
            got_id, flags, _qd, ancount = struct.unpack("!HHHH", good[:8])
            if got_id != ident or (flags & 0xF) != 0 or ancount != 1:
                fail("after %r: bad reply to a good query: id %#x flags %#06x ancount %d"
                     % (name, got_id, flags, ancount))
    finally:
        sock.close()


def check_dig(port):
    out = dig(port, "SRV", "_smtp._tcp.jaku.com")
    expect(out, "status: NOERROR", "SRV")
    expect(out, " aa", "SRV has the AA flag")
    if answer_lines(out) != ["_smtp._tcp.jaku.com. 60 IN SRV 0 0 1025 mx.jaku.com."]:
        fail("SRV answer: %r\n%s" % (answer_lines(out), out))
    expect(out, "mx.jaku.com.\t\t60\tIN\tA\t127.0.0.1", "SRV glue")

    out = dig(port, "MX", "jaku.com")
    if answer_lines(out) != ["jaku.com. 60 IN MX 10 mx.jaku.com."]:
        fail("MX answer: %r\n%s" % (answer_lines(out), out))

    out = dig(port, "A", "mx.jaku.com")
    if answer_lines(out) != ["mx.jaku.com. 60 IN A 127.0.0.1"]:
        fail("A answer: %r\n%s" % (answer_lines(out), out))

    out = dig(port, "SRV", "_SMTP._TCP.DeathStar.COM")
    if answer_lines(out) != ["_SMTP._TCP.DeathStar.COM. 60 IN SRV 0 0 1030 mx.deathstar.com."]:
        fail("SRV answer (mixed case): %r\n%s" % (answer_lines(out), out))
    out = dig(port, "AAAA", "mx.deathstar.com")
    if answer_lines(out) != ["mx.deathstar.com. 60 IN AAAA ::1"]:
        fail("AAAA answer: %r\n%s" % (answer_lines(out), out))

    for name in ("genshinimpact.com", "www.jaku.com"):
        out = dig(port, "MX", name)
        expect(out, "status: NXDOMAIN", "NXDOMAIN for " + name)
        expect(out, " aa", "NXDOMAIN has the AA flag")
        expect(out, "AUTHORITY: 1", "NXDOMAIN has an authority section")
        expect(out, "IN\tSOA\tns.mailnet. hostmaster.mailnet. 1 3600 600 86400 60", "NXDOMAIN SOA")

    out = dig(port, "TXT", "mx.jaku.com")  # jaku.com itself has TXT: its SPF record
    expect(out, "status: NOERROR", "NODATA")
    expect(out, "ANSWER: 0", "NODATA has no answer")
    expect(out, "IN\tSOA\t", "NODATA SOA")

    out = dig(port, "+noedns", "MX", "jaku.com")
    expect(out, "status: NOERROR", "MX without EDNS")
    if "OPT PSEUDOSECTION" in out:
        fail("an OPT record in the reply to a query without EDNS:\n" + out)


def check_tcp(port):
    """The same answers over TCP (RFC 7766): dig +tcp, ANY (over UDP and TCP),
    two queries on one connection, and junk that ends the connection."""
    out = dig(port, "+tcp", "SRV", "_smtp._tcp.jaku.com")
    if answer_lines(out) != ["_smtp._tcp.jaku.com. 60 IN SRV 0 0 1025 mx.jaku.com."]:
        fail("SRV answer over TCP: %r\n%s" % (answer_lines(out), out))
    out = dig(port, "+tcp", "MX", "genshinimpact.com")
    expect(out, "status: NXDOMAIN", "NXDOMAIN over TCP")
    for transport in ("+notcp", "+tcp"):
        out = dig(port, transport, "ANY", "jaku.com")
        expect(out, "status: NOERROR", "ANY " + transport)
        expect(out, "IN\tMX\t10 mx.jaku.com.", "ANY lists the MX " + transport)

    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        for ident in (0x1111, 0x2222):
            q = good_query(ident)
            conn.sendall(struct.pack("!H", len(q)) + q)
            size, = struct.unpack("!H", recv_exactly(conn, 2))
            reply = recv_exactly(conn, size)
            if struct.unpack("!H", reply[:2])[0] != ident or reply[3] & 0x0F != 0:
                fail("TCP reply %d: bad id or rcode: %r" % (ident, reply[:4]))
        junk = b"\xab\xcd\x01"
        conn.sendall(struct.pack("!H", len(junk)) + junk)
        if conn.recv(10) != b"":
            fail("junk over TCP got an answer instead of the connection's end")
    finally:
        conn.close()


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            fail("the resolver closed the TCP connection early")
        data += chunk
    return data


def main():
    binary = find_binary()
    if not os.path.exists(DIG):
        fail("dig not found (package bind9-dnsutils)")
    with tempfile.TemporaryDirectory(prefix="mailnet_resolver_e2e_") as tmp:
        port = harness.free_udp_port()  # free for TCP too
        topology = {
            "name": "digtest",
            "resolver": {"listen": "127.0.0.1:%d" % port, "ttl": 60},  # the TTL set is the TTL served
            "domains": [
                {"name": "jaku.com", "listen": "127.0.0.1:1025", "users": ["rey", "finn"]},
                {"name": "deathstar.com", "listen": "[::1]:1030", "users": ["vader"]},
            ],
        }
        topology_file = os.path.join(tmp, "topology.json")
        with open(topology_file, "w") as f:
            json.dump(topology, f)
        run_dir = os.path.join(tmp, "run")

        proc = subprocess.Popen([binary, "--topology", topology_file, "--run-dir", run_dir],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = queue.Queue()
            threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
            ready = wait_ready(proc, lines)
            if "listen=127.0.0.1:%d" % port not in ready:
                fail("ready line does not name the port %d: %s" % (port, ready))

            check_dig(port)
            check_malformed(port)
            check_tcp(port)

            log_file = os.path.join(run_dir, "resolver", "resolver.log")
            with open(log_file) as f:
                log = f.read()
            for needle in ("event=ready",
                           "name=_smtp._tcp.jaku.com type=SRV rcode=NOERROR answer=mx.jaku.com:1025",
                           "name=genshinimpact.com type=MX rcode=NXDOMAIN",
                           "event=dropped", "rcode=FORMERR", "type=ANY rcode=NOERROR", "transport=tcp"):
                if needle not in log:
                    fail("%r missing from %s" % (needle, log_file))

            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                fail("mailnet-resolver did not exit within 5 s of SIGTERM")
            if code != 0:
                fail("mailnet-resolver exited with %d after SIGTERM, expected 0" % code)

            # A second resolver on the same port must fail clearly, exit 1.
            holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            holder.bind(("127.0.0.1", port))
            try:
                busy = subprocess.run([binary, "--topology", topology_file, "--run-dir", run_dir],
                                      capture_output=True, text=True, timeout=10)
            finally:
                holder.close()
            if busy.returncode != 1 or ("127.0.0.1:%d" % port) not in busy.stderr:
                fail("bind failure: expected exit 1 and the address on stderr, got %d, stderr %r"
                     % (busy.returncode, busy.stderr))
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    # Both resolvers have exited: a sanitizer report from either fails the test.
    report = harness.take_sanitizer_reports()
    if report:
        fail("sanitizer report from mailnet-resolver:\n" + report)
    print("PASS: resolver answers dig, survives %d malformed packets, exits 0 on SIGTERM" % len(MALFORMED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
