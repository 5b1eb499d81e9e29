"""Issue 19: the web API's delivered messages, with real processes.

- GET /api/v1/messages lists what the Maildirs hold, newest first, filtered by
  domain and user (any case), searched by q (subject, from, to, text), cut by
  limit; bad parameters are a 400 that says why;
- GET /api/v1/messages/ID gives headers, text, HTML (as data) and the
  attachments; /raw is the Maildir file byte for byte; /attachments/N the
  bytes `mailnet send --attach` sent, as a download with a safe file name;
- DELETE /api/v1/messages/ID removes the files (one user's with ?user=), under
  the same rules as every change (JSON, our own Origin); unknown ids are 404;
- GET /api/v1/messages/ID/trace and `mailnet trace ID` give a message's path
  across the nodes from their node.log, in time order, found from a Maildir
  name, a queue id or the Message-ID: a relay deferred while the next node
  is down, then relayed and delivered; a bounce.
"""
import json
import os
import smtplib
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_web_api import request, web_port  # noqa: E402


def mailnet(*args, timeout=60):
    return subprocess.run([harness.binary("mailnet"), *args], capture_output=True, text=True, timeout=timeout)


def get_json(port, path, expect=200):
    code, headers, body = request(port, "GET", path)
    assert code == expect, (path, code, body)
    assert headers["content-type"] == "application/json", headers
    return json.loads(body)


def get_bytes(port, path):
    """(status, headers, body as bytes)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def maildir_files(run_dir, domain, user):
    out = {}
    for sub in ("new", "cur"):
        folder = os.path.join(run_dir, domain, "mail", user, sub)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                out[name] = os.path.join(folder, name)
    return out


def send(run_dir, *args):
    out = mailnet("send", "--dir", run_dir, *args)
    assert out.returncode == 0, out
    return out.stdout.strip()


def test_list_detail_raw_attachments_delete():
    topo = harness.two_domain_topology("webmsg")
    port = web_port(topo)
    with tempfile.TemporaryDirectory(prefix="mailnet-e2e-att-") as files, harness.Network(topo) as net:
        net.start()
        run = net.run_dir
        # Nothing delivered yet.
        doc = get_json(port, "/api/v1/messages")
        assert doc == {"total": 0, "count": 0, "messages": []}, doc

        # 1. Relayed, to two users of deathstar.com, with a binary attachment and one with a nasty name.
        blob = bytes(range(256)) * 40 + b"\x00\r\n.\r\n\xff"
        with open(os.path.join(files, "plans.bin"), "wb") as f:
            f.write(blob)
        nasty = os.path.join(files, "plan ü <b>;x.txt")
        with open(nasty, "wb") as f:
            f.write(b"exhaust port\n")
        send(run, "--from", "Rey <rey@jaku.com>", "--to", "vader@deathstar.com", "--to", "tarkin@deathstar.com",
             "--subject", "The plans", "--body", "They are in the R2 unit.\n",
             "--attach", os.path.join(files, "plans.bin"), "--attach", nasty)
        net.wait_messages("deathstar.com", "tarkin", 1, timeout=60)
        # 2. Local to jaku.com.
        send(run, "--from", "finn@jaku.com", "--to", "rey@jaku.com", "--subject", "Lunch", "--body", "Bantha burgers?\n")
        net.wait_messages("jaku.com", "rey", 1, timeout=60)
        # 3. HTML with a script, straight into deathstar.com's node.
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "tarkin@deathstar.com", "vader@deathstar.com", "Status report"
        m.set_content("All fine.\n")
        m.add_alternative('<p>All <b>fine</b>.</p><script>alert(1)</script><img src="http://example.com/x.png">\n',
                          subtype="html")
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "deathstar.com"), timeout=30) as s:
            s.send_message(m)
        net.wait_messages("deathstar.com", "vader", 2, timeout=60)

        # The list: one row per mailbox, newest first.
        doc = get_json(port, "/api/v1/messages")
        rows = doc["messages"]
        assert doc["total"] == 4 and doc["count"] == 4, doc
        assert [(r["subject"], r["domain"], r["user"]) for r in rows] == [
            ("Status report", "deathstar.com", "vader"), ("Lunch", "jaku.com", "rey"),
            ("The plans", "deathstar.com", "tarkin"), ("The plans", "deathstar.com", "vader")], rows
        plans = rows[2]
        assert rows[3]["id"] == plans["id"], "one message to two users is one file, one id"
        assert plans["id"] in maildir_files(run, "deathstar.com", "vader"), plans
        assert plans["from"] == "Rey <rey@jaku.com>" and "vader@deathstar.com" in plans["to"], plans
        assert "tarkin@deathstar.com" in plans["to"] and plans["date"], plans
        assert plans["attachments"] == ["plans.bin", "plan ü <b>;x.txt"], plans
        assert plans["size"] == os.path.getsize(maildir_files(run, "deathstar.com", "tarkin")[plans["id"]]), plans
        assert plans["message_id"].endswith("@jaku.com"), plans

        # Filters, in any case; the search; the limit.
        def subjects(query):
            return [(r["subject"], r["user"]) for r in get_json(port, "/api/v1/messages?" + query)["messages"]]
        assert subjects("domain=DeathStar.COM") == [("Status report", "vader"), ("The plans", "tarkin"),
                                                    ("The plans", "vader")]
        assert subjects("domain=deathstar.com.&user=VADER") == [("Status report", "vader"), ("The plans", "vader")]
        assert subjects("user=rey") == [("Lunch", "rey")]
        assert subjects("user=nobody") == []
        assert subjects("q=r2+UNIT") == [("The plans", "tarkin"), ("The plans", "vader")], "text, any case"
        assert subjects("q=lunch") == [("Lunch", "rey")], "subject"
        assert subjects("q=FINN%40jaku") == [("Lunch", "rey")], "from"
        assert subjects("q=tarkin%40") == [("Status report", "vader"), ("The plans", "tarkin"),
                                           ("The plans", "vader")], "to and from"
        assert subjects("q=exhaust") == [], "attachment bytes are not text"
        doc = get_json(port, "/api/v1/messages?limit=1&domain=deathstar.com")
        assert doc["total"] == 3 and doc["count"] == 1 and doc["messages"][0]["subject"] == "Status report", doc
        for query, words in (("domain=nosuch.com", "no domain 'nosuch.com'"), ("limit=0", "limit must be"),
                             ("limit=x", "limit must be"), ("limit=10001", "limit must be"),
                             ("sort=date", "unknown query parameter 'sort'"), ("q=%zz", "broken %-escape")):
            code, _, body = request(port, "GET", "/api/v1/messages?" + query)
            assert code in (400, 404) and words in json.loads(body)["error"], (query, code, body)

        # The detail: headers, text, attachments.
        d = get_json(port, f"/api/v1/messages/{quote(plans['id'])}")
        assert d["id"] == plans["id"] and d["subject"] == "The plans" and d["text"] == "They are in the R2 unit.\n", d
        assert sorted((m["domain"], m["user"]) for m in d["mailboxes"]) == [("deathstar.com", "tarkin"),
                                                                            ("deathstar.com", "vader")], d
        assert ["Subject", "The plans"] in d["headers"] and any(h[0] == "Received" for h in d["headers"]), d
        assert d["attachments"] == [
            {"index": 0, "name": "plans.bin", "type": "application/octet-stream", "size": len(blob)},
            {"index": 1, "name": "plan ü <b>;x.txt", "type": "text/plain", "size": 13}], d["attachments"]
        assert d["html"] == "" and d["mime_errors"] == [], d
        html = get_json(port, f"/api/v1/messages/{rows[0]['id']}")
        assert "<script>alert(1)</script>" in html["html"] and html["text"] == "All fine.\n", html

        # Raw: the Maildir file, byte for byte, never served as a page.
        code, headers, raw = get_bytes(port, f"/api/v1/messages/{plans['id']}/raw")
        with open(maildir_files(run, "deathstar.com", "vader")[plans["id"]], "rb") as f:
            assert code == 200 and raw == f.read(), code
        assert headers["content-type"] == "message/rfc822", headers
        assert headers["content-security-policy"] == "sandbox" and headers["x-content-type-options"] == "nosniff"
        code, headers, raw = get_bytes(port, f"/api/v1/messages/{rows[0]['id']}/raw")
        assert code == 200 and b"<script>" in raw and headers["content-security-policy"] == "sandbox", headers

        # Attachments: the bytes sent, as a download with a safe name.
        code, headers, data = get_bytes(port, f"/api/v1/messages/{plans['id']}/attachments/0")
        assert code == 200 and data == blob, (code, len(data))
        assert headers["content-type"] == "application/octet-stream", headers
        assert headers["content-disposition"] == 'attachment; filename="plans.bin"', headers
        code, headers, data = get_bytes(port, f"/api/v1/messages/{plans['id']}/attachments/1")
        assert code == 200 and data == b"exhaust port\n", (code, data)
        assert headers["content-disposition"] == 'attachment; filename="plan_____b__x.txt"', headers
        assert headers["content-security-policy"] == "sandbox", headers

        # Not found, wrong methods.
        for path, words in ((f"/api/v1/messages/{plans['id']}/attachments/2", "has no attachment 2 (it has 2"),
                            (f"/api/v1/messages/{plans['id']}/attachments/x", "has no attachment x"),
                            ("/api/v1/messages/1234.M5P6Q7.nosuch", "no message with id '1234.M5P6Q7.nosuch'"),
                            ("/api/v1/messages/..%2Fjaku.com/raw", "no such endpoint"),
                            (f"/api/v1/messages/{plans['id']}/source", "no such endpoint")):
            code, headers, body = request(port, "GET", path)
            assert code == 404 and words in json.loads(body)["error"], (path, code, body)
        code, headers, _ = request(port, "POST", "/api/v1/messages", {"Content-Type": "application/json"}, "{}")
        assert code == 405 and headers["allow"] == "GET", (code, headers)
        code, headers, _ = request(port, "DELETE", f"/api/v1/messages/{plans['id']}/raw",
                                   {"Content-Type": "application/json"})
        assert code == 405 and headers["allow"] == "GET", (code, headers)
        code, _, body = request(port, "GET", "/api/v1/messages", host="evil.example")
        assert code == 403 and "refused: Host" in json.loads(body)["error"], body

        # DELETE: refused as any change is when not JSON or from another site; nothing removed.
        path = f"/api/v1/messages/{plans['id']}"
        for headers, words in (({}, "Content-Type: application/json"),
                               ({"Content-Type": "text/plain"}, "Content-Type: application/json"),
                               ({"Content-Type": "application/json", "Origin": "http://evil.example"},
                                "refused: Origin")):
            code, _, body = request(port, "DELETE", path, headers)
            assert code == 403 and words in json.loads(body)["error"], (headers, code, body)
        assert plans["id"] in maildir_files(run, "deathstar.com", "tarkin")
        json_type = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"}
        # One user's copy, then the rest.
        code, _, body = request(port, "DELETE", path + "?user=Tarkin&domain=deathstar.com", json_type)
        assert code == 200 and json.loads(body)["removed"] == [{"domain": "deathstar.com", "user": "tarkin"}], body
        assert plans["id"] not in maildir_files(run, "deathstar.com", "tarkin")
        assert plans["id"] in maildir_files(run, "deathstar.com", "vader")
        assert subjects("q=plans") == [("The plans", "vader")]
        code, _, body = request(port, "DELETE", path + "?user=tarkin", json_type)
        assert code == 404 and "not in the Maildir of user 'tarkin'" in json.loads(body)["error"], body
        code, _, body = request(port, "DELETE", path, json_type)
        assert code == 200 and json.loads(body)["removed"] == [{"domain": "deathstar.com", "user": "vader"}], body
        assert plans["id"] not in maildir_files(run, "deathstar.com", "vader")
        get_json(port, path, expect=404)
        code, _, _ = request(port, "DELETE", path, json_type)
        assert code == 404
        doc = get_json(port, "/api/v1/messages")
        assert [r["subject"] for r in doc["messages"]] == ["Status report", "Lunch"] and doc["total"] == 2, doc


def events_of(trace):
    return [(e["node"], e["event"]) for e in trace["events"]]


def test_trace_across_nodes_and_cli():
    topo = harness.two_domain_topology("webtrace")
    port = web_port(topo)
    with tempfile.TemporaryDirectory(prefix="mailnet-e2e-att-") as files, harness.Network(topo) as net:
        net.start()
        run = net.run_dir
        with open(os.path.join(files, "plans.txt"), "wb") as f:
            f.write(b"exhaust port\n")
        # deathstar.com is down: the relay is deferred with a 4.4.1 until it is back.
        assert mailnet("kill", "deathstar.com", "--dir", run).returncode == 0
        qid = send(run, "--from", "rey@jaku.com", "--to", "vader@deathstar.com", "--subject", "The plans",
                   "--body", "In the R2 unit.\n", "--attach", os.path.join(files, "plans.txt"))

        def traced(which, *wanted):
            def ready():
                code, _, body = request(port, "GET", "/api/v1/messages/" + quote(which, safe="") + "/trace")
                if code != 200:
                    return False
                doc = json.loads(body)
                return all(w in events_of(doc) for w in wanted) and doc
            return harness.wait_for(ready, 60, f"{wanted} in the trace of {which}")

        doc = traced(qid, ("jaku.com", "deferred"))
        deferred = next(e for e in doc["events"] if e["event"] == "deferred")
        assert "4.4.1" in deferred["error"], deferred
        assert mailnet("start", "deathstar.com", "--dir", run).returncode == 0
        assert mailnet("flush", "jaku.com", "--dir", run).returncode == 0
        net.wait_messages("deathstar.com", "vader", 1, timeout=60)
        name = next(iter(maildir_files(run, "deathstar.com", "vader")))
        doc = traced(name, ("deathstar.com", "attachments"), ("jaku.com", "relayed"))
        steps = events_of(doc)
        # In time order: accepted and deferred at jaku.com, then accepted, delivered and saved at deathstar.com.
        order = [("jaku.com", "accepted"), ("jaku.com", "deferred"), ("deathstar.com", "accepted"),
                 ("deathstar.com", "delivered"), ("deathstar.com", "attachments")]
        assert [steps.index(s) for s in order] == sorted(steps.index(s) for s in order), steps
        assert steps.index(("jaku.com", "relayed")) > steps.index(("jaku.com", "deferred")), steps
        assert [e["time"] for e in doc["events"]] == sorted(e["time"] for e in doc["events"]), doc
        relay_ok = [e for e in doc["events"] if e["event"] == "relay_attempt" and e["reply"].startswith("250")]
        assert len(relay_ok) == 1 and relay_ok[0]["node"] == "jaku.com" and relay_ok[0]["domain"] == "deathstar.com"
        saved = next(e for e in doc["events"] if e["event"] == "attachments")
        assert saved["saved"] == "1" and saved["mailbox"] == "vader", saved
        assert [q["node"] for q in doc["queue_ids"]] == ["jaku.com", "deathstar.com"], doc["queue_ids"]
        assert doc["queue_ids"][0]["id"] == qid, doc["queue_ids"]
        # accepted carries the Message-ID, the same on both nodes: the link between them.
        mid = doc["message_id"]
        accepted = [e for e in doc["events"] if e["event"] == "accepted"]
        assert [e["message_id"] for e in accepted] == [mid, mid] and mid.startswith("<"), accepted
        # The same trace from the queue id, the Message-ID (with or without <>) and a name prefix.
        for which in (qid, mid, mid.strip("<>"), name[:20], doc["queue_ids"][1]["id"]):
            other = get_json(port, "/api/v1/messages/" + quote(which, safe="") + "/trace")
            assert other["events"] == doc["events"], (which, events_of(other))

        # `mailnet trace`: the same events, one line each, both nodes named.
        out = mailnet("trace", name[:20], "--dir", run)
        assert out.returncode == 0, out
        lines = out.stdout.splitlines()
        assert lines[0] == f"Message-ID: {mid}", lines
        assert len(lines) == 1 + len(doc["events"]), lines
        for line, e in zip(lines[1:], doc["events"]):
            assert line.startswith(f'{e["time"]}  {e["node"]}') and f' {e["event"]} id={e["id"]}' in line, (line, e)

        # A bounce: deathstar.com refuses the user, jaku.com bounces it to the sender.
        bad = send(run, "--from", "rey@jaku.com", "--to", "nosuch@deathstar.com", "--subject", "Hello",
                   "--body", "anyone?\n")
        doc = traced(bad, ("jaku.com", "bounced"))
        # The SPF, DKIM and DMARC verdicts are reached before the message is accepted.
        assert events_of(doc)[:4] == [("jaku.com", "spf"), ("jaku.com", "dkim"), ("jaku.com", "dmarc"),
                                      ("jaku.com", "accepted")], doc
        attempt = next(e for e in doc["events"] if e["event"] == "relay_attempt")
        assert attempt["node"] == "jaku.com" and attempt["domain"] == "deathstar.com", attempt
        bounced = next(e for e in doc["events"] if e["event"] == "bounced")
        assert bounced["rcpt"] == "nosuch@deathstar.com" and "550" in bounced["error"], bounced
        assert ("deathstar.com", "delivered") not in events_of(doc), doc
        out = mailnet("trace", bad, "--dir", run)
        assert out.returncode == 0 and " bounced id=" + bad in out.stdout, out

        # Unknown: 404 and exit 1, saying what was looked for.
        code, _, body = request(port, "GET", "/api/v1/messages/nosuch%40example.com/trace")
        assert code == 404 and "no Message-ID, queue id or Maildir name 'nosuch@example.com'" in body, body
        out = mailnet("trace", "nosuch@example.com", "--dir", run)
        assert out.returncode == 1 and "mailnet: trace: no Message-ID, queue id or Maildir name" in out.stderr, out

        # A node.log planted as a link (to a file outside the run folder) is not read.
        outside = os.path.join(os.path.dirname(run), "outside.log")
        with open(outside, "w") as f:
            f.write(f"2026-12-02T00:00:00.000Z id={bad} event=planted\n")
        os.mkdir(os.path.join(run, "planted.example"), 0o700)
        os.symlink(outside, os.path.join(run, "planted.example", "node.log"))
        doc = get_json(port, "/api/v1/messages/" + quote(bad, safe="") + "/trace")
        assert ("jaku.com", "bounced") in events_of(doc), doc
        assert not any(e["event"] == "planted" for e in doc["events"]), doc


if __name__ == "__main__":
    harness.run_tests([test_list_detail_raw_attachments_delete, test_trace_across_nodes_and_cli])
