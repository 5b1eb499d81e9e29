"""Issue 17, promises 7 and 8, with real processes.

7. The README's table of built-in defaults is what a network gets when its
   topology leaves a field out: the table is read from README.md itself and
   compared, row by row and both ways, with the topology a real `mailnet up`
   resolved and wrote for its children (`run/<name>/topology.json`); the
   defaults a client can see from outside are then met at their edges (the
   line limits at their length and one byte more, the error, recipient,
   size, loop and connection limits, the DNS client's timeout and attempts,
   the first retry, the relay's connections per destination).
8. Line limits of 32 with real clients (smtplib, swaks), nodes and the
   resolver on 127.0.0.2 and [::1], and a resolver serving UDP alone when
   its TCP port is taken.

Each test starts its own network; an argument picks the tests whose names
contain it (`python3 tests/e2e/test_defaults_and_limits.py edges`)."""
import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_node_smtp import Raw  # noqa: E402
from test_queue_and_bounces import mailnet  # noqa: E402

README = os.path.join(harness.SOURCE_DIR, "README.md")


# ---- the README's table ----------------------------------------------------

def readme_defaults():
    """{field: default text} from the table under 'Topology files' in README.md:
    a row such as | `resolver.timeout`, `resolver.attempts` | `500ms`, `3` | …
    gives two fields, in order."""
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = lines.index("| field | default | meaning |")
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        fields = re.findall(r"`([a-z_.\[\]]+)`", cells[0])
        values = [v.strip().strip("`") for v in cells[1].split(",")]
        assert fields and len(fields) == len(values), f"README row not understood: {line}"
        for field, value in zip(fields, values):
            assert field not in table, f"README names {field} twice"
            table[field] = value
    assert len(table) > 20, f"only {len(table)} fields read from the README's table"
    return table


def millis(text):
    """A duration as the README and topology files write it, in milliseconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    assert m, f"not a duration: {text!r}"
    return int(m.group(1)) * {"ms": 1, "s": 1000, None: 1000, "m": 60000, "h": 3600000}[m.group(2)]


def same(readme_value, resolved):
    """Whether the README's text for a default says the resolved JSON value."""
    if isinstance(resolved, bool):
        return readme_value == ("true" if resolved else "false")
    if isinstance(resolved, int):
        return readme_value == str(resolved)
    if isinstance(resolved, list):  # dns.records: [] by default
        return readme_value == json.dumps(resolved)
    if isinstance(resolved, dict):  # dns.dkim: the selector; the public key is the one `up` made
        return json.loads(readme_value) == {k: v for k, v in resolved.items() if k != "public_key"}
    if re.fullmatch(r"\d+ms", resolved):  # a duration, always written in ms
        return millis(readme_value) == millis(resolved)
    return readme_value == json.dumps(resolved)  # a string, quoted in the README


def resolved_fields(resolved):
    """{README field name: value} of every default in a resolved topology of
    one domain (its name, address and users are not defaults)."""
    out = {f"resolver.{k}": v for k, v in resolved["resolver"].items()}
    out["tls"] = resolved["tls"]  # the one network-level default outside resolver and web
    domain = resolved["domains"][0]
    for key, value in domain.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif key not in ("name", "listen", "users"):
            out[key] = value
    return out


def minimal_topology(users=()):
    """Only what a topology must have, and a resolver address free for the test."""
    port, = harness.free_tcp_ports(1)
    topo = {"name": "defaults", "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
            "domains": [{"name": "jaku.com", "listen": f"127.0.0.1:{port}"}]}
    if users:
        topo["domains"][0]["users"] = list(users)
    return topo


def test_readme_defaults_table_is_the_resolved_topology():
    table = readme_defaults()
    topo = minimal_topology()
    with harness.Network(topo) as net:
        net.start()
        with open(os.path.join(net.run_dir, "topology.json")) as f:
            resolved = resolved_fields(json.load(f))
    # resolver.listen and web.listen are given here (their default ports are
    # fixed ones): their defaults are checked below through validate.
    # users[].password is no field of a resolved user list (a user without
    # one gets a generated password: tests/e2e/test_submission.py).
    # imap.listen and pop3.listen have no default: without them the resolved
    # topology says "imap": false (tests/e2e/test_imap.py covers them).
    given = {"resolver.listen", "web.listen", "users[].password", "imap.listen", "pop3.listen"}
    undocumented = sorted(set(resolved) - set(table) - given)
    assert not undocumented, f"defaults missing from the README's table: {undocumented}"
    unknown = sorted(set(table) - set(resolved) - given)
    assert not unknown, f"README's table names fields a topology does not have: {unknown}"
    # dns.spf names the domain's own address; dns.dkim carries the key up made.
    table["dns.spf"] = table["dns.spf"].replace("<address>", topo["domains"][0]["listen"].rsplit(":", 1)[0])
    assert re.fullmatch(r"MII[A-Za-z0-9+/=]{300,}", resolved["dns.dkim"]["public_key"]), resolved["dns.dkim"]
    wrong = [(f, table[f], resolved[f]) for f in sorted(resolved) if f not in given and not same(table[f], resolved[f])]
    assert not wrong, "README default / resolved: " + "; ".join(f"{f}: {a} / {b!r}" for f, a, b in wrong)

    # The resolver's default address: a topology without one may not put a
    # domain there, and the refusal names it as the default.
    default = table["resolver.listen"]
    with tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
        path = os.path.join(tmp, "t.json")

        def validate(listen):
            with open(path, "w") as f:
                json.dump({"name": "t", "domains": [{"name": "jaku.com", "listen": listen}]}, f)
            return subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True,
                                  timeout=30)
        out = validate(default)
        assert out.returncode != 0, out.stdout + out.stderr
        assert f"{path}: $.domains[0].listen: {default} is the resolver's address (the default of " \
               "$.resolver.listen" in out.stderr, out.stderr
        host, port = default.rsplit(":", 1)
        other = validate(f"{host}:{int(port) + 1}")
        assert other.returncode == 0, other.stdout + other.stderr
        # The same for the web server's default address.
        web = table["web.listen"]
        out = validate(web)
        assert out.returncode != 0, out.stdout + out.stderr
        assert f"{path}: $.domains[0].listen: {web} is the web server's address (the default of " \
               "$.web.listen" in out.stderr, out.stderr


# ---- the defaults a client meets ----------------------------------------------

def test_default_smtp_limits_at_their_edges():
    """limits.command_line 512, text_line 1000, message_size 10485760,
    recipients 100, received_headers 50, errors 20 and the policy defaults,
    each at its value (taken) and one more (refused with its code)."""
    table = readme_defaults()
    command_line, text_line = int(table["limits.command_line"]), int(table["limits.text_line"])
    size, rcpts = int(table["limits.message_size"]), int(table["limits.recipients"])
    received, errors = int(table["limits.received_headers"]), int(table["limits.errors"])
    users = [f"u{i}" for i in range(rcpts + 1)]
    topo = minimal_topology(users + ["big", "loop"])
    port = harness.port_of(topo, "jaku.com")
    with harness.Network(topo) as net:
        net.start()
        c = Raw(port, timeout=60)
        try:
            # A HELO name unlike MAIL FROM's domain: require_helo_domain_match is false.
            assert c.cmd("EHLO elsewhere.example")[0] == 250
            # Command lines: 512 bytes with CRLF are one command, 513 are too long.
            code, text = c.cmd("NOOP " + "x" * (command_line - 7))
            assert code == 250, text
            code, text = c.cmd("NOOP " + "x" * (command_line - 6))
            assert code == 500 and "5.5.2" in text, text
            # SIZE= up to message_size.
            code, text = c.cmd(f"MAIL FROM:<u0@jaku.com> SIZE={size + 1}")
            assert code == 552 and "5.3.4" in text, text
            code, text = c.cmd(f"MAIL FROM:<u0@jaku.com> SIZE={size}")
            assert code == 250, text
            # Recipients: 100 taken, the 101st gets 452 4.5.3; an unknown user 550 5.1.1
            # (require_known_users true; mailbox_by_local_part false).
            code, text = c.cmd("RCPT TO:<nobody@jaku.com>")
            assert code == 550 and "5.1.1" in text, text
            for u in users[:rcpts]:
                code, text = c.cmd(f"RCPT TO:<{u}@jaku.com>")
                assert code == 250, (u, text)
            code, text = c.cmd(f"RCPT TO:<{users[rcpts]}@jaku.com>")
            assert code == 452 and "4.5.3" in text, text
            # Text lines: 1000 bytes with CRLF are a line, ...
            assert c.cmd("DATA")[0] == 354
            c.send("Subject: edge\r\n\r\n" + "a" * (text_line - 2) + "\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            # ... 1001 are too long.
            assert c.cmd("MAIL FROM:<u0@jaku.com>")[0] == 250
            assert c.cmd("RCPT TO:<u0@jaku.com>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send("Subject: edge+1\r\n\r\n" + "b" * (text_line - 1) + "\r\n.\r\n")
            code, text = c.reply()
            assert code == 500 and "5.5.2" in text, text

            def message(total, extra_headers=""):
                """A message of exactly total bytes on the wire (CRLF ends, no dot-stuffing)."""
                head = extra_headers + "Subject: size\r\n\r\n"
                body_bytes = total - len(head)
                line = "c" * 998 + "\r\n"
                full, rest = divmod(body_bytes, len(line))
                assert rest >= 2 or rest == 0
                return head + line * full + ("c" * (rest - 2) + "\r\n" if rest else "")

            def transaction(data, rcpt):
                assert c.cmd("MAIL FROM:<u0@jaku.com>")[0] == 250
                assert c.cmd(f"RCPT TO:<{rcpt}@jaku.com>")[0] == 250
                assert c.cmd("DATA")[0] == 354
                c.send(data + ".\r\n")
                return c.reply()
            code, text = transaction(message(size), "big")
            assert code == 250, text
            code, text = transaction(message(size + 1), "big")
            assert code == 552 and "5.3.4" in text, text
            # Received: headers: 50 are taken, 51 are a loop.
            trace = "Received: from a.example by b.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
            code, text = transaction(message(2000, trace * received), "loop")
            assert code == 250, text
            code, text = transaction(message(2000, trace * (received + 1)), "loop")
            assert code == 554 and "5.4.6" in text, text
            assert c.cmd("QUIT")[0] == 221
        finally:
            c.close()
        # What was taken was delivered, whole.
        loop = net.wait_messages("jaku.com", "loop", 1)
        big = net.wait_messages("jaku.com", "big", 1)
        # Stored with LF line ends: back in wire form it is the message and its trace header.
        assert len(big) == 1 and len(big[0].replace(b"\n", b"\r\n")) > size, [len(m) for m in big]
        assert len(loop) == 1 and loop[0].count(b"Received: from a.example") == received
        assert len(net.messages("jaku.com", "u1")) == 1  # the 100 recipients' message, not the 1001-byte line

        # Errors: bad commands 1 to 19 get their 500 alone; the 20th its 500, then 421 and the close.
        c = Raw(port)
        try:
            for i in range(1, errors):
                code, text = c.cmd("BOGUS")
                assert code == 500 and "5.5.1" in text, (i, text)
            code, text = c.cmd("BOGUS")
            assert code == 500 and "5.5.1" in text, text
            code, text = c.reply()
            assert code == 421 and text.startswith("421 4.7.0 jaku.com Too many errors"), text
            assert c.closed()
        finally:
            c.close()


def test_default_connection_limit():
    """limits.connections 200: 200 sessions are greeted, the 201st gets 421 4.7.0."""
    limit = int(readme_defaults()["limits.connections"])
    topo = minimal_topology()
    port = harness.port_of(topo, "jaku.com")
    held = []
    with harness.Network(topo) as net:
        net.start()
        try:
            for i in range(limit):
                c = Raw(port, greet=False, timeout=30)
                held.append(c)
                code, text = c.reply()
                assert code == 220, (i, text)
            extra = Raw(port, greet=False, timeout=30)
            held.append(extra)
            code, text = extra.reply()
            assert code == 421 and "4.7.0" in text, text
            assert extra.closed()
        finally:
            for c in held:
                c.close()

        def serves():
            try:
                c = Raw(port)
            except (AssertionError, OSError):
                return False  # still full while the held sessions end
            try:
                return c.cmd("QUIT")[0] == 221
            finally:
                c.close()
        harness.wait_for(serves, 30, "jaku.com to take sessions again")


class SilentResolver:
    """A UDP socket on the resolver's port that records each query (time,
    id, name) and never answers."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.queries, self.lock, self.done = [], threading.Lock(), False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            try:
                data, _ = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            labels, i = [], 12
            while i < len(data) and data[i]:
                labels.append(data[i + 1:i + 1 + data[i]].decode("latin-1"))
                i += 1 + data[i]
            with self.lock:
                self.queries.append((time.monotonic(), int.from_bytes(data[:2], "big"), ".".join(labels)))

    def seen(self):
        with self.lock:
            return list(self.queries)

    def close(self):
        self.done = True
        self.thread.join(timeout=5)
        self.sock.close()


def test_default_dns_client_timeout_attempts_and_first_retry():
    """resolver.timeout 500ms and resolver.attempts 3: a lookup the resolver
    never answers is asked 3 times, 500 ms apart, and the queue says so; the
    next try comes after retry.first (1s)."""
    table = readme_defaults()
    timeout_ms, attempts = millis(table["resolver.timeout"]), int(table["resolver.attempts"])
    first_ms = millis(table["retry.first"])
    topo = minimal_topology(["rey"])
    deathstar, = harness.free_tcp_ports(1)
    topo["domains"].append({"name": "deathstar.com", "listen": f"127.0.0.1:{deathstar}", "users": ["vader"]})
    # Only the relay's lookups are watched: the SPF/DKIM/DMARC checks at
    # receipt (policy.dmarc) would ask the silent resolver first.
    topo["domains"][0].setdefault("policy", {})["dmarc"] = "off"
    resolver_port = int(topo["resolver"]["listen"].rsplit(":", 1)[1])
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "stop", "resolver")
        silent = SilentResolver(resolver_port)
        try:
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
                s.sendmail("rey@jaku.com", ["vader@deathstar.com"], b"Subject: unanswered\r\n\r\nbody\r\n")
            # Two lookups: the first try's, then the retry's.
            harness.wait_for(lambda: len({q[1] for q in silent.seen()}) >= 2, 60, "a second lookup")
            queries = silent.seen()
            first_id = queries[0][1]
            lookup = [q for q in queries if q[1] == first_id]
            assert len(lookup) == attempts, queries
            assert all(q[2].lower() == "_smtp._tcp.deathstar.com" for q in lookup), queries
            gaps = [b[0] - a[0] for a, b in zip(lookup, lookup[1:])]
            # A timer never fires early; the upper bound only tells 500 ms from seconds.
            assert all(timeout_ms / 1000 * 0.9 <= g < timeout_ms / 1000 * 6 for g in gaps), gaps
            retry = next(q for q in queries if q[1] != first_id)
            wait = retry[0] - lookup[-1][0]  # the last attempt's timeout, then the backoff
            assert (timeout_ms + first_ms) / 1000 * 0.9 <= wait < (timeout_ms + first_ms) / 1000 * 5, wait
            print(f"measured: attempts {[round(g, 3) for g in gaps]} s apart, the retry's lookup {wait:.3f} s "
                  "after the last attempt", flush=True)
            queue = mailnet(net, "queue", "jaku.com").stdout
            assert f"within {timeout_ms} ms ({attempts} attempts)" in queue, queue
            # The wait the node chose, exactly, from its own log.
            with open(os.path.join(net.domain_dir("jaku.com"), "node.log")) as f:
                deferred = [line for line in f if "event=deferred " in line]
            assert deferred and f"event=deferred attempts=1 retry_in_ms={first_ms} " in deferred[0], deferred
        finally:
            silent.close()


def test_default_relay_connections_per_destination():
    """limits.relay_connections_per_destination 20: with 25 messages for a
    peer that never greets, the relay holds 20 connections to it, not 21."""
    limit = int(readme_defaults()["limits.relay_connections_per_destination"])
    topo = minimal_topology(["rey"])
    deathstar, = harness.free_tcp_ports(1)
    topo["domains"].append({"name": "deathstar.com", "listen": f"127.0.0.1:{deathstar}", "users": ["vader"]})
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        with harness.FakeSmtpPeer(deathstar, greeting=None, backlog=64) as peer:
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
                for i in range(limit + 5):
                    s.sendmail("rey@jaku.com", ["vader@deathstar.com"], f"Subject: n{i}\r\n\r\nbody\r\n".encode())
            harness.wait_for(lambda: peer.connections >= limit, 60, f"{limit} relay connections")
            # Nothing ends them (the greeting may take timeouts.relay_reply, a
            # minute): a 21st would come now, if it were allowed.
            try:
                harness.wait_for(lambda: peer.connections > limit, 3, "one connection too many")
            except AssertionError:
                pass
            assert peer.connections == limit, peer.connections
            assert len(os.listdir(os.path.join(net.domain_dir("jaku.com"), "queue"))) >= limit + 5


# ---- promise 8 -----------------------------------------------------------------

def test_line_limits_of_32_with_real_clients():
    """The smallest line limits (32 bytes with CRLF) still carry a whole
    session from smtplib and swaks; 33 bytes are refused with 500 5.5.2;
    31 is refused by validate."""
    users = ["al", "bo"]
    topo = minimal_topology(users)
    topo["domains"][0]["name"] = "a.io"
    topo["domains"][0]["limits"] = {"command_line": 32, "text_line": 32}
    port = harness.port_of(topo, "a.io")
    swaks = shutil.which("swaks")
    assert swaks, "swaks is not installed (scripts/install-deps.sh installs it)"
    with harness.Network(topo) as net:
        net.start()
        # smtplib sends "MAIL FROM:<al@a.io> size=NN": short names keep it under 32.
        with smtplib.SMTP("127.0.0.1", port, local_hostname="c.io", timeout=30) as s:
            s.sendmail("al@a.io", ["bo@a.io"], b"Subject: tiny\r\n\r\nshort lines\r\nonly\r\n")
        out = subprocess.run([swaks, "--server", f"127.0.0.1:{port}", "--helo", "c.io", "--from", "bo@a.io",
                              "--to", "al@a.io", "--data", "Subject: swaks\n\nshort body\n"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "250 2.0.0 Ok: queued as" in out.stdout, out.stdout
        assert b"short lines\nonly" in net.wait_messages("a.io", "bo", 1)[0]
        assert b"short body" in net.wait_messages("a.io", "al", 1)[0]

        c = Raw(port)
        try:
            assert c.cmd("EHLO c.io")[0] == 250
            code, text = c.cmd("NOOP " + "x" * 25)  # 32 bytes with CRLF
            assert code == 250, text
            code, text = c.cmd("NOOP " + "x" * 26)  # 33
            assert code == 500 and "5.5.2" in text, text
            assert c.cmd("MAIL FROM:<al@a.io>")[0] == 250
            assert c.cmd("RCPT TO:<bo@a.io>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send("Subject: 32\r\n\r\n" + "y" * 30 + "\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            assert c.cmd("MAIL FROM:<al@a.io>")[0] == 250
            assert c.cmd("RCPT TO:<bo@a.io>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send("Subject: 33\r\n\r\n" + "z" * 31 + "\r\n.\r\n")
            code, text = c.reply()
            assert code == 500 and "5.5.2" in text, text
            assert c.cmd("QUIT")[0] == 221
        finally:
            c.close()
        assert any(b"y" * 30 + b"\n" in m for m in net.wait_messages("a.io", "bo", 2))
        assert not any(b"z" * 31 in m for m in net.messages("a.io", "bo"))

    for field in ("command_line", "text_line"):
        topo["domains"][0]["limits"] = {field: 31}
        with tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
            path = os.path.join(tmp, "t.json")
            with open(path, "w") as f:
                json.dump(topo, f)
            out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True,
                                 timeout=30)
        assert out.returncode != 0, out.stdout
        assert f"{path}: $.domains[0].limits.{field}: expected a whole number from 32 to" in out.stderr, out.stderr


def dig(server, port, *args):
    return subprocess.run(["dig", f"@{server}", "-p", str(port), "+norecurse", "+time=5", "+tries=2", *args],
                          capture_output=True, text=True, timeout=60).stdout


def smtp_send(host, port, sender, rcpt, subject):
    with smtplib.SMTP(host, port, local_hostname="client.example", timeout=30) as s:
        s.sendmail(sender, [rcpt], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def test_nodes_and_resolver_on_127_0_0_2_and_ipv6_loopback():
    """Any loopback address: a resolver on 127.0.0.2 with one node there and
    one on [::1], then a resolver on [::1] with a node on 127.0.0.3; mail is
    taken on each address (smtplib, swaks) and relayed across them."""
    swaks = shutil.which("swaks")
    assert swaks, "swaks is not installed (scripts/install-deps.sh installs it)"
    for resolver_host, jaku_host, deathstar_host in (("127.0.0.2", "127.0.0.2", "[::1]"),
                                                      ("[::1]", "127.0.0.3", "[::1]")):
        jaku, deathstar = harness.free_tcp_ports(2)
        resolver = harness.free_udp_port()
        topo = {"name": "loopbacks", "resolver": {"listen": f"{resolver_host}:{resolver}"},
                "defaults": {"retry": {"first": "200ms", "max": "1s"}},
                "domains": [
                    {"name": "jaku.com", "listen": f"{jaku_host}:{jaku}", "users": ["rey"]},
                    {"name": "deathstar.com", "listen": f"{deathstar_host}:{deathstar}", "users": ["vader"]}]}
        with harness.Network(topo) as net:
            net.start()
            bare = resolver_host.strip("[]")
            out = dig(bare, resolver, "SRV", "_smtp._tcp.deathstar.com")
            assert re.search(rf"\sSRV\s+0 0 {deathstar} ", out), out
            out = dig(bare, resolver, "+tcp", "SRV", "_smtp._tcp.jaku.com")
            assert re.search(rf"\sSRV\s+0 0 {jaku} ", out), out
            # Into the IPv4 node by swaks, relayed over IPv6 (swaks speaks
            # IPv6 only with IO::Socket::INET6, which Debian's swaks does not pull in).
            out = subprocess.run([swaks, "--server", jaku_host, "--port", str(jaku),
                                  "--from", "rey@jaku.com", "--to", "vader@deathstar.com",
                                  "--header", "Subject: to vader"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stdout + out.stderr
            # Into the IPv6 node by smtplib, relayed back over IPv4.
            smtp_send(deathstar_host.strip("[]"), deathstar, "vader@deathstar.com", "rey@jaku.com", "to rey")
            assert b"Subject: to vader" in net.wait_messages("deathstar.com", "vader", 1, timeout=30)[0]
            assert b"Subject: to rey" in net.wait_messages("jaku.com", "rey", 1, timeout=30)[0]
            # The sender logs its relay once the peer's 250 is in: maybe after the delivery.
            for domain, rcpt in (("jaku.com", "vader@deathstar.com"), ("deathstar.com", "rey@jaku.com")):
                def relayed():
                    with open(os.path.join(net.domain_dir(domain), "node.log")) as f:
                        return f"event=relayed rcpt={rcpt}" in f.read()
                harness.wait_for(relayed, 30, f"{domain} to log its relay to {rcpt}")


def test_resolver_serves_udp_alone_when_its_tcp_port_is_taken():
    """Another program holds the resolver's port for TCP: the resolver still
    answers over UDP (dig, and the nodes relaying through it), logs
    event=tcp_unavailable, and a TCP client reaches the other program."""
    topo = harness.two_domain_topology()
    port = int(topo["resolver"]["listen"].rsplit(":", 1)[1])
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen(8)
    holder.settimeout(30)
    try:
        with harness.Network(topo) as net:
            net.start()
            out = dig("127.0.0.1", port, "SRV", "_smtp._tcp.deathstar.com")
            assert re.search(rf"\sSRV\s+0 0 {harness.port_of(topo, 'deathstar.com')} ", out), out
            with open(os.path.join(net.run_dir, "resolver", "resolver.log")) as f:
                log = f.read()
            assert f"event=tcp_unavailable listen=127.0.0.1:{port}" in log, log
            # Mail still finds its way: the nodes ask over UDP.
            smtp_send("127.0.0.1", harness.port_of(topo, "jaku.com"), "rey@jaku.com", "vader@deathstar.com", "udp")
            net.wait_messages("deathstar.com", "vader", 1, timeout=30)
            # Over TCP, the port is the holder's, not the resolver's.
            client = socket.create_connection(("127.0.0.1", port), timeout=30)
            try:
                taken, _ = holder.accept()
                taken.close()
            finally:
                client.close()
    finally:
        holder.close()


if __name__ == "__main__":
    chosen = [t for name, t in sorted(globals().items()) if name.startswith("test_") and callable(t)
              and all(arg in name for arg in sys.argv[1:])]
    harness.run_tests(chosen)
