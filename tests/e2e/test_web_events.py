"""Issue 19: GET /api/v1/events, the launcher's Server-Sent Events, with real
processes.

- a message sent with smtplib is seen live on the stream: `accepted` at
  jaku.com, `relayed` there, `accepted` and `delivered` at deathstar.com, each
  "id: N\\ndata: {json}" with increasing ids;
- a client that reconnects with Last-Event-ID gets exactly the events after
  that id, and no earlier one;
- a client that never reads is dropped (its connection ends) while the
  launcher goes on answering GET /api/v1/network;
- open streams count against the web server's connection cap (64): one more
  client gets 503, and is served again once the streams close;
- ?events=relayed,delivered carries those events only (while a stream
  without the filter sees the same message's accepted events too), ?since=0
  with it replays only those; an unknown event name or query parameter gets
  400 with the reason.
"""
import json
import os
import select
import smtplib
import socket
import struct
import sys
import time
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def web_port(topo):
    return int(topo["web"]["listen"].rsplit(":", 1)[1])


class EventStream:
    """A raw-socket SSE client: the response head, then events as they come."""

    def __init__(self, port, last_event_id=None, rcvbuf=None, query=""):
        self.sock = harness.tracked(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        self.sock.sendall(f"GET /api/v1/events{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
        self.buffer = b""
        self.head = None

    def read_head(self, timeout=60):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(deadline), f"no response head: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = lines[0]
        self.head = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        return self

    def _fill(self, deadline):
        """Reads more; False at end of stream or at the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], left)
        if not ready:
            return False
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buffer += data
        return True

    def next_block(self, deadline):
        """The next "\\n\\n"-ended block (an event or a comment), or None."""
        while b"\n\n" not in self.buffer:
            if not self._fill(deadline):
                return None
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block.decode()

    def events_until(self, predicate, timeout, what):
        """(id, event) pairs up to and including the first one predicate takes."""
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(100000):
            block = self.next_block(deadline)
            assert block is not None, f"no {what} on the event stream within {timeout}s; got {out}"
            if block.startswith(":"):
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((int(fields["id"]), json.loads(fields["data"])))
            if predicate(out[-1][1]):
                return out
        raise AssertionError(f"no {what}")


def send_plans(topo, subject):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "rey@jaku.com", "vader@deathstar.com", subject
    m["Message-ID"] = f"<{subject.replace(' ', '-')}@jaku.com>"
    m.set_content("The plans are in R2.\n")
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
        s.send_message(m)
    return m["Message-ID"]


def delivered_at_deathstar(e):
    return e["node"] == "deathstar.com" and e["event"] == "delivered"


def test_live_events_and_resume():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        port = web_port(topo)
        stream = EventStream(port).read_head()
        assert stream.status == "HTTP/1.1 200 OK", stream.status
        assert stream.head["content-type"] == "text/event-stream", stream.head
        assert stream.head["cache-control"] == "no-store", stream.head

        mid = send_plans(topo, "The plans")
        seen = stream.events_until(relayed_and_delivered(), 60, "relayed and delivered")
        ids = [i for i, _ in seen]
        assert ids == sorted(set(ids)), ids
        mine = [(e["node"], e["event"]) for _, e in seen]
        accepted = next(e for _, e in seen if e["node"] == "jaku.com" and e["event"] == "accepted")
        assert accepted["message_id"] == mid and accepted["time"].endswith("Z") and accepted["id"], accepted
        for step in [("jaku.com", "accepted"), ("jaku.com", "relayed"), ("deathstar.com", "accepted"),
                     ("deathstar.com", "delivered")]:
            assert step in mine, (step, mine)
        assert mine.index(("jaku.com", "accepted")) < mine.index(("deathstar.com", "delivered")), mine
        delivered = next(e for _, e in seen if (e["node"], e["event"]) == ("deathstar.com", "delivered"))
        assert delivered["mailbox"] == "vader" and delivered["id"], delivered
        last_id = seen[-1][0]

        # A second message while no one listens; a client resuming from
        # last_id gets its events, and nothing at or before last_id.
        stream.sock.close()
        send_plans(topo, "More plans")
        net.wait_messages("deathstar.com", "vader", 2, timeout=60)
        again = EventStream(port, last_event_id=last_id).read_head()
        resumed = again.events_until(delivered_at_deathstar, 60, "the second delivery, resumed")
        assert resumed[0][0] == last_id + 1, (last_id, resumed[:3])
        assert all(i > last_id for i, _ in resumed), (last_id, resumed)
        assert any(e["event"] == "accepted" and e.get("message_id") == "<More-plans@jaku.com>" for _, e in resumed), \
            resumed
        assert not any(e.get("message_id") == mid for _, e in resumed), resumed

        # Without Last-Event-ID: only what happens from now on.
        fresh = EventStream(port).read_head()
        send_plans(topo, "Last plans")
        live = fresh.events_until(delivered_at_deathstar, 60, "the third delivery")
        assert live[0][0] > resumed[-1][0], (live[0], resumed[-1])
        assert not any(e.get("message_id") == "<More-plans@jaku.com>" for _, e in live), live


def dns_query(ident, name):
    q = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 15, 1)


def get_network(port):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/v1/network", headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_client_that_never_reads_is_dropped():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        port = web_port(topo)
        stalled = EventStream(port, rcvbuf=4096).read_head()
        # Many events: every DNS query is one line of the resolver's.
        resolver = topo["resolver"]["listen"].rsplit(":", 1)
        udp = harness.tracked(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        udp.settimeout(30)
        target = (resolver[0], int(resolver[1]))
        dropped = "dropped an event stream client"
        deadline = time.monotonic() + 180
        sent = 0
        while dropped not in net.output():
            assert time.monotonic() < deadline, f"the stalled client was not dropped after {sent} queries"
            for i in range(200):  # in bursts, each waited for: the resolver answers every one
                udp.sendto(dns_query((sent + i) & 0xFFFF, "deathstar.com"), target)
            for i in range(200):
                udp.recvfrom(4096)
            sent += 200
            # The launcher keeps serving while the stalled client holds its stream.
            status, body = get_network(port)
            assert status == 200 and b"deathstar.com" in body, (status, body[:200])
        # Its connection ends: what was sent before the drop, then end of stream.
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        end = time.monotonic() + 60
        while stalled._fill(end):
            stalled.buffer = stalled.buffer[-100:]
        assert time.monotonic() < end, "the dropped client's connection did not end"
        status, body = get_network(port)
        assert status == 200, status
        print(f"dropped after {sent} DNS queries")


def test_streams_count_against_the_connection_cap():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        port = web_port(topo)
        streams = [EventStream(port).read_head() for _ in range(64)]
        assert all(s.status == "HTTP/1.1 200 OK" for s in streams)
        status, body = get_network(port)
        assert status == 503 and b"too many connections" in body, (status, body)
        # The streams themselves go on: one event reaches the last one opened.
        send_plans(topo, "Capped plans")
        streams[-1].events_until(delivered_at_deathstar, 60, "delivered at deathstar.com")
        for s in streams:
            s.sock.close()
        harness.wait_for(lambda: get_network(port)[0] == 200, 30, "the API after the streams closed")


def refused_body(stream):
    """The whole answer of a refused stream request: it ends with the body."""
    end = time.monotonic() + 30
    while stream._fill(end):
        pass
    return json.loads(stream.buffer)


def relayed_and_delivered():
    """A condition for events_until: true once jaku.com's relayed and
    deathstar.com's delivered have both been read, in either order."""
    ends = set()

    def condition(e):
        if (e["node"], e["event"]) in (("jaku.com", "relayed"), ("deathstar.com", "delivered")):
            ends.add(e["event"])
        return ends == {"relayed", "delivered"}
    return condition


def test_event_filter():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        port = web_port(topo)
        picky = EventStream(port, query="?events=relayed,delivered").read_head()
        assert picky.status == "HTTP/1.1 200 OK", picky.status
        everything = EventStream(port).read_head()
        send_plans(topo, "Filtered plans")
        # deathstar.com may log delivered before jaku.com logs relayed (it
        # stores, answers 250, and only then does jaku.com hear it): read on
        # until both have come.
        seen = everything.events_until(relayed_and_delivered(), 60, "relayed and delivered, unfiltered")
        assert any(e["event"] == "accepted" for _, e in seen), seen
        got = picky.events_until(relayed_and_delivered(), 60, "relayed and delivered, filtered")
        names = [e["event"] for _, e in got]
        assert set(names) == {"relayed", "delivered"}, got
        # The same events as the unfiltered stream's, ids and all.
        assert got == [(i, e) for i, e in seen if e["event"] in ("relayed", "delivered")], (got, seen)

        # A second message, then a stream replaying the kept past with a filter.
        send_plans(topo, "More filtered plans")
        net.wait_messages("deathstar.com", "vader", 2, timeout=60)
        replay = EventStream(port, query="?since=0&events=accepted").read_head()
        past = replay.events_until(lambda e: e.get("message_id") == "<More-filtered-plans@jaku.com>"
                                   and e["node"] == "deathstar.com", 60, "the second message accepted, replayed")
        assert {e["event"] for _, e in past} == {"accepted"}, past
        assert any(e.get("message_id") == "<Filtered-plans@jaku.com>" for _, e in past), past

        for query, reason in [("?events=state,relaid", "unknown event 'relaid'"),
                              ("?event=state", "unknown query parameter 'event'"),
                              ("?events=", "empty name"),
                              ("?since=soon", "since must be")]:
            bad = EventStream(port, query=query).read_head()
            assert bad.status == "HTTP/1.1 400 Bad Request", (query, bad.status)
            body = refused_body(bad)
            assert reason in body["error"], (query, body)
        # Refused requests held no stream: the API still answers.
        assert get_network(port)[0] == 200


if __name__ == "__main__":
    harness.run_tests([test_live_events_and_resume, test_client_that_never_reads_is_dropped,
                       test_streams_count_against_the_connection_cap, test_event_filter])
