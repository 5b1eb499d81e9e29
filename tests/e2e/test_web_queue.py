"""Issue 19: GET /api/v1/nodes/{name}/queue, with real processes: while
deathstar.com is stopped, a message for it waits in jaku.com's queue and the
endpoint shows it as `mailnet queue` does (recipient, attempts, last error,
next try); after a start it is relayed and the queue is empty. An unknown
node and the resolver are 404 with a reason."""
import http.client
import json
import os
import smtplib
import sys
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def request(port, method, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Host": f"127.0.0.1:{port}"}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body="{}" if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def queue(port, node):
    status, body = request(port, "GET", f"/api/v1/nodes/{node}/queue")
    assert status == 200, (status, body)
    return json.loads(body)


def test_queue_of_a_node():
    topo = harness.two_domain_topology("webqueue")
    port = int(topo["web"]["listen"].rsplit(":", 1)[1])
    with harness.Network(topo) as net:
        net.start()
        assert queue(port, "jaku.com") == {"node": "jaku.com", "count": 0, "messages": []}
        status, body = request(port, "POST", "/api/v1/nodes/deathstar.com/stop")
        assert status == 200, (status, body)

        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "rey@jaku.com", "vader@deathstar.com", "Waiting"
        m.set_content("Still here.\n")
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
            s.send_message(m)

        def deferred():
            doc = queue(port, "jaku.com")
            return doc["count"] == 1 and doc["messages"][0]["attempts"] >= 1 and doc
        doc = harness.wait_for(deferred, 60, "a deferred message in jaku.com's queue")
        row = doc["messages"][0]
        assert row["from"] == "rey@jaku.com" and row["to"] == ["vader@deathstar.com"], row
        assert "4.4.1" in row["last_error"], row
        assert row["next_try"] and row["next_try"].endswith("Z") and row["id"] and row["size"] > 0, row
        cli = subprocess_queue(net.run_dir)
        assert row["id"] in cli and "<rey@jaku.com>  to vader@deathstar.com" in cli, cli  # the same message
        # Node names as on the command line: any case, the root's dot.
        assert queue(port, "JAKU.com.")["messages"][0]["id"] == row["id"]
        assert queue(port, "deathstar.com")["count"] == 0

        status, body = request(port, "POST", "/api/v1/nodes/deathstar.com/start")
        assert status == 200, (status, body)
        harness.wait_for(lambda: queue(port, "jaku.com")["count"] == 0, 60, "jaku.com's queue emptied")
        net.wait_messages("deathstar.com", "vader", 1, timeout=60)

        status, body = request(port, "GET", "/api/v1/nodes/nosuch.com/queue")
        assert status == 404 and "no node nosuch.com" in body, (status, body)
        status, body = request(port, "GET", "/api/v1/nodes/resolver/queue")
        assert status == 404 and "the resolver has no mail queue" in body, (status, body)
        status, body = request(port, "POST", "/api/v1/nodes/jaku.com/queue")
        assert status == 405, (status, body)


def subprocess_queue(run_dir):
    import subprocess
    out = subprocess.run([harness.binary("mailnet"), "queue", "--dir", run_dir], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out
    return out.stdout


if __name__ == "__main__":
    harness.run_tests([test_queue_of_a_node])
