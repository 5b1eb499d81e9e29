"""Issue 19, first part: the launcher's web server, with real processes.

- GET /, /api/v1/network and /metrics answer from the supervisor's status;
  POST /api/v1/nodes/NAME/ACTION acts through the control socket's verbs, and
  `mailnet status` agrees with what the API did;
- every request must name this server in Host; a change must be JSON and,
  when it says where it comes from, from this server's own pages: a wrong
  Host, a form POST, a foreign Origin are refused with 403 and a reason, and
  change nothing; oversized requests get 413 / 431;
- a silent client is closed after its deadline, and at the connection cap new
  clients get 503 while the launcher goes on supervising;
- "web": false serves nothing; a taken port fails `up` before any child starts.
"""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(*args, cwd=None, timeout=60):
    return subprocess.run([harness.binary("mailnet"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def web_port(topo):
    return int(topo["web"]["listen"].rsplit(":", 1)[1])


def request(port, method, path, headers=None, body=None, host=None, timeout=60):
    """(status, headers as a dict of lower-case names, body text). Host is
    127.0.0.1:port unless given (None for no Host header at all: host="")."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host != "":
            conn.putheader("Host", host or f"127.0.0.1:{port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        data = body.encode() if isinstance(body, str) else body
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def get_json(port, path):
    status, headers, body = request(port, "GET", path)
    assert status == 200, (path, status, body)
    assert headers["content-type"] == "application/json", headers
    return json.loads(body)


def post(port, path, headers=None, body="{}"):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return request(port, "POST", path, h, body)


def node(doc, name):
    if name == "resolver":
        return doc["resolver"]
    return next(n for n in doc["nodes"] if n["name"] == name)


def cli_state(run_dir, name):
    out = mailnet("status", "--json", "--dir", run_dir)
    assert out.returncode == 0, out
    return next(n["state"] for n in json.loads(out.stdout)["nodes"] if n["name"] == name)


PROM_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? -?[0-9]+(\.[0-9]+)?$')
PROM_COMMENT = re.compile(r"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge))$")


def parse_metrics(text):
    """{(name, label text): value}; every line must be a sample or a HELP/TYPE comment."""
    samples = {}
    assert text.endswith("\n"), "the exposition ends with a newline"
    for line in text.splitlines():
        if line.startswith("#"):
            assert PROM_COMMENT.match(line), f"not a Prometheus comment: {line!r}"
            continue
        assert PROM_SAMPLE.match(line), f"not a Prometheus sample: {line!r}"
        key, value = line.rsplit(" ", 1)
        samples[key] = float(value)
    return samples


def listening_ports_of(pid):
    """The TCP ports process pid listens on (its socket inodes in LISTEN in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def launcher_pid(run_dir):
    with open(os.path.join(run_dir, "network.json")) as f:
        return json.load(f)["launcher_pid"]


def test_every_endpoint_and_a_kill_seen_by_status():
    topo = harness.two_domain_topology("webapi")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        url = f"http://127.0.0.1:{port}/"
        assert f"mailnet: dashboard and API at {url}" in net.output(), net.output()
        out = mailnet("web", "--dir", net.run_dir)
        assert out.returncode == 0 and out.stdout == url + "\n", out
        status = json.loads(mailnet("status", "--json", "--dir", net.run_dir).stdout)
        assert status["web"] == url, status
        assert listening_ports_of(launcher_pid(net.run_dir)) == {port}

        # The dashboard's first page, under a strict Content-Security-Policy (its own scripts only).
        code, headers, body = request(port, "GET", "/")
        assert code == 200 and headers["content-type"] == "text/html; charset=utf-8", (code, headers)
        assert "default-src 'none'" in headers["content-security-policy"], headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], headers
        assert headers["x-content-type-options"] == "nosniff", headers
        assert "<title>mailnet" in body and "<script>" not in body and "script-src 'self'" in \
            headers["content-security-policy"], body

        # The network: as `mailnet status` sees it.
        doc = get_json(port, "/api/v1/network")
        pids = net.child_pids()
        assert doc["name"] == "webapi" and doc["folder"] == os.path.abspath(net.run_dir), doc
        assert doc["web"] == url and doc["uptime_s"] >= 0, doc
        assert node(doc, "resolver")["state"] == "ready" and node(doc, "resolver")["pid"] == pids["resolver"], doc
        assert node(doc, "resolver")["listen"] == topo["resolver"]["listen"], doc
        assert [n["name"] for n in doc["nodes"]] == ["jaku.com", "deathstar.com"], doc
        for d in topo["domains"]:
            n = node(doc, d["name"])
            assert n["state"] == "ready" and n["pid"] == pids[d["name"]] and n["listen"] == d["listen"], n
            assert all(n[k] == 0 for k in ("received", "delivered", "relayed", "queued", "bounced")), n

        # One relayed message moves the counters of both nodes.
        import smtplib
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"], b"Subject: hi\r\n\r\nhello\r\n")
        net.wait_messages("deathstar.com", "vader", 1, timeout=60)

        def counted():
            d = get_json(port, "/api/v1/network")
            return (node(d, "jaku.com")["relayed"] == 1 and node(d, "deathstar.com")["delivered"] == 1) and d
        doc = harness.wait_for(counted, 30, "the relay counted in /api/v1/network")
        assert node(doc, "jaku.com")["received"] == 1 and node(doc, "deathstar.com")["received"] == 1, doc

        # The same in the Prometheus text format.
        code, headers, text = request(port, "GET", "/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), headers
        m = parse_metrics(text)
        assert m['mailnet_relayed_total{domain="jaku.com"}'] == 1, m
        assert m['mailnet_delivered_total{domain="deathstar.com"}'] == 1, m
        assert m['mailnet_queued_messages{domain="jaku.com"}'] == 0, m
        assert m['mailnet_node_up{node="resolver"}'] == 1 and m['mailnet_node_up{node="jaku.com"}'] == 1, m
        assert "# TYPE mailnet_received_total counter" in text and "# TYPE mailnet_queued_messages gauge" in text

        # A kill through the API (as the dashboard's page would send it), seen by `mailnet status`.
        origin = {"Origin": f"http://127.0.0.1:{port}"}
        code, _, body = post(port, "/api/v1/nodes/jaku.com/kill", origin)
        assert code == 200 and json.loads(body)["state"] == "killed", (code, body)
        assert cli_state(net.run_dir, "jaku.com") == "killed"
        assert node(get_json(port, "/api/v1/network"), "jaku.com")["pid"] == 0
        assert parse_metrics(request(port, "GET", "/metrics")[2])['mailnet_node_up{node="jaku.com"}'] == 0
        code, _, body = post(port, "/api/v1/nodes/jaku.com/kill")
        assert code == 409 and json.loads(body)["error"] == "jaku.com is already killed", (code, body)
        code, _, body = post(port, "/api/v1/nodes/jaku.com/flush")
        assert code == 409 and "killed" in json.loads(body)["error"], (code, body)

        # start, restart, stop, flush; a node named in any case, with the root's dot.
        code, _, body = post(port, "/api/v1/nodes/JAKU.com./start", {"Origin": f"http://localhost:{port}"})
        assert code == 200 and json.loads(body)["state"] == "ready", (code, body)
        assert cli_state(net.run_dir, "jaku.com") == "ready"
        old_pid = net.child_pids()["deathstar.com"]
        code, _, body = post(port, "/api/v1/nodes/deathstar.com/restart", body="")
        assert code == 200 and json.loads(body)["pid"] != old_pid, (code, body)
        code, _, body = post(port, "/api/v1/nodes/jaku.com/flush")
        assert code == 200, (code, body)
        code, _, body = post(port, "/api/v1/nodes/resolver/flush")
        assert code == 409 and json.loads(body)["error"] == "the resolver holds no mail", (code, body)
        code, _, body = post(port, "/api/v1/nodes/deathstar.com/stop")
        assert code == 200 and json.loads(body)["state"] == "stopped", (code, body)
        assert cli_state(net.run_dir, "deathstar.com") == "stopped"
        code, _, body = post(port, "/api/v1/nodes/nosuch.com/kill")
        assert code == 404 and "no node named 'nosuch.com'" in json.loads(body)["error"], (code, body)

        # Unknown paths and wrong methods.
        for path in ("/api/v1/nope", "/api/v1/nodes/jaku.com/explode", "/favicon.ico"):
            code, headers, body = request(port, "GET", path)
            assert code == 404 and headers["content-type"] == "application/json", (path, code)
            assert json.loads(body)["error"].startswith(("no such endpoint", "no such page or file")), body
        code, headers, body = request(port, "GET", "/api/v1/nodes/jaku.com/kill")
        assert code == 405 and headers["allow"] == "POST", (code, headers)
        code, headers, body = post(port, "/metrics")
        assert code == 405 and headers["allow"] == "GET" and "not allowed" in json.loads(body)["error"], body
        assert cli_state(net.run_dir, "jaku.com") == "ready"


def test_refusals_change_nothing():
    topo = harness.two_domain_topology("webrefuse")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        kill = "/api/v1/nodes/jaku.com/kill"

        # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example.
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", f"localhost:{port}.evil"):
            code, headers, body = request(port, "GET", "/api/v1/network", host=host)
            assert code == 403 and "refused: Host" in json.loads(body)["error"], (host, code, body)
            assert headers["content-type"] == "application/json"
        code, _, body = request(port, "GET", "/api/v1/network", host="")
        assert code == 403 and json.loads(body)["error"] == "refused: the request has no Host header", body
        code, _, body = request(port, "POST", kill, {"Content-Type": "application/json"}, "{}", host="evil.example")
        assert code == 403, body
        code, _, _ = request(port, "GET", "/api/v1/network", host=f"LocalHost:{port}")
        assert code == 200

        # A cross-site form can POST only these types, without a preflight.
        for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"):
            code, _, body = request(port, "POST", kill, {"Content-Type": ctype}, "a=b")
            assert code == 403, (ctype, code, body)
            assert json.loads(body)["error"].startswith("refused: a POST must have Content-Type: application/json"), body
        code, _, body = request(port, "POST", kill, {}, "")
        assert code == 403 and "Content-Type: application/json" in json.loads(body)["error"], body

        # JSON from another site's page (its Origin says so), or from a sandboxed frame.
        for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "https://127.0.0.1:%d" % port, "null"):
            code, _, body = post(port, kill, {"Origin": origin})
            assert code == 403 and "refused: Origin" in json.loads(body)["error"], (origin, code, body)

        # Too large: a body over 64 KiB (refused on its Content-Length), headers over 8 KiB.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(f"POST {kill} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: 100000\r\n\r\n{{".encode())
            reply = s.recv(65536).decode()
        assert reply.startswith("HTTP/1.1 413 ") and "over 65536 bytes" in reply, reply
        code, _, body = request(port, "GET", "/api/v1/network", {"X-Filler": "a" * 9000})
        assert code == 431 and "over 8192 bytes" in json.loads(body)["error"], (code, body)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            reply = s.recv(65536).decode()
        assert reply.startswith("HTTP/1.1 400 "), reply

        # Nothing was killed; the server still serves.
        assert cli_state(net.run_dir, "jaku.com") == "ready"
        assert node(get_json(port, "/api/v1/network"), "jaku.com")["state"] == "ready"


AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
ASK_AS_NOBODY = r"""
import http.client, json, sys
port, method, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
conn.request(method, path, body="{}" if method == "POST" else None, headers={"Content-Type": "application/json"})
resp = conn.getresponse()
print(json.dumps({"status": resp.status, "body": resp.read().decode()}))
"""


def test_another_local_user_is_refused_as_on_the_control_socket():
    """The web port is open to every local user, as any TCP port is; the
    launcher asks the kernel whose socket is calling (/proc/net/tcp) and
    serves its owner and root only, as mailnet.sock does."""
    assert os.geteuid() == 0, "needs root: the other local user is `nobody`, reached through setpriv"
    topo = harness.two_domain_topology("webuser")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        jaku = net.child_pids()["jaku.com"]
        for method, path in (("GET", "/api/v1/network"), ("POST", "/api/v1/nodes/jaku.com/kill"), ("GET", "/metrics")):
            out = subprocess.run(AS_NOBODY + [sys.executable, "-c", ASK_AS_NOBODY, str(port), method, path],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            reply = json.loads(out.stdout)
            assert reply["status"] == 403, (path, reply)
            assert "refused: uid 65534 is not the owner of this network (uid 0)" in reply["body"], reply
        assert harness.pid_alive(jaku), "nobody killed jaku.com through the web API"
        assert get_json(port, "/api/v1/network")["name"] == "webuser"  # the owner is served
    # Over IPv6 loopback too, where the kernel lists the client in /proc/net/tcp6.
    topo6 = harness.two_domain_topology("webuser6")
    topo6["web"] = {"listen": f"[::1]:{harness.free_tcp_port()}"}
    port6 = web_port(topo6)
    with harness.Network(topo6) as net:
        net.start()
        ask6 = ASK_AS_NOBODY.replace('"127.0.0.1"', '"::1"')
        out = subprocess.run(AS_NOBODY + [sys.executable, "-c", ask6, str(port6), "GET", "/api/v1/network"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] == 403, out.stdout
        conn = http.client.HTTPConnection("::1", port6, timeout=30)
        try:
            conn.request("GET", "/api/v1/network", headers={"Host": f"[::1]:{port6}"})
            assert conn.getresponse().status == 200
        finally:
            conn.close()


def test_slow_clients_cannot_stop_the_launcher():
    topo = harness.two_domain_topology("webslow")
    port = web_port(topo)
    with harness.Network(topo) as net:
        net.start()
        # One silent client is closed by the server (10 s to send a request).
        silent = socket.create_connection(("127.0.0.1", port), timeout=60)
        started = time.monotonic()
        try:
            assert silent.recv(1) == b"", "the server closed a silent client"
        finally:
            silent.close()
        assert time.monotonic() - started >= 5, "closed before its deadline"

        # At the cap (64 connections), another client gets 503 at once, the
        # launcher goes on (status, a kill), and the API serves again once they go.
        held = []
        try:
            for _ in range(64):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
                held[-1].sendall(b"GET / HTTP/1.1\r\n")  # a request begun, never finished

            def refused():
                code, _, body = request(port, "GET", "/api/v1/network", timeout=30)
                return code == 503 and "too many connections" in body
            harness.wait_for(refused, 30, "a 503 at the connection cap")
            out = mailnet("kill", "jaku.com", "--dir", net.run_dir)
            assert out.returncode == 0, out
            assert cli_state(net.run_dir, "jaku.com") == "killed"
        finally:
            for s in held:
                s.close()
        doc = harness.wait_for(lambda: request(port, "GET", "/api/v1/network")[0] == 200
                               and get_json(port, "/api/v1/network"), 30, "the API after the clients left")
        assert node(doc, "jaku.com")["state"] == "killed", doc


def test_web_false_serves_nothing():
    topo = harness.two_domain_topology("webless")
    topo["web"] = False
    with harness.Network(topo) as net:
        net.start()
        assert "dashboard" not in net.output(), net.output()
        assert listening_ports_of(launcher_pid(net.run_dir)) == set(), "the launcher listens on TCP"
        out = mailnet("web", "--dir", net.run_dir)
        assert out.returncode == 1 and 'has no web server ("web": false in its topology)' in out.stderr, out
        status = json.loads(mailnet("status", "--json", "--dir", net.run_dir).stdout)
        assert "web" not in status, status


def test_taken_port_fails_up_before_any_child():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    topo = harness.two_domain_topology("webtaken")
    topo["web"] = {"listen": f"127.0.0.1:{port}"}
    try:
        with tempfile.TemporaryDirectory(prefix="mailnet-web-") as tmp:
            file = os.path.join(tmp, "t.json")
            with open(file, "w") as f:
                json.dump(topo, f)
            run_dir = os.path.join(tmp, "run")
            out = mailnet("up", "-d", file, "--dir", run_dir)
            assert out.returncode == 1, out
            assert (f"mailnet: the web server (web.listen 127.0.0.1:{port}) failed to start: "
                    f"cannot listen on 127.0.0.1:{port}: Address already in use") in out.stderr, out
            assert '"web": false' in out.stderr, out
            assert harness.processes_naming(run_dir) == [], "a child was started"
            # In the foreground too.
            out = mailnet("up", file, "--dir", run_dir)
            assert out.returncode == 1 and "Address already in use" in out.stderr + out.stdout, out
            assert harness.processes_naming(run_dir) == []
    finally:
        holder.close()


def test_validate_names_the_web_field():
    topo = harness.two_domain_topology("webbad")
    with tempfile.TemporaryDirectory(prefix="mailnet-web-") as tmp:
        file = os.path.join(tmp, "t.json")
        for web, expected in (({"listen": "0.0.0.0:8080"}, "$.web.listen: expected \"host:port\" with a loopback host"),
                              ("yes", "$.web: expected false (no web server) or an object"),
                              ({"listen": topo["domains"][0]["listen"]}, "$.domains[0].listen: ")):
            topo["web"] = web
            with open(file, "w") as f:
                json.dump(topo, f)
            out = mailnet("validate", file)
            assert out.returncode == 2 and f"{file}: {expected}" in out.stderr, (web, out)


if __name__ == "__main__":
    harness.run_tests([
        test_every_endpoint_and_a_kill_seen_by_status,
        test_refusals_change_nothing,
        test_another_local_user_is_refused_as_on_the_control_socket,
        test_slow_clients_cannot_stop_the_launcher,
        test_web_false_serves_nothing,
        test_taken_port_fails_up_before_any_child,
        test_validate_names_the_web_field,
    ])
