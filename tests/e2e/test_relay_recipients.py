"""Issue 16: the relay keeps a result per recipient (a 5xx at RCPT is final,
only deferred or accepted-then-failed recipients are retried), and the
network's own trace headers never get mail refused at the next hop."""
import json
import os
import signal
import smtplib
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_queue_and_bounces import mailnet, reports  # noqa: E402


def smtp_log_connects(net, domain):
    path = os.path.join(net.domain_dir(domain), "smtp.log")
    if not os.path.exists(path):
        return 0
    with open(path, errors="replace") as f:
        return sum(1 for line in f if " connect from " in line)


def all_blocks(found):
    return [b for report in found for b in report["blocks"]]


def test_one_valid_and_25_unknown_at_a_node_that_closes_after_20_errors():
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = {"first": "1s", "max": "2s", "give_up_after": "1m"}
    topo["domains"][1]["limits"] = {"errors": 20}
    with harness.Network(topo) as net:
        net.start()
        unknown = [f"nobody{i}@deathstar.com" for i in range(25)]
        rcpts = unknown[:10] + ["vader@deathstar.com"] + unknown[10:]
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("finn@jaku.com", rcpts, b"From: <finn@jaku.com>\r\nSubject: many\r\n\r\nhello\r\n")
        net.wait_messages("deathstar.com", "vader", 1, timeout=20)

        def bounced_all():
            blocks = all_blocks(reports(net.messages("jaku.com", "finn")))
            return len(blocks) >= 25 and blocks
        blocks = harness.wait_for(bounced_all, 20, "bounces for the 25 unknown users")
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue", "jaku.com").stdout, 10,
                         "jaku.com's queue to drain")
        assert sorted(b["Final-Recipient"] for b in blocks) == sorted("rfc822; " + a for a in unknown), blocks
        for b in blocks:
            assert b["Action"] == "failed" and b["Status"] == "5.1.1", b
            assert b["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), b
        found = reports(net.messages("jaku.com", "finn"))
        assert len(found) == 1, f"{len(found)} bounces for one message"
        assert len(net.messages("deathstar.com", "vader")) == 1
        # A handful of connections, not one per retry of the same 421.
        connects = smtp_log_connects(net, "deathstar.com")
        assert 1 <= connects <= 3, f"{connects} connections to deathstar.com"


class RcptPeer(harness.FakeSmtpPeer):
    """A tiny SMTP server standing in for deathstar.com: RCPT to busy* gets
    450, to gone* 550 5.1.1, to anything else 250. On its first connection,
    after the second refusal it says 421 and closes (as a node at its
    limits.errors). offers(): the recipients offered per MAIL; taken(): the
    (offered, accepted) recipients of each transaction that reached the end
    of its data."""

    def reply(self, verb, line, session):
        if verb != "RCPT" or not session["transaction"]:
            return super().reply(verb, line, session)
        addr = line[line.index(b"<") + 1:line.index(b">")].decode()
        if addr.startswith("busy"):
            return "450 4.2.1 mailbox busy"
        if addr.startswith("gone"):
            session["errors"] = session.get("errors", 0) + 1
            if session["number"] == 1 and session["errors"] == 2:
                return "550 5.1.1 no such user here\r\n421 4.7.0 fake: too many errors"
            return "550 5.1.1 no such user here"
        return "250 ok"

    def offers(self):
        with self.lock:
            return [list(t["rcpts"]) for t in self.transactions]

    def taken(self):
        with self.lock:
            return [(list(t["rcpts"]), list(t["accepted"])) for t in self.transactions if t["message"] is not None]


def test_mixed_4xx_5xx_and_421_at_rcpt_retry_only_the_deferred():
    topo = harness.relay_in_plain_text(harness.two_domain_topology())
    topo["defaults"]["retry"] = {"first": "300ms", "max": "1s", "give_up_after": "1m"}
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        peer = RcptPeer(harness.port_of(topo, "deathstar.com"))
        try:
            rcpts = ["ok1@deathstar.com", "busy1@deathstar.com", "gone1@deathstar.com", "gone2@deathstar.com",
                     "busy2@deathstar.com", "late1@deathstar.com"]
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
                s.sendmail("finn@jaku.com", rcpts, b"From: <finn@jaku.com>\r\nSubject: mixed\r\n\r\nhi\r\n")
            found = reports(net.wait_messages("jaku.com", "finn", 1, timeout=10))
            blocks = all_blocks(found)
            assert sorted(b["Final-Recipient"] for b in blocks) == [
                "rfc822; gone1@deathstar.com", "rfc822; gone2@deathstar.com"], blocks
            for b in blocks:
                assert b["Status"] == "5.1.1" and b["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), b
            # The first connection ended with 421 after gone2: every recipient
            # but the refused ones is offered again, in a new transaction.
            harness.wait_for(lambda: len(peer.taken()) >= 1, 10, "a retry of the deferred recipients")
            assert peer.offers()[0] == rcpts[:4], peer.offers()
            assert sorted(peer.offers()[1]) == ["busy1@deathstar.com", "busy2@deathstar.com", "late1@deathstar.com",
                                                "ok1@deathstar.com"], peer.offers()
            assert peer.taken()[0][1] == ["ok1@deathstar.com", "late1@deathstar.com"], peer.taken()
            # The busy ones are retried alone: never again the refused ones.
            harness.wait_for(lambda: len(peer.offers()) >= 3, 10, "a third transaction")
            assert sorted(peer.offers()[2]) == ["busy1@deathstar.com", "busy2@deathstar.com"], peer.offers()
            # The verdicts are in the queue file: after a restart, the same.
            mailnet(net, "restart", "jaku.com")
            seen = len(peer.offers())
            harness.wait_for(lambda: len(peer.offers()) > seen, 10, "a transaction after the restart")
            assert sorted(peer.offers()[seen]) == ["busy1@deathstar.com", "busy2@deathstar.com"], peer.offers()
            assert len(reports(net.messages("jaku.com", "finn"))) == 1  # no second bounce for the same ones
        finally:
            peer.close()


def message_of_size(size, subject):
    """A message of exactly size bytes, CRLF line ends, without Message-ID:
    and Date: (the first node adds them)."""
    head = f"From: <rey@jaku.com>\r\nSubject: {subject}\r\n\r\n".encode()
    body = b""
    while len(head) + len(body) + 80 <= size:
        body += b"x" * 76 + b"\r\n"
    body += b"y" * (size - len(head) - len(body) - 2) + b"\r\n"
    msg = head + body
    assert len(msg) == size
    return msg


def test_a_message_at_the_size_limit_is_not_refused_at_the_next_hop():
    limit = 20000
    topo = harness.two_domain_topology()
    topo["defaults"]["limits"] = {"message_size": limit}
    with harness.Network(topo) as net:
        net.start()
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            # One byte over: refused at the first hop, as before (SIZE= at MAIL, then the count).
            try:
                s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message_of_size(limit + 1, "over"))
                raise AssertionError("a message one byte over the limit was taken")
            except smtplib.SMTPSenderRefused as e:
                assert e.smtp_code == 552 and b"5.3.4" in e.smtp_error, e
            s.rset()
            s.mail("rey@jaku.com")  # no SIZE=: refused at the end of the data
            s.rcpt("vader@deathstar.com")
            code, text = s.data(message_of_size(limit + 1, "over"))
            assert code == 552 and b"5.3.4" in text, (code, text)
            # Exactly at the limit: taken by jaku.com, and so by deathstar.com,
            # whatever trace lines jaku.com added.
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message_of_size(limit, "edge"))
        msgs = net.wait_messages("deathstar.com", "vader", 1, timeout=15)
        assert b"Subject: edge" in msgs[0] and msgs[0].count(b"Received: ") == 2, msgs[0][:600]
        assert net.messages("jaku.com", "rey") == [], "a bounce for the message at the limit"


def node_pid(net, domain):
    status = json.loads(mailnet(net, "status", "--json").stdout)
    return next(n["pid"] for n in status["nodes"] if n["name"] == domain)


def connections_to(port):
    """Sockets connected or connecting to 127.0.0.1:port, from /proc/net/tcp.
    The kernel prints that table in chunks while it changes, so one socket
    can be listed twice in one read: each is counted once, by its own
    address."""
    local_ends = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(remote.split(":")[1], 16) == port and state in ("01", "02"):  # ESTABLISHED, SYN_SENT
                local_ends.add(local)
    return len(local_ends)


def test_the_relay_caps_its_connections_to_a_hung_peer():
    cap = 20  # limits.relay_connections_per_destination's default
    topo = harness.two_domain_topology()
    topo["defaults"]["timeouts"] = {"relay_reply": "3s"}
    topo["defaults"]["retry"] = {"first": "300ms", "max": "1s", "give_up_after": "5m"}
    count = 200
    with harness.Network(topo) as net:
        net.start()
        jaku, deathstar = node_pid(net, "jaku.com"), node_pid(net, "deathstar.com")
        peer_port = harness.port_of(topo, "deathstar.com")
        fds_before = len(os.listdir(f"/proc/{jaku}/fd"))
        seen = {"fds": 0, "conns": 0}
        stop, resumed = threading.Event(), threading.Event()

        def sample():
            # Descriptors while the peer hangs (afterwards the resolver
            # client's sockets and queue rewrites come and go); connections
            # to the peer throughout.
            while not stop.is_set():
                try:
                    if not resumed.is_set():
                        seen["fds"] = max(seen["fds"], len(os.listdir(f"/proc/{jaku}/fd")))
                except OSError:
                    pass
                seen["conns"] = max(seen["conns"], connections_to(peer_port))
                stop.wait(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        os.kill(deathstar, signal.SIGSTOP)
        try:
            sampler.start()
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
                for i in range(count):
                    s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                               f"From: <rey@jaku.com>\r\nSubject: hung {i}\r\n\r\nbody\r\n".encode())
            # Every message had its chance to connect: the first connections
            # timed out waiting for the greeting and were given back.
            harness.wait_for(lambda: "event=deferred" in open(os.path.join(net.domain_dir("jaku.com"),
                                                                           "node.log")).read(),
                             30, "a relay attempt to time out")
            harness.wait_for(lambda: seen["conns"] >= cap, 10, "the relay to reach its cap")
        finally:
            resumed.set()
            os.kill(deathstar, signal.SIGCONT)
        net.wait_messages("deathstar.com", "vader", count, timeout=120)
        stop.set()
        sampler.join(timeout=5)
        print(f"hung peer: at most {seen['conns']} connections, {seen['fds']} descriptors (before: {fds_before})")
        assert seen["conns"] <= cap + 1, f"{seen['conns']} connections to the hung peer, cap {cap}"
        assert seen["fds"] <= fds_before + cap + 12, f"{seen['fds']} descriptors (before: {fds_before}), cap {cap}"


if __name__ == "__main__":
    harness.run_tests([test_one_valid_and_25_unknown_at_a_node_that_closes_after_20_errors,
                       test_mixed_4xx_5xx_and_421_at_rcpt_retry_only_the_deferred,
                       test_a_message_at_the_size_limit_is_not_refused_at_the_next_hop,
                       test_the_relay_caps_its_connections_to_a_hung_peer])
