"""Issue 17, promises 1 to 4: the relay's backoff and expiry, its timeouts
and 4xx handling, old peers (no PIPELINING, HELO only), and the end of its
connection cache. deathstar.com's node is stopped and a small Python SMTP
peer takes its port where a test needs to see what the relay sends."""
import datetime
import os
import re
import smtplib
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_queue_and_bounces import mailnet, reports  # noqa: E402


def events(net, domain, name):
    """(seconds since the epoch, line) of each node.log line with event=name."""
    path = os.path.join(net.domain_dir(domain), "node.log")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            if f"event={name} " in line or line.rstrip().endswith(f"event={name}"):
                stamp = datetime.datetime.strptime(line.split(" ", 1)[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
                out.append((stamp.replace(tzinfo=datetime.timezone.utc).timestamp(), line))
    return out


def send(topo, subject, rcpt="vader@deathstar.com"):
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
        s.sendmail("finn@jaku.com", [rcpt], f"From: <finn@jaku.com>\r\nSubject: {subject}\r\n\r\nbody\r\n".encode())


def no_bounce(net):
    assert reports(net.messages("jaku.com", "finn")) == [], "a bounce for a temporary failure"


class Peer(harness.FakeSmtpPeer):
    """A tiny SMTP server in deathstar.com's place. ehlo: 'pipelining',
    'plain' (250 without PIPELINING) or a reply line for EHLO (a HELO-only
    server). script: a reply to use instead of the normal one, per
    (transaction number from 1, counting every MAIL, verb), verbs MAIL,
    DATA and DOT (end of data). silent: accept and never say anything. It
    records each connection's lines, whether a command came before the
    previous reply (pipelining), and when it saw QUIT or the close."""

    def __init__(self, port, ehlo="pipelining", script=None, silent=False, close_after_data=False):
        self.ehlo, self.script, self.close_after_data = ehlo, script or {}, close_after_data
        super().__init__(port, greeting=None if silent else "220 fake ESMTP",
                         capabilities=("SIZE 1000000",) + (("PIPELINING",) if ehlo == "pipelining" else ()))

    def reply(self, verb, line, session):
        if verb == "EHLO" and self.ehlo not in ("pipelining", "plain"):
            return self.ehlo
        if verb == "DOT" and self.close_after_data:
            session["close"] = True
        txn = session["transaction"]
        if txn and (txn["number"], verb) in self.script:
            return self.script[(txn["number"], verb)]
        return super().reply(verb, line, session)


def network(retry, timeouts=None):
    topo = harness.relay_in_plain_text(harness.two_domain_topology())
    topo["defaults"]["retry"] = retry
    if timeouts:
        topo["defaults"]["timeouts"] = timeouts
    return topo, harness.Network(topo)


def test_backoff_doubles_from_first_to_max_then_expiry_bounces_with_5_4_7():
    first, most, give_up = 400, 1600, 8.0  # milliseconds, seconds for give_up
    topo, net = network({"first": "400ms", "max": "1600ms", "give_up_after": "8s"})
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")  # nothing listens there: every attempt is refused
        send(topo, "backoff")
        bounced = net.wait_messages("jaku.com", "finn", 1, timeout=60)
        deferred = events(net, "jaku.com", "deferred")
        times = [t for t, _ in deferred]
        waits = [int(re.search(r" retry_in_ms=(\d+)", line).group(1)) for _, line in deferred]
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        print(f"scheduled waits (ms): {waits}; gaps between deferred events (s): {gaps}")
        # The schedule: first, 2×first, 4×first = max, then max.
        assert len(waits) >= 5, f"{len(waits)} deferred attempts before the bounce: {waits}"
        assert waits == [min(first * 2 ** i, most) for i in range(len(waits))], waits
        # And it is kept: each gap is at least its wait (less the queue
        # rewrite between the schedule and its log line, and the log's
        # millisecond rounding; a constant first would give 0.4 s gaps).
        for gap, want in zip(gaps, waits):
            assert gap >= want / 1000 - 0.3, f"gap {gap}s, scheduled {want}ms: {gaps}"
        # No doubling past max: that would make the next gap 2×max.
        for gap in gaps[3:]:
            assert gap < 1.75 * most / 1000, f"the wait went on growing past retry.max: {gaps}"
        # The bounce comes with 5.4.7, after give_up_after and not before.
        blocks = [b for r in reports(bounced) for b in r["blocks"]]
        assert len(blocks) == 1 and blocks[0]["Status"] == "5.4.7" and blocks[0]["Action"] == "failed", blocks
        bounce_time = events(net, "jaku.com", "bounced")[0][0]
        assert bounce_time - times[0] >= give_up - 0.5, f"bounced {bounce_time - times[0]:.2f}s after the first try"


def wait_deferred(net, count, timeout, what):
    return harness.wait_for(lambda: len(events(net, "jaku.com", "deferred")) >= count, timeout, what)


def test_a_peer_that_never_greets_is_retried_on_relay_reply():
    topo, net = network({"first": "200ms", "max": "400ms", "give_up_after": "5m"}, {"relay_reply": "500ms"})
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        peer = Peer(harness.port_of(topo, "deathstar.com"), silent=True)
        try:
            send(topo, "silent")
            # relay_reply is 500ms; the default of 1 minute would not end one attempt in this window.
            wait_deferred(net, 2, 30, "two attempts timed out waiting for the greeting")
            assert len(peer.sessions) >= 2, "no new connection after the timeout"
            assert "timeout waiting for a reply" in events(net, "jaku.com", "deferred")[0][1]
            no_bounce(net)
        finally:
            peer.close()
        mailnet(net, "start", "deathstar.com")
        mailnet(net, "flush", "jaku.com", check=False)
        net.wait_messages("deathstar.com", "vader", 1, timeout=30)
        no_bounce(net)


def fill_backlog(port):
    """A listener with backlog 0 that never accepts: one connection fills its
    queue, and Linux then drops every new SYN, so a connect() hangs in
    SYN_SENT until the caller's own deadline. Returns the sockets to close."""
    listener = harness.tracked(socket.socket())
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(0)
    held = [listener]
    for _ in range(8):
        c = harness.tracked(socket.socket())
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        held.append(c)
    # The last ones stay unconnected: the queue is full.
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        probe.connect(("127.0.0.1", port))
        raise AssertionError("the listener's queue did not fill: cannot test a connect timeout here")
    except socket.timeout:
        pass
    finally:
        probe.close()
    return held


def test_a_connect_that_hangs_is_retried_on_relay_connect():
    topo, net = network({"first": "200ms", "max": "400ms", "give_up_after": "5m"}, {"relay_connect": "500ms"})
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        held = fill_backlog(harness.port_of(topo, "deathstar.com"))
        try:
            send(topo, "hanging connect")
            # The kernel gives up on a SYN only after about two minutes:
            # attempts ending in this window ended on relay_connect.
            wait_deferred(net, 2, 30, "two attempts to end on the connect timeout")
            deferred = events(net, "jaku.com", "deferred")
            assert "No answer from deathstar.com" in deferred[0][1], deferred[0][1]
            no_bounce(net)
        finally:
            for s in held:
                s.close()
        mailnet(net, "start", "deathstar.com")
        mailnet(net, "flush", "jaku.com", check=False)
        net.wait_messages("deathstar.com", "vader", 1, timeout=30)
        no_bounce(net)


def test_4xx_at_mail_data_and_end_of_data_are_retried():
    topo, net = network({"first": "200ms", "max": "400ms", "give_up_after": "5m"})
    script = {(1, "MAIL"): "451 4.3.0 try later", (2, "DATA"): "451 4.3.1 not now",
              (3, "DOT"): "452 4.3.1 full for now"}
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        peer = Peer(harness.port_of(topo, "deathstar.com"), script=script)
        try:
            send(topo, "temporary")
            harness.wait_for(lambda: peer.delivered() or net.messages("jaku.com", "finn"), 30,
                             "the message after three 4xx, or a bounce")
            no_bounce(net)
            assert len(peer.transactions) == 4, [s["lines"] for s in peer.sessions]
            assert b"Subject: temporary" in peer.delivered()[0]
            errors = [line for _, line in events(net, "jaku.com", "deferred")]
            assert len(errors) >= 3 and "451 4.3.0" in errors[0] and "451 4.3.1" in errors[1] and \
                "452 4.3.1" in errors[2], errors
            harness.wait_for(lambda: events(net, "jaku.com", "removed"), 10, "the queue file's removal")
            no_bounce(net)
        finally:
            peer.close()


def test_a_peer_without_pipelining_gets_one_command_at_a_time():
    topo, net = network({"first": "200ms", "max": "400ms", "give_up_after": "5m"})
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        peer = Peer(harness.port_of(topo, "deathstar.com"), ehlo="plain")
        try:
            send(topo, "no pipelining")
            harness.wait_for(lambda: peer.delivered(), 30, "the message at a peer without PIPELINING")
            s = peer.sessions[0]
            verbs = [line[:4].upper() for line in s["lines"] if line[:4].upper() in (b"EHLO", b"MAIL", b"RCPT",
                                                                                      b"DATA")]
            assert verbs == [b"EHLO", b"MAIL", b"RCPT", b"DATA"], s["lines"]
            assert s["early"] == [], f"commands sent before the previous reply: {s['early']}"
            no_bounce(net)
        finally:
            peer.close()


def test_a_helo_only_peer_still_gets_the_mail():
    topo, net = network({"first": "200ms", "max": "400ms", "give_up_after": "5m"})
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        # The first connection answers EHLO with 500, the second with 502;
        # it closes after each message so that the second one needs a new one.
        peer = Peer(harness.port_of(topo, "deathstar.com"), ehlo="500 5.5.2 what is EHLO", close_after_data=True)
        try:
            send(topo, "old peer 1")
            harness.wait_for(lambda: peer.delivered(), 30, "the message at a HELO-only peer (500)")
            peer.ehlo = "502 5.5.1 command not implemented"
            send(topo, "old peer 2")
            harness.wait_for(lambda: len(peer.delivered()) >= 2, 30, "the message at a HELO-only peer (502)")
            for s in peer.sessions[:2]:
                verbs = [line[:4].upper() for line in s["lines"]]
                assert verbs[:3] == [b"EHLO", b"HELO", b"MAIL"], s["lines"]
                assert s["early"] == [], f"pipelined at a HELO-only peer: {s['early']}"
            assert b"Subject: old peer 1" in peer.delivered()[0] and b"Subject: old peer 2" in peer.delivered()[1]
            no_bounce(net)
        finally:
            peer.close()


def test_the_connection_cache_lets_go_after_3_seconds():
    idle_limit = 3.0
    topo, net = network({"first": "200ms", "max": "400ms", "give_up_after": "5m"})
    with net:
        net.start()
        mailnet(net, "stop", "deathstar.com")
        peer = Peer(harness.port_of(topo, "deathstar.com"))
        try:
            send(topo, "first")
            harness.wait_for(lambda: peer.delivered(), 30, "the first message")
            first = peer.sessions[0]
            # Kept for 3 s, then the relay says QUIT and closes (its sweep
            # ticks every second; 15 s leaves room for a slow machine).
            harness.wait_for(lambda: first["ended"], 15, "the kept connection to be closed")
            kept_for = first["ended"] - first["stored_at"]
            print(f"kept connection closed after {kept_for:.2f}s")
            assert first["quit"], first["lines"]
            assert kept_for >= idle_limit - 0.1, f"closed after {kept_for:.2f}s, before its 3 seconds"
            send(topo, "second")
            harness.wait_for(lambda: len(peer.delivered()) >= 2, 30, "the second message")
            assert len(peer.sessions) == 2 and peer.sessions[1]["delivered"], [s["lines"] for s in peer.sessions]
            no_bounce(net)
        finally:
            peer.close()


if __name__ == "__main__":
    harness.run_tests([t for name, t in sorted(globals().items()) if name.startswith("test_") and callable(t)])
