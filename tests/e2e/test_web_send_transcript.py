"""Issue 19, the last endpoints of the web API, with real processes:
POST /api/v1/send (as `mailnet send`: an attachment arrives byte for byte,
bad input is a 400 naming the field, a refusal 502, a node down 503, a form
or a foreign Origin 403, its body limit of 10 MiB while other endpoints keep
64 KiB), GET /api/v1/nodes/{name}/transcript (the sessions of smtp.log, and
one session's lines), GET /api/v1/dns (the zone and the latest queries, one
made with dig) and the resolver's query counter in /metrics."""
import base64
import email
import email.policy
import http.client
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

DIG = shutil.which("dig") or "/usr/bin/dig"


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
    try:
        h = {"Host": f"127.0.0.1:{port}"}
        if method == "POST":
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def announce_body(port, path, length):
    """A POST whose headers announce length bytes, none of which is sent: the
    server's answer to the headers alone."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
    try:
        conn.putrequest("POST", path, skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def get_json(port, path):
    status, body = request(port, "GET", path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def web_port(topo):
    return int(topo["web"]["listen"].rsplit(":", 1)[1])


def test_send_with_an_attachment_and_its_refusals():
    topo = harness.two_domain_topology("websend")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        data = os.urandom(300 * 1024)  # base64 in JSON: over the 64 KiB of other endpoints
        mail = {"from": "Rey <rey@jaku.com>", "to": ["vader@deathstar.com"], "cc": "tarkin@deathstar.com",
                "bcc": [], "subject": "The plans ✓", "body": "See attached.\n",
                "attachments": [{"name": "plans.bin", "content_type": "application/octet-stream",
                                 "data": base64.b64encode(data).decode()}]}
        status, body = request(port, "POST", "/api/v1/send", mail)
        assert status == 200, (status, body)
        doc = json.loads(body)
        assert doc["ok"] is True and doc["node"] == "jaku.com" and doc["queue_id"], doc
        assert doc["address"] == topo["domains"][0]["listen"] and doc["reply"].startswith("250"), doc
        assert [r["address"] for r in doc["rcpts"]] == ["vader@deathstar.com", "tarkin@deathstar.com"], doc

        raw = net.wait_messages("deathstar.com", "vader", 1, timeout=60)[0]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg["Subject"] == "The plans ✓" and "tarkin@deathstar.com" in msg["Cc"], msg
        parts = [p for p in msg.iter_attachments()]
        assert len(parts) == 1 and parts[0].get_filename() == "plans.bin", parts
        assert parts[0].get_payload(decode=True) == data, "the attachment is not byte-identical"
        net.wait_messages("deathstar.com", "tarkin", 1, timeout=60)

        # Bad input: 400 naming the field; nothing sent.
        def refused(mail, field, code=400):
            status, body = request(port, "POST", "/api/v1/send", mail)
            assert status == code and field in json.loads(body)["error"], (mail, status, body)
        refused({"from": "rey@jaku.com", "subject": "x"}, "to:")
        refused({"from": "rey@jaku.com", "to": ["not an address"]}, "to: not a mail address")
        refused({"from": "rey@jaku.com", "to": "vader@deathstar.com", "cc": 5}, "cc:")
        refused({"to": "vader@deathstar.com"}, "from:")
        refused({"from": "rey@jaku.com", "to": "vader@deathstar.com",
                 "attachments": [{"name": "a.txt", "data": "@@not base64@@"}]}, "attachments[0].data")
        refused({"from": "rey@jaku.com", "to": "vader@deathstar.com",
                 "attachments": [{"data": "aGk="}]}, "attachments[0].name")
        refused({"from": "rey@jaku.com", "to": "vader@deathstar.com", "colour": "red"}, "unknown field 'colour'")
        refused({"from": "rey@nowhere.org", "to": "vader@deathstar.com"}, "from: the sender's domain nowhere.org")
        refused([1, 2], "JSON object")
        # A refusal by the node: 502 with its reply.
        status, body = request(port, "POST", "/api/v1/send", {"from": "rey@jaku.com", "to": "nobody@jaku.com"})
        doc = json.loads(body)
        assert status == 502 and "5.1.1" in doc["error"] and doc["rcpts"][0]["accepted"] is False, (status, body)

        # Not a change a page of another site can make.
        status, body = request(port, "POST", "/api/v1/send", "from=rey%40jaku.com&to=vader%40deathstar.com",
                               {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 403 and "Content-Type: application/json" in body, (status, body)
        status, body = request(port, "POST", "/api/v1/send", mail, {"Origin": "http://evil.example"})
        assert status == 403 and "Origin" in body, (status, body)
        status, body = request(port, "GET", "/api/v1/send")
        assert status == 405, (status, body)

        # The body limits: 10 MiB here, 64 KiB elsewhere (told as the headers end).
        status, body = announce_body(port, "/api/v1/send", 10 * 1024 * 1024 + 1)
        assert status == 413 and str(10 * 1024 * 1024) in body, (status, body)
        status, body = announce_body(port, "/api/v1/faults", 100 * 1024)
        assert status == 413 and "65536" in body, (status, body)
        status, body = request(port, "POST", "/api/v1/nodes/jaku.com/flush", " " * (100 * 1024))
        assert status == 413 and "65536" in body, (status, body)

        # A large body that will be refused is not read, nor does it take a slot:
        # another site's no-cors text/plain POST is refused from its headers.
        for extra in ({"Content-Type": "text/plain"}, {"Origin": "http://evil.example"}):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.putrequest("POST", "/api/v1/send", skip_host=True)
                conn.putheader("Host", f"127.0.0.1:{port}")
                headers = {"Content-Type": "application/json", "Content-Length": str(5 << 20), **extra}
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                resp = conn.getresponse()
                status, body = resp.status, resp.read().decode()
            finally:
                conn.close()
            assert status == 403 and "refused" in body, (extra, status, body)

        # At most two large bodies are received at once (each may take 10 MiB of
        # the launcher's memory): a third waits its turn with 503; once one of
        # them is gone, a large send is taken again.
        holders = []
        try:
            for _ in range(2):
                holder = socket.create_connection(("127.0.0.1", port), timeout=60)
                holders.append(holder)
                holder.sendall(f"POST /api/v1/send HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                               f"Content-Type: application/json\r\nContent-Length: {5 << 20}\r\n\r\n".encode())
                holder.sendall(b" " * 1000)
            # The launcher has read both headers when a small request on each connection's
            # heels is answered (one event loop, in order of arrival).
            harness.wait_for(lambda: announce_body(port, "/api/v1/send", 5 << 20)[0] == 503, 60,
                             "a third large send refused while two are being received")
            status, body = announce_body(port, "/api/v1/send", 5 << 20)
            assert status == 503 and "large bodies" in body, (status, body)
            # A small send is not a large one.
            status, body = request(port, "POST", "/api/v1/send", {"from": "rey@jaku.com", "to": "nobody"})
            assert status == 400, (status, body)
        finally:
            for holder in holders:
                holder.close()
        big = {"from": "rey@jaku.com", "to": "nobody", "subject": "x" * (200 * 1024)}
        harness.wait_for(lambda: request(port, "POST", "/api/v1/send", big)[0] == 400, 60,
                         "a large send taken again (and read: 400 for its bad address) once the two are gone")

        # The sender's node down: 503 saying so.
        status, body = request(port, "POST", "/api/v1/nodes/jaku.com/stop", {})
        assert status == 200, (status, body)
        status, body = request(port, "POST", "/api/v1/send", {"from": "rey@jaku.com", "to": "vader@deathstar.com"})
        assert status == 503 and "does not answer" in body and "jaku.com" in body, (status, body)
        # via: another node of the network takes it.
        status, body = request(port, "POST", "/api/v1/send", {"from": "rey@jaku.com", "to": "vader@deathstar.com",
                                                                "via": "deathstar.com", "subject": "via"})
        assert status == 200 and json.loads(body)["node"] == "deathstar.com", (status, body)
        net.wait_messages("deathstar.com", "vader", 2, timeout=60)


def test_an_early_answer_reaches_a_client_that_goes_on_sending_its_body():
    """413 and 403 come as soon as the headers are read; a client that sends
    its body anyway (as most do, without Expect: 100-continue) still reads the
    answer: the server sends it with a FIN, then reads and drops the rest,
    instead of closing with bytes unread, which resets the connection."""
    topo = harness.two_domain_topology("weblinger")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        cases = [("/api/v1/send", {}, 20 << 20, 413, str(10 * 1024 * 1024)),
                 ("/api/v1/send", {"Origin": "http://evil.example"}, 20 << 20, 403, "Origin"),
                 ("/api/v1/nodes/jaku.com/flush", {}, 8 << 20, 413, "65536")]
        for path, extra, length, code, words in cases:
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                    + f"Content-Length: {length}\r\n\r\n").encode()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.sendall(head)
                chunk = b"x" * 65536
                for _ in range(min(length, 8 << 20) // len(chunk)):  # 8 MiB: well past every socket buffer
                    s.sendall(chunk)
                answer = b""
                while True:
                    got = s.recv(65536)
                    if not got:
                        break
                    answer += got
            text = answer.decode("utf-8", "replace")
            assert text.startswith(f"HTTP/1.1 {code} "), (path, extra, text[:300])
            assert words in text, (path, text)


def test_a_slow_send_does_not_hold_the_launcher():
    """The SMTP conversation runs off the event loop: while a node delays its
    greeting by 10 s (a fault rule), the launcher answers other requests."""
    import threading
    topo = harness.two_domain_topology("webslowsend")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        rule = {"name": "slow-greeting", "to": "jaku.com", "stage": "greeting", "action": "delay", "delay": "10s"}
        status, body = request(port, "POST", "/api/v1/faults", rule)
        assert status == 201, (status, body)
        result = {}

        def send():
            result["reply"] = request(port, "POST", "/api/v1/send",
                                      {"from": "rey@jaku.com", "to": "finn@jaku.com", "subject": "slow"})
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            def delaying():
                with open(os.path.join(net.run_dir, "jaku.com", "node.log")) as f:
                    return "event=fault rule=slow-greeting" in f.read()
            harness.wait_for(delaying, 60, "jaku.com delaying the send's greeting")
            status, body = request(port, "GET", "/api/v1/network")
            assert status == 200 and sender.is_alive() and "reply" not in result, \
                "the launcher did not answer while a send waited on a node"
        finally:
            sender.join(timeout=120)
        assert result["reply"][0] == 200, result
        net.wait_messages("jaku.com", "finn", 1, timeout=60)


def test_transcript_of_sessions():
    topo = harness.two_domain_topology("webtranscript")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), local_hostname="client.example",
                          timeout=30) as s:
            s.sendmail("finn@jaku.com", ["vader@deathstar.com"],
                       "Subject: transcript\r\nFrom: finn@jaku.com\r\n\r\nhello\r\n")
        net.wait_messages("deathstar.com", "vader", 1, timeout=60)

        def listed():
            doc = get_json(port, "/api/v1/nodes/jaku.com/transcript")
            mine = [s for s in doc["sessions"] if s["helo"] == "client.example"]
            return mine and mine[0]["lines"] >= 10 and (doc, mine[0])
        doc, mine = harness.wait_for(listed, 60, "the smtplib session in jaku.com's transcript")
        assert doc["node"] == "jaku.com" and doc["count"] == len(doc["sessions"]) <= 50, doc
        assert mine["client"] == "127.0.0.1" and mine["direction"] == "inbound" and mine["from_node"] is None, mine
        assert mine["first"] <= mine["last"] and mine["first"].endswith("Z"), mine

        one = get_json(port, f"/api/v1/nodes/jaku.com/transcript?session={mine['session']}")
        lines = one["lines"]
        assert len(lines) == mine["lines"] and one["session"] == mine["session"], one
        texts = [(l["direction"], l["text"]) for l in lines]
        assert ("note", "connect from 127.0.0.1") == texts[0], texts
        assert any(d == "client" and t.upper().startswith("MAIL FROM:<FINN@JAKU.COM>") for d, t in texts), texts
        assert any(d == "client" and t.upper() == "RCPT TO:<VADER@DEATHSTAR.COM>" for d, t in texts), texts
        assert any(d == "server" and t.startswith("250 2.0.0") for d, t in texts), texts
        assert [l["time"] for l in lines] == sorted(l["time"] for l in lines), lines

        # The relay's session, in the receiving node's transcript, from its node.
        def relayed():
            doc = get_json(port, "/api/v1/nodes/deathstar.com/transcript")
            return [s for s in doc["sessions"] if s["from_node"] == "jaku.com"]
        harness.wait_for(relayed, 60, "jaku.com's relay session in deathstar.com's transcript")

        status, body = request(port, "GET", "/api/v1/nodes/jaku.com/transcript?session=NOSUCH1")
        assert status == 404 and "no session NOSUCH1" in body, (status, body)
        status, body = request(port, "GET", "/api/v1/nodes/jaku.com/transcript?session=../x")
        assert status == 400, (status, body)
        status, body = request(port, "GET", "/api/v1/nodes/jaku.com/transcript?sesion=1")
        assert status == 400 and "unknown query parameter" in body, (status, body)
        # Beyond 16 pairs the query is refused, not read in part.
        status, body = request(port, "GET", "/api/v1/nodes/jaku.com/transcript?" + "&" * 16 + "sesion=1")
        assert status == 400 and "too many parameters" in body, (status, body)
        status, body = request(port, "GET", "/api/v1/nodes/nosuch.com/transcript")
        assert status == 404 and "no node nosuch.com" in body, (status, body)
        status, body = request(port, "GET", "/api/v1/nodes/resolver/transcript")
        assert status == 404 and "no transcript" in body, (status, body)

        # A link planted for smtp.log is never read through.
        planted = os.path.join(net.workdir, "planted.log")
        with open(planted, "w") as f:
            f.write("2026-12-02T10:00:00.000Z PLANTED1 C: EHLO planted\n")
        log = os.path.join(net.run_dir, "deathstar.com", "smtp.log")
        os.rename(log, log + ".moved")
        os.symlink(planted, log)
        status, body = request(port, "GET", "/api/v1/nodes/deathstar.com/transcript")
        assert "PLANTED1" not in body and status != 200 and "symbolic link" in body, (status, body)


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_dns_zone_and_queries():
    topo = harness.two_domain_topology("webdns")
    port = web_port(topo)
    resolver_port = int(topo["resolver"]["listen"].rsplit(":", 1)[1])
    with harness.Network(topo) as net:
        net.start()
        doc = get_json(port, "/api/v1/dns")
        assert doc["resolver"] == topo["resolver"]["listen"], doc
        by_domain = {d["domain"]: d["records"] for d in doc["domains"]}
        assert set(by_domain) == {"jaku.com", "deathstar.com"}, doc
        for d in topo["domains"]:
            records = {(r["name"], r["type"], r["data"]) for r in by_domain[d["name"]]}
            dport = d["listen"].rsplit(":", 1)[1]
            # The DKIM key is the one `up` made: its record by its start.
            dkim = [r for r in records if r[0] == f"mailnet._domainkey.{d['name']}."]
            assert len(dkim) == 1 and dkim[0][1] == "TXT" and dkim[0][2].startswith('"v=DKIM1; k=rsa; p=MII'), records
            assert records - set(dkim) == {(f"_smtp._tcp.{d['name']}.", "SRV", f"0 0 {dport} mx.{d['name']}."),
                                           (f"{d['name']}.", "MX", f"10 mx.{d['name']}."),
                                           (f"mx.{d['name']}.", "A", "127.0.0.1"),
                                           ("1.0.0.127.in-addr.arpa.", "PTR", f"mx.{d['name']}."),
                                           (f"{d['name']}.", "TXT", '"v=spf1 ip4:127.0.0.1 -all"'),
                                           (f"_dmarc.{d['name']}.", "TXT",
                                            '"v=DMARC1; p=reject; adkim=r; aspf=r"')}, records

        _, metrics = request(port, "GET", "/metrics")
        txt_name = 'mailnet_resolver_queries_total{type="TXT",rcode="NXDOMAIN"}'
        assert metric(metrics, txt_name) == 0, metrics
        client_port = harness.free_udp_port()
        out = subprocess.run([DIG, "@127.0.0.1", "-p", str(resolver_port), "-b", f"127.0.0.1#{client_port}",
                              "TXT", "nosuch-web.example", "+norecurse", "+tries=1", "+time=10"],
                             capture_output=True, text=True, timeout=60)
        assert "status: NXDOMAIN" in out.stdout, out
        out = subprocess.run([DIG, "@127.0.0.1", "-p", str(resolver_port), "SRV", "_smtp._tcp.deathstar.com",
                              "+norecurse", "+short", "+tries=1", "+time=10"], capture_output=True, text=True,
                             timeout=60)
        assert f"0 0 {harness.port_of(topo, 'deathstar.com')} mx.deathstar.com." in out.stdout, out

        def queried():
            doc = get_json(port, "/api/v1/dns")
            mine = [q for q in doc["queries"] if q["name"] == "nosuch-web.example"]
            return mine and (doc, mine[0])
        doc, q = harness.wait_for(queried, 60, "dig's query in the resolver's latest queries")
        assert q["type"] == "TXT" and q["rcode"] == "NXDOMAIN" and q["port"] == client_port, q
        assert q["answered"] is True and q["transport"] == "udp" and q["time"].endswith("Z"), q
        srv = [x for x in doc["queries"] if x["name"] == "_smtp._tcp.deathstar.com"]
        assert srv and srv[0]["type"] == "SRV" and srv[0]["rcode"] == "NOERROR", doc["queries"]
        assert doc["queries"].index(srv[0]) < doc["queries"].index(q), "not newest first"

        def counted():
            _, text = request(port, "GET", "/metrics")
            return metric(text, txt_name) == 1 and text
        metrics = harness.wait_for(counted, 60, "the TXT query counted in /metrics")
        assert "# TYPE mailnet_resolver_queries_total counter" in metrics, metrics
        assert metric(metrics, 'mailnet_resolver_queries_total{type="SRV",rcode="NOERROR"}') >= 1, metrics
        status, body = request(port, "POST", "/api/v1/dns", {})
        assert status == 405, (status, body)


if __name__ == "__main__":
    harness.run_tests([test_send_with_an_attachment_and_its_refusals,
                       test_an_early_answer_reaches_a_client_that_goes_on_sending_its_body,
                       test_a_slow_send_does_not_hold_the_launcher,
                       test_transcript_of_sessions,
                       test_dns_zone_and_queries])
