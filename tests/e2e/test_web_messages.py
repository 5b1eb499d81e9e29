"""Issue 19: the web API's delivered messages, with real processes.

- GET /api/v1/messages lists what the Maildirs hold, newest first, filtered by
  domain and user (any case), searched by q (subject, from, to, text), cut by
  limit; bad parameters are a 400 that says why;
- GET /api/v1/messages/ID gives headers, text, HTML (as data) and the
  attachments; /raw is the Maildir file byte for byte; /attachments/N the
  bytes `mailnet send --attach` sent, as a download with a safe file name;
- DELETE /api/v1/messages/ID removes the files (one user's with ?user=), under
  the same rules as every change (JSON, our own Origin); unknown ids are 404.
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


if __name__ == "__main__":
    harness.run_tests([test_list_detail_raw_attachments_delete])
