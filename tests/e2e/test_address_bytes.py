"""Issue 16, §2: addresses are stored exactly as they came. A non-ASCII
address without SMTPUTF8 is refused at MAIL/RCPT with 553 5.6.7 (RFC 6531
§3.5; the node does not offer SMTPUTF8); every address the node takes keeps
its bytes in the queue file, across a restart of the relaying node, in the
relayed transaction and in the bounce."""
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


class Smtp:
    """A bytes-level client: the addresses here are not text."""

    def __init__(self, port):
        self.sock = harness.tracked(socket.create_connection(("127.0.0.1", port), timeout=10))
        self.buf = b""
        assert self.reply().startswith(b"220 ")

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise AssertionError(f"connection closed after {lines}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines)

    def cmd(self, line):
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def mailnet(net, *args):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, timeout=60)


def queue_addresses(net, domain):
    """The recipient addresses of every queue file of domain, as bytes."""
    folder = os.path.join(net.domain_dir(domain), "queue")
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".msg"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        first, rest = data.split(b"\n", 1)
        head = json.loads(rest[:int(first.split()[-1])].decode("utf-8"))
        for r in head["rcpts"]:
            a = r["address"]
            found.append(bytes.fromhex(a["hex"]) if isinstance(a, dict) else a.encode("utf-8"))
    return found


# Taken as they are (quoted local parts are ASCII, RFC 5321 §4.1.2), or refused.
ADDRESSES = [b'"a b\\"c"@deathstar.com', b'"x@y"@deathstar.com', b'"\\\\"@deathstar.com',
             b'"\xff\xfe"@deathstar.com', b'"\xc3\xa9"@deathstar.com', b"v\xc3\xa9der@deathstar.com"]


def test_non_ascii_addresses_are_refused_with_553_5_6_7():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        c = Smtp(harness.port_of(topo, "jaku.com"))
        try:
            assert b"SMTPUTF8" not in c.cmd(b"EHLO client.example")
            for sender in (b"MAIL FROM:<r\xc3\xa9y@jaku.com>", b'MAIL FROM:<"\xff\xfe"@jaku.com>',
                           b"MAIL FROM:<rey@j\xc3\xa4ku.com> BODY=8BITMIME"):
                r = c.cmd(sender)
                assert r.startswith(b"553 5.6.7 "), (sender, r)
            assert c.cmd(b"MAIL FROM:<rey@jaku.com>").startswith(b"250 ")
            for rcpt in (b'RCPT TO:<"\xff\xfe"@c.test>', b"RCPT TO:<fi\xc3\xb1n@jaku.com>", b"RCPT TO:<finn@jak\xfe.com>"):
                r = c.cmd(rcpt)
                assert r.startswith(b"553 5.6.7 "), (rcpt, r)
            assert c.cmd(b"RCPT TO:<finn@jaku.com>").startswith(b"250 ")
        finally:
            c.close()


def test_addresses_keep_their_bytes_through_queue_restart_relay_and_bounce():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        assert mailnet(net, "stop", "deathstar.com").returncode == 0
        c = Smtp(harness.port_of(topo, "jaku.com"))
        taken = []
        try:
            c.cmd(b"EHLO client.example")
            assert c.cmd(b"MAIL FROM:<rey@jaku.com>").startswith(b"250 ")
            for a in ADDRESSES:
                r = c.cmd(b"RCPT TO:<" + a + b">")
                if r.startswith(b"250 "):
                    taken.append(a)
                else:  # the only refusal allowed: a non-ASCII address, for SMTPUTF8
                    assert r.startswith(b"553 5.6.7 ") and max(a) >= 0x80, (a, r)
            assert c.cmd(b"RCPT TO:<vader@deathstar.com>").startswith(b"250 ")
            assert c.cmd(b"DATA").startswith(b"354 ")
            assert c.cmd(b"Subject: bytes\r\nMessage-ID: <bytes@test>\r\n\r\nbody\r\n.").startswith(b"250 ")
            c.cmd(b"QUIT")
        finally:
            c.close()
        want = sorted(taken + [b"vader@deathstar.com"])
        assert len(taken) >= 3, taken
        log = os.path.join(net.domain_dir("jaku.com"), "node.log")
        harness.wait_for(lambda: "event=deferred" in open(log, errors="replace").read(), 20, "a deferred attempt")
        assert sorted(queue_addresses(net, "jaku.com")) == want
        assert mailnet(net, "restart", "jaku.com").returncode == 0
        assert sorted(queue_addresses(net, "jaku.com")) == want
        harness.wait_for(lambda: open(log, errors="replace").read().count("event=deferred") >= 2, 20,
                         "an attempt after the restart")
        assert sorted(queue_addresses(net, "jaku.com")) == want
        assert mailnet(net, "start", "deathstar.com").returncode == 0
        net.wait_messages("deathstar.com", "vader", 1, timeout=20)
        # The quoted local parts are no mailbox at deathstar.com (553 5.1.3): they bounce, by their own bytes.
        bounce = net.wait_messages("jaku.com", "rey", 1, timeout=20)[0]
        for a in taken:
            assert b"Final-Recipient: rfc822; " + a + b"\n" in bounce, (a, bounce)
        with open(os.path.join(net.domain_dir("deathstar.com"), "smtp.log"), "rb") as f:
            transcript = f.read()
        for a in taken:
            assert b"RCPT TO:<" + a.replace(b"\\", b"\\x5c") + b">" in transcript, (a, transcript[-2000:])


if __name__ == "__main__":
    harness.run_tests([test_non_ascii_addresses_are_refused_with_553_5_6_7,
                       test_addresses_keep_their_bytes_through_queue_restart_relay_and_bounce])
