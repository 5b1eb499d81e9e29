"""STARTTLS with the network's CA, seen through real clients: Python's
smtplib and ssl, openssl s_client, swaks; the STARTTLS injection test;
policy.tls "required" and "off"; the relay that refuses an impostor in a
stopped node's port and delivers to the real node once it is back."""
import os
import re
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(net, *args):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=60)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def node_log(net, domain):
    return read(os.path.join(net.domain_dir(domain), "node.log"))


def smtp_log(net, domain):
    return read(os.path.join(net.domain_dir(domain), "smtp.log"))


def ca_path(net):
    out = mailnet(net, "ca")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


class DomainContext(ssl.SSLContext):
    """A client context that trusts the network's CA only and checks the
    certificate against `domain`, whatever address the client connected to
    (smtplib of Python 3.11 passes the host it connected to, 127.0.0.1)."""

    domain = None

    def wrap_socket(self, sock, server_hostname=None, **kw):
        return super().wrap_socket(sock, server_hostname=self.domain, **kw)


def domain_context(cafile, domain):
    ctx = DomainContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    ctx.domain = domain
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def message(subject, sender="vader@deathstar.com", to="rey@jaku.com"):
    return f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nover TLS\r\n"


def wait_message(net, domain, user, subject, timeout=30):
    def found():
        return [m for m in net.messages(domain, user) if f"Subject: {subject}".encode() in m]
    harness.wait_for(lambda: found(), timeout, f"{subject!r} in {user}@{domain}")
    return found()[0]


# ---- the CA ------------------------------------------------------------------

def test_up_makes_a_private_ca_kept_across_ups_and_new_with_fresh():
    topo = harness.two_domain_topology(name="tlsca")
    names = ["ca.key", "ca.pem", "node.deathstar.com.key", "node.deathstar.com.pem", "node.jaku.com.key",
             "node.jaku.com.pem"]
    with harness.Network(topo) as net:
        tls = os.path.join(net.run_dir, "tls")
        # umask 0: the modes must not come from it.
        net.start(preexec_fn=lambda: os.umask(0))
        assert sorted(os.listdir(tls)) == names, os.listdir(tls)
        for name in names:
            mode = stat.S_IMODE(os.lstat(os.path.join(tls, name)).st_mode)
            assert mode == 0o600, f"{name}: {oct(mode)}"
        assert stat.S_IMODE(os.lstat(tls).st_mode) == 0o700
        assert ca_path(net) == os.path.abspath(os.path.join(tls, "ca.pem"))
        # The node's certificate: signed by the CA, for the domain, mx.<domain> and the address.
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", os.path.join(tls, "node.jaku.com.pem")],
                              capture_output=True, text=True, check=True).stdout
        assert "DNS:jaku.com, DNS:mx.jaku.com, IP Address:127.0.0.1" in text, text
        verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(tls, "ca.pem"), "-verify_hostname",
                                 "mx.jaku.com", os.path.join(tls, "node.jaku.com.pem")], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        before = {n: open(os.path.join(tls, n), "rb").read() for n in names}
        net.stop()

        # A new Network on the same folder: its output starts empty, so "is up" is this up's.
        with harness.Network(topo, workdir=net.workdir) as again:
            again.start()  # kept
            assert {n: open(os.path.join(tls, n), "rb").read() for n in names} == before
            again.stop()
        # A link planted in place of the CA's key is refused, never followed.
        outside = os.path.join(net.workdir, "outside")
        with open(outside, "w") as f:
            f.write("untouched")
        os.rename(os.path.join(tls, "ca.key"), os.path.join(net.workdir, "ca.key.saved"))
        os.symlink(outside, os.path.join(tls, "ca.key"))
        refused = subprocess.run([harness.binary("mailnet"), "up", net.topology_file, "--dir", net.run_dir],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert refused.returncode != 0 and "ca.key" in refused.stderr + refused.stdout, refused.stderr
        assert open(outside).read() == "untouched"
        os.unlink(os.path.join(tls, "ca.key"))
        os.rename(os.path.join(net.workdir, "ca.key.saved"), os.path.join(tls, "ca.key"))

        with harness.Network(topo, workdir=net.workdir) as fresh:
            fresh.start(extra_args=["--fresh"])  # new
            after = {n: open(os.path.join(tls, n), "rb").read() for n in names}
            assert all(after[n] != before[n] for n in names), [n for n in names if after[n] == before[n]]

    # "tls": false: no CA, STARTTLS not offered.
    topo = harness.two_domain_topology(name="notls")
    topo["tls"] = False
    with harness.Network(topo) as net:
        net.start()
        assert not os.path.exists(os.path.join(net.run_dir, "tls"))
        out = mailnet(net, "ca")
        assert out.returncode == 1 and '"tls": false' in out.stderr, out.stderr
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
            s.ehlo("client.example")
            assert not s.has_extn("starttls")
            assert s.docmd("STARTTLS")[0] == 502
        # And the nodes relay to each other in plain text: each node was told
        # TLS is off (it once was not, asked for verified TLS nobody offered,
        # and deferred every relayed message with 4.7.5 for ever).
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                       message("plain relay", "rey@jaku.com", "vader@deathstar.com"))
        stored = wait_message(net, "deathstar.com", "vader", "plain relay")
        assert b"by deathstar.com (mailnet) with ESMTP id" in stored, stored
        # The sender logs its attempt after the far node's 250, which can come
        # after the file is in the far new/: waited for, not read at once.
        harness.wait_for(lambda: any("event=relay_attempt" in l and "tls=no" in l
                                     for l in node_log(net, "jaku.com").splitlines()), 15, "relay_attempt tls=no")
        log = node_log(net, "jaku.com")
        assert "4.7.5" not in log, log
        assert any("event=ready" in l and "starttls=off" in l and "tls_relay=off" in l for l in log.splitlines()), log


# ---- real clients against one network --------------------------------------------

def test_smtplib_starttls_checks_the_ca_and_the_domain_and_received_says_esmtps():
    port = harness.port_of(TOPO, "jaku.com")
    ca = ca_path(NET)
    # The certificate is checked against the CA and the domain: deathstar.com's name fails here.
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        try:
            s.starttls(context=domain_context(ca, "deathstar.com"))
            raise AssertionError("jaku.com's certificate passed for deathstar.com")
        except ssl.SSLCertVerificationError as e:
            assert "Hostname mismatch" in str(e), e
    # And a context without the network's CA does not trust it.
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        try:
            s.starttls(context=ssl.create_default_context())
            raise AssertionError("a node's certificate passed without the network's CA")
        except ssl.SSLCertVerificationError:
            pass
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=domain_context(ca, "jaku.com"))
        assert code == 220
        version, cipher = s.sock.version(), s.sock.cipher()[0]
        s.ehlo("client.example")
        assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
        assert s.docmd("STARTTLS")[0] == 503
        s.sendmail("vader@deathstar.com", ["rey@jaku.com"], message("smtplib over TLS"))
    stored = wait_message(NET, "jaku.com", "rey", "smtplib over TLS").decode()
    assert f"(using {version} with cipher {cipher})" in stored, stored
    assert "(mailnet) with ESMTPS id" in stored, stored
    harness.wait_for(lambda: f"TLS started: {version} {cipher}" in smtp_log(NET, "jaku.com"), 15,
                     "the switch in smtp.log")
    harness.wait_for(lambda: f'event=tls client=127.0.0.1 tls="{version} {cipher}"' in node_log(NET, "jaku.com"),
                     15, "event=tls in node.log")
    assert f'tls="{version} {cipher}"' in [l for l in node_log(NET, "jaku.com").splitlines()
                                           if "event=accepted" in l][-1]
    # mailnet status counts it, and says which nodes offer STARTTLS.
    out = mailnet(NET, "status", "--json")
    assert out.returncode == 0, out.stderr
    import json
    nodes = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}
    harness.wait_for(lambda: {n["name"]: n for n in json.loads(mailnet(NET, "status", "--json").stdout)["nodes"]}
                     ["jaku.com"]["received_tls"] >= 1, 15, "status received_tls")
    assert nodes["jaku.com"]["tls"] == "optional", nodes
    table = mailnet(NET, "status").stdout
    assert "STARTTLS" in table and " TLS)" in table, table
    header, row = table.splitlines()[1], next(l for l in table.splitlines() if l.startswith("jaku.com "))
    assert row[header.index("RELAY TLS"):].split()[0] == "verify", table
    assert nodes["jaku.com"]["tls_relay"] == "verify", nodes


def test_openssl_s_client_verifies_the_node():
    port = harness.port_of(TOPO, "deathstar.com")
    ca = ca_path(NET)

    def s_client(name):
        return subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
                               "-CAfile", ca, "-verify_return_error", "-verify_hostname", name, "-brief",
                               "-nocommands", "-ign_eof"],
                              input="QUIT\r\n", capture_output=True, text=True, timeout=60)
    ok = s_client("deathstar.com")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verification: OK" in ok.stderr and "Verified peername: deathstar.com" in ok.stderr, ok.stderr
    assert "221 2.0.0" in ok.stdout, ok.stdout
    wrong = s_client("jaku.com")
    assert wrong.returncode != 0 and "hostname mismatch" in wrong.stderr.lower(), wrong.stderr


def test_swaks_sends_over_verified_tls():
    port = harness.port_of(TOPO, "jaku.com")
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "vader@deathstar.com", "--to",
                          "finn@jaku.com", "--helo", "client.example", "--tls", "--tls-verify", "--tls-ca-path",
                          ca_path(NET), "--header", "Subject: swaks over TLS"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "TLS started with cipher" in out.stdout, out.stdout
    stored = wait_message(NET, "jaku.com", "finn", "swaks over TLS").decode()
    assert "with ESMTPS" in stored, stored
    # Without the CA, swaks's verification fails and it sends nothing.
    untrusted = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "vader@deathstar.com", "--to",
                                "finn@jaku.com", "--tls", "--tls-verify", "--tls-ca-path", "/dev/null"],
                               capture_output=True, text=True, timeout=60)
    assert untrusted.returncode != 0, untrusted.stdout


def test_commands_pipelined_after_starttls_are_discarded():
    """CVE-2011-0411: a command sent in plain text in the same packet as
    STARTTLS must not run inside the TLS session."""
    port = harness.port_of(TOPO, "jaku.com")
    sock = harness.tracked(socket.create_connection(("127.0.0.1", port), timeout=30))

    def reply(conn):
        data = b""
        while True:  # up to the last line of a reply: "ddd " then CRLF
            chunk = conn.recv(4096)
            assert chunk, f"closed after {data!r}"
            data += chunk
            lines = data.split(b"\r\n")
            if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
                return data.decode()
    assert reply(sock).startswith("220 ")
    sock.sendall(b"EHLO client.example\r\n")
    assert "STARTTLS" in reply(sock)
    before = len(node_log(NET, "jaku.com"))
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@deathstar.com>\r\n")
    assert reply(sock).startswith("220 2.0.0")
    tls = harness.tracked(domain_context(ca_path(NET), "jaku.com").wrap_socket(sock))
    tls.sendall(b"EHLO client.example\r\n")
    ehlo = reply(tls)
    # The first reply inside TLS is the EHLO's: no reply to the injected MAIL came before it.
    assert ehlo.startswith("250-jaku.com greets client.example"), ehlo
    tls.sendall(b"RCPT TO:<rey@jaku.com>\r\n")
    rcpt = reply(tls)
    assert rcpt.startswith("503 5.5.1 Need MAIL before RCPT"), rcpt
    tls.sendall(b"QUIT\r\n")
    assert reply(tls).startswith("221")
    harness.wait_for(lambda: "event=tls_pipelining_discarded" in node_log(NET, "jaku.com")[before:], 15,
                     "the discard in node.log")
    transcript = smtp_log(NET, "jaku.com")
    assert "discarded 36 bytes sent after STARTTLS before the TLS handshake" in transcript, transcript[-1200:]
    assert "C: MAIL FROM:<injected@deathstar.com>" not in transcript


def test_a_missing_certificate_is_told_once_at_the_first_starttls_which_answers_454():
    """The node reads its certificate at the first STARTTLS, not at its start
    (an idle node of a large network never loads OpenSSL's contexts): one
    removed after `up` is found missing then, told once in node.log as
    tls_unavailable, and every STARTTLS gets 454 4.7.0; mail goes on in the clear."""
    topo = harness.two_domain_topology(name="tlslazy")
    with harness.Network(topo) as net:
        net.start()
        os.unlink(os.path.join(net.run_dir, "tls", "node.jaku.com.pem"))
        assert "tls_unavailable" not in node_log(net, "jaku.com")  # nothing was read yet
        for attempt in range(2):
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
                s.ehlo("client.example")
                assert s.has_extn("starttls")
                assert s.docmd("STARTTLS") == (454, b"4.7.0 TLS not available"), attempt
                s.ehlo("client.example")
                s.sendmail("vader@deathstar.com", ["rey@jaku.com"], message(f"clear {attempt}"))
        wait_message(net, "jaku.com", "rey", "clear 1")
        lines = [line for line in node_log(net, "jaku.com").splitlines() if "event=tls_unavailable" in line]
        assert len(lines) == 1, lines
        assert "node.jaku.com.pem" in lines[0], lines[0]


def test_policy_tls_required_and_off():
    topo = harness.two_domain_topology(name="tlspolicy")
    topo["domains"][0]["policy"] = {"tls": "required"}
    topo["domains"][1]["policy"] = {"tls": "off"}
    topo["defaults"]["timeouts"] = {"idle": "2s"}
    with harness.Network(topo) as net:
        net.start()
        ca = ca_path(net)
        # Deadlines hold inside TLS too: a silent client gets 421 4.4.2 at timeouts.idle.
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=60) as s:
            s.ehlo("client.example")
            s.starttls(context=domain_context(ca, "jaku.com"))
            started = time.monotonic()
            assert s.sock.recv(1000).startswith(b"421 4.4.2"), "no 421 from a TLS session left idle"
            assert time.monotonic() - started >= 1.5
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
            s.ehlo("client.example")
            assert s.docmd("MAIL FROM:<vader@deathstar.com>") == (530, b"5.7.0 Must issue a STARTTLS command first")
            s.starttls(context=domain_context(ca, "jaku.com"))
            s.ehlo("client.example")
            s.sendmail("vader@deathstar.com", ["rey@jaku.com"], message("required"))
        wait_message(net, "jaku.com", "rey", "required")
        import json
        nodes = {n["name"]: n for n in json.loads(mailnet(net, "status", "--json").stdout)["nodes"]}
        assert (nodes["jaku.com"]["tls"], nodes["deathstar.com"]["tls"]) == ("required", "off"), nodes
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "deathstar.com"), timeout=30) as s:
            s.ehlo("client.example")
            assert not s.has_extn("starttls")
            assert s.docmd("STARTTLS")[0] == 502
        # A node that requires TLS still gets mail from the other node (whose relay verifies it).
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "deathstar.com"), timeout=30) as s:
            s.sendmail("vader@deathstar.com", ["rey@jaku.com"], message("relayed to required"))
        assert b"with ESMTPS" in wait_message(net, "jaku.com", "rey", "relayed to required")
        # A "required" in a network without TLS is refused with the field named.
        topo["tls"] = False
        with tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
            path = os.path.join(tmp, "t.json")
            with open(path, "w") as f:
                import json
                json.dump(topo, f)
            out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True,
                                 timeout=30)
            assert out.returncode != 0 and "$.domains[0].policy.tls" in out.stderr, out.stderr


# ---- the relay and impostors -------------------------------------------------------

class TlsImpostor:
    """A server in a stopped node's port that offers STARTTLS with a
    certificate the network's CA did not issue for the domain, and would take
    any mail it is given (records every command)."""

    def __init__(self, port, certfile=None, keyfile=None, host="127.0.0.1"):
        # Without a certificate it says 220 to STARTTLS and then answers the
        # handshake with plain text: a TLS that is broken, not refused.
        self.ctx = None
        if certfile:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(certfile, keyfile)
        self.lock = threading.Lock()
        self.commands, self.handshakes, self.failed_handshakes = [], 0, []
        self.sessions = []  # per connection: whether it was inside TLS when MAIL came
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(8)
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._session, args=(conn,), daemon=True)
            with self.lock:
                self.threads.append(t)
            t.start()

    def _session(self, conn):
        conn.settimeout(30)
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 impostor ESMTP\r\n")
            while line := f.readline():
                verb = line[:4].upper()
                with self.lock:
                    self.commands.append(line)
                if verb == b"EHLO":
                    conn.sendall(b"250-impostor\r\n250 STARTTLS\r\n")
                elif verb == b"STAR":
                    conn.sendall(b"220 go ahead\r\n")
                    with self.lock:
                        self.handshakes += 1
                    if self.ctx is None:
                        conn.recv(4096)  # the ClientHello
                        conn.sendall(b"this is no TLS server\r\n")
                        return
                    try:
                        conn = self.ctx.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError) as e:
                        with self.lock:
                            self.failed_handshakes.append(str(e))
                        return
                    f = conn.makefile("rb")
                elif verb == b"MAIL":
                    with self.lock:
                        self.sessions.append(isinstance(conn, ssl.SSLSocket))
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    while (data := f.readline()) not in (b".\r\n", b""):
                        pass
                    conn.sendall(b"250 stolen\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def mails(self):
        with self.lock:
            return [c for c in self.commands if c[:4].upper() == b"MAIL"]

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            t.join(timeout=10)


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_relay_verifies_the_peer_and_an_impostor_gets_no_mail():
    topo = harness.two_domain_topology(name="impostor")
    deathstar = harness.port_of(topo, "deathstar.com")
    with harness.Network(topo) as net, tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
        net.start()
        jaku = harness.port_of(topo, "jaku.com")

        def send(subject):
            with smtplib.SMTP("127.0.0.1", jaku, timeout=30) as s:
                s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message(subject, "rey@jaku.com",
                                                                              "vader@deathstar.com"))

        def deferred_with(text, since):
            return [l for l in node_log(net, "jaku.com")[since:].splitlines()
                    if "event=deferred" in l and "4.7.5" in l and text in l]

        # The real node: verified TLS between the nodes.
        send("to the real node")
        stored = wait_message(net, "deathstar.com", "vader", "to the real node")
        assert b"(mailnet) with ESMTPS" in stored, stored
        harness.wait_for(lambda: any("event=relay_attempt" in l and 'tls="TLSv1.3' in l
                                     for l in node_log(net, "jaku.com").splitlines()), 15, "relay_attempt tls=")

        assert mailnet(net, "stop", "deathstar.com").returncode == 0
        harness.wait_for(lambda: port_free(deathstar), 30, "deathstar.com's port to be free")

        # 1. A plain server (no STARTTLS, no certificate).
        since = len(node_log(net, "jaku.com"))
        with harness.FakeSmtpPeer(deathstar, name="deathstar.com") as peer:
            send("plain impostor")
            harness.wait_for(lambda: len(deferred_with("deathstar.com does not offer STARTTLS", since)) >= 2, 60,
                             "two deferrals with 4.7.5 from the plain impostor")
            assert peer.connections >= 2
            assert peer.transactions == [] and peer.delivered() == [], peer.transactions
        harness.wait_for(lambda: port_free(deathstar), 30, "the port to be free")

        # 2. STARTTLS with a self-signed certificate for deathstar.com.
        cert, key = os.path.join(tmp, "self.pem"), os.path.join(tmp, "self.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=deathstar.com", "-addext", "subjectAltName=DNS:deathstar.com,IP:127.0.0.1",
                        "-days", "2", "-keyout", key, "-out", cert], capture_output=True, check=True, timeout=60)
        # 3. STARTTLS with a certificate from the network's CA, but another domain's (jaku.com's).
        tls = os.path.join(net.run_dir, "tls")
        for what, (c, k) in (("certificate verification failed: self-signed certificate", (cert, key)),
                             ("certificate verification failed: hostname mismatch",
                              (os.path.join(tls, "node.jaku.com.pem"), os.path.join(tls, "node.jaku.com.key")))):
            since = len(node_log(net, "jaku.com"))
            impostor = TlsImpostor(deathstar, c, k)
            try:
                assert mailnet(net, "flush", "jaku.com").returncode == 0
                harness.wait_for(lambda: deferred_with(what, since), 60, f"a deferral with 4.7.5 ({what})")
                assert impostor.handshakes >= 1
                assert impostor.mails() == [], impostor.commands
            finally:
                impostor.close()
            harness.wait_for(lambda: port_free(deathstar), 30, "the port to be free")

        out = mailnet(net, "queue", "jaku.com")
        assert "4.7.5" in out.stdout, out.stdout
        # The real node is back: everything that waited arrives there.
        assert mailnet(net, "start", "deathstar.com").returncode == 0
        assert mailnet(net, "flush", "jaku.com").returncode == 0
        stored = wait_message(net, "deathstar.com", "vader", "plain impostor", timeout=60)
        assert b"with ESMTPS" in stored


def ca_signed(net, tmp, stem, san):
    """A certificate the network's CA signs (with its key from run/<name>/tls),
    naming only san: what a stolen CA key, or a node with the wrong names, would show."""
    tls = os.path.join(net.run_dir, "tls")
    cert, key = os.path.join(tmp, stem + ".pem"), os.path.join(tmp, stem + ".key")
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=" + stem, "-addext", "subjectAltName=" + san, "-days", "2",
                    "-CA", os.path.join(tls, "ca.pem"), "-CAkey", os.path.join(tls, "ca.key"),
                    "-keyout", key, "-out", cert], capture_output=True, check=True, timeout=60)
    return cert, key


def test_relay_accepts_the_domain_or_its_mail_host_and_nothing_else():
    """The relay reached deathstar.com through its SRV target mx.deathstar.com:
    a certificate from the network's CA naming that host alone is accepted; one
    naming another host of the domain (or the address alone) is not."""
    topo = harness.two_domain_topology(name="tlsnames")
    deathstar = harness.port_of(topo, "deathstar.com")
    with harness.Network(topo) as net, tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
        net.start()
        jaku = harness.port_of(topo, "jaku.com")
        assert mailnet(net, "stop", "deathstar.com").returncode == 0
        harness.wait_for(lambda: port_free(deathstar), 30, "deathstar.com's port to be free")
        with smtplib.SMTP("127.0.0.1", jaku, timeout=30) as s:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                       message("names", "rey@jaku.com", "vader@deathstar.com"))
        for san in ("DNS:www.deathstar.com,IP:127.0.0.1", "DNS:mx.jaku.com,DNS:deathstar.com.evil"):
            since = len(node_log(net, "jaku.com"))
            impostor = TlsImpostor(deathstar, *ca_signed(net, tmp, "other", san))
            try:
                assert mailnet(net, "flush", "jaku.com").returncode == 0
                harness.wait_for(lambda: [l for l in node_log(net, "jaku.com")[since:].splitlines()
                                          if "event=deferred" in l and "4.7.5" in l and "hostname mismatch" in l
                                          and "names neither deathstar.com nor mx.deathstar.com" in l],
                                 60, f"a 4.7.5 deferral for a certificate naming {san}")
                assert impostor.handshakes >= 1 and impostor.mails() == [], impostor.commands
            finally:
                impostor.close()
            harness.wait_for(lambda: port_free(deathstar), 30, "the port to be free")
        # The mail host's name alone: that is who the resolver sent the relay to.
        impostor = TlsImpostor(deathstar, *ca_signed(net, tmp, "mxonly", "DNS:mx.deathstar.com"))
        try:
            assert mailnet(net, "flush", "jaku.com").returncode == 0
            harness.wait_for(lambda: impostor.mails(), 60, "the mail given to the certificate of mx.deathstar.com")
            assert impostor.sessions == [True], impostor.sessions
            harness.wait_for(lambda: any("event=relayed" in l for l in node_log(net, "jaku.com").splitlines()), 30,
                             "relayed")
        finally:
            impostor.close()


def test_opportunistic_relay_falls_back_to_plain_text_when_the_handshake_fails():
    """policy.tls_relay "opportunistic": a peer whose TLS is broken (220 to
    STARTTLS, then no TLS) gets the mail on a second connection in plain text,
    logged as tls_failed with fallback=plain; under "verify" the same peer gets
    nothing (4.7.5, fallback=no)."""
    topo = harness.two_domain_topology(name="tlsfallback")
    topo["domains"][0]["policy"] = {"tls_relay": "opportunistic"}  # jaku.com
    jaku, deathstar = harness.port_of(topo, "jaku.com"), harness.port_of(topo, "deathstar.com")
    with harness.Network(topo) as net:
        net.start()
        for domain, port in (("jaku.com", jaku), ("deathstar.com", deathstar)):
            assert mailnet(net, "stop", domain).returncode == 0
            harness.wait_for(lambda: port_free(port), 30, f"{domain}'s port to be free")
        # deathstar.com relays under "verify" to a broken jaku.com: nothing.
        assert mailnet(net, "start", "deathstar.com").returncode == 0
        broken = TlsImpostor(jaku)
        try:
            with smtplib.SMTP("127.0.0.1", deathstar, timeout=30) as s:
                s.sendmail("vader@deathstar.com", ["rey@jaku.com"], message("verify stays"))
            harness.wait_for(lambda: [l for l in node_log(net, "deathstar.com").splitlines()
                                      if "event=deferred" in l and "4.7.5 TLS with jaku.com failed" in l], 60,
                             "a 4.7.5 deferral under verify")
            tls_failed = [l for l in node_log(net, "deathstar.com").splitlines() if "event=tls_failed" in l]
            assert tls_failed and all("fallback=no" in l for l in tls_failed), tls_failed
            assert broken.handshakes >= 1 and broken.mails() == [], broken.commands
        finally:
            broken.close()
        assert mailnet(net, "stop", "deathstar.com").returncode == 0
        harness.wait_for(lambda: port_free(deathstar), 30, "deathstar.com's port to be free")
        # jaku.com relays under "opportunistic" to a broken deathstar.com: plain text on a new connection.
        assert mailnet(net, "start", "jaku.com").returncode == 0
        broken = TlsImpostor(deathstar)
        try:
            with smtplib.SMTP("127.0.0.1", jaku, timeout=30) as s:
                s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                           message("falls back", "rey@jaku.com", "vader@deathstar.com"))
            harness.wait_for(lambda: broken.mails(), 60, "the mail in plain text")
            assert broken.sessions == [False], broken.sessions
            assert broken.handshakes == 1, broken.commands  # the second connection sends no STARTTLS
            harness.wait_for(lambda: any("event=relayed" in l for l in node_log(net, "jaku.com").splitlines()), 30,
                             "relayed")
            log = node_log(net, "jaku.com")
            failed = [l for l in log.splitlines() if "event=tls_failed" in l]
            assert len(failed) == 1 and "fallback=plain" in failed[0] and "domain=deathstar.com" in failed[0], failed
            assert "event=deferred" not in log, log
        finally:
            broken.close()


def free_address_on_25(prefix):
    for n in range(10, 250):
        host = f"{prefix}.{n}"
        s = socket.socket()
        try:
            s.bind((host, 25))
            return host
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError(f"no {prefix}.x address with port 25 free")


def test_impostor_on_a_stopped_nodes_own_address_and_port_25_gets_no_mail():
    """Each domain on its own loopback address and port 25 (found by MX and A,
    no SRV): a process that takes a stopped node's address and port with
    another domain's certificate from the network's CA gets no mail; the real
    node gets it once it is back."""
    if os.geteuid() != 0:
        print("SKIP test_impostor_on_a_stopped_nodes_own_address_and_port_25_gets_no_mail: "
              "needs root to bind port 25 on 127.0.6.x", flush=True)
        return
    jaku = free_address_on_25("127.0.6")
    hold = socket.socket()
    hold.bind((jaku, 25))  # held while the second is picked
    try:
        deathstar = free_address_on_25("127.0.6")
    finally:
        hold.close()
    topo = {
        "name": "tlsown",
        "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
        "web": False,
        "defaults": {"retry": {"first": "200ms", "max": "1s", "give_up_after": "1m"}},
        "domains": [{"name": "jaku.com", "listen": f"{jaku}:25", "users": ["rey"]},
                    {"name": "deathstar.com", "listen": f"{deathstar}:25", "users": ["vader"]}],
    }
    with harness.Network(topo) as net:
        net.start()
        assert mailnet(net, "stop", "deathstar.com").returncode == 0

        def free():
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((deathstar, 25))
                return True
            except OSError:
                return False
            finally:
                s.close()
        harness.wait_for(free, 30, f"{deathstar}:25 to be free")
        tls = os.path.join(net.run_dir, "tls")
        impostor = TlsImpostor(25, os.path.join(tls, "node.jaku.com.pem"), os.path.join(tls, "node.jaku.com.key"),
                               host=deathstar)
        try:
            with smtplib.SMTP(jaku, 25, timeout=30) as s:
                s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                           message("own address", "rey@jaku.com", "vader@deathstar.com"))
            harness.wait_for(lambda: len([l for l in node_log(net, "jaku.com").splitlines()
                                          if "event=deferred" in l and "4.7.5" in l and "hostname mismatch" in l]) >= 2,
                             60, "two 4.7.5 deferrals")
            assert impostor.handshakes >= 2 and impostor.mails() == [], impostor.commands
        finally:
            impostor.close()
        harness.wait_for(free, 30, f"{deathstar}:25 to be free")
        assert mailnet(net, "start", "deathstar.com").returncode == 0
        assert mailnet(net, "flush", "jaku.com").returncode == 0
        stored = wait_message(net, "deathstar.com", "vader", "own address", timeout=60)
        assert f"from jaku.com ([{jaku}])".encode() in stored and b"with ESMTPS" in stored, stored


def test_relay_resumes_the_tls_session_on_its_next_connection():
    """Two relayed messages over two connections: the second connection
    resumes the session of the first (resumed=yes on both sides); with
    MAILNET_TLS_RESUMPTION=off both handshakes are full ones."""
    for env, second in ((None, "yes"), ({"MAILNET_TLS_RESUMPTION": "off"}, "no")):
        topo = harness.two_domain_topology(name="resume")
        with harness.Network(topo) as net:
            net.start(env=env)
            jaku = harness.port_of(topo, "jaku.com")

            def server_tls():  # deathstar.com's handshakes: (session id, resumed)
                return re.findall(r"id=(\S+) event=tls client=\S+ tls=\"[^\"]*\" resumed=(yes|no)",
                                  node_log(net, "deathstar.com"))

            def relay_tls():  # jaku.com's relay handshakes to deathstar.com
                return re.findall(r"event=tls domain=deathstar\.com to=\S+ tls=\"TLSv1\.[23] [^\"]*\" resumed=(yes|no)",
                                  node_log(net, "jaku.com"))

            for n in (1, 2):
                with smtplib.SMTP("127.0.0.1", jaku, timeout=30) as s:
                    s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                               message(f"resume {n}", "rey@jaku.com", "vader@deathstar.com"))
                stored = wait_message(net, "deathstar.com", "vader", f"resume {n}")
                assert b"with ESMTPS" in stored, stored
                harness.wait_for(lambda: len(relay_tls()) >= n and len(server_tls()) >= n, 15, f"handshake {n} logged")
                if n == 1:
                    # The relay keeps the connection a few seconds for more mail:
                    # the next message must come over a new one, so wait for this one's end.
                    first = server_tls()[0][0]
                    harness.wait_for(lambda: f"id={first} event=disconnect" in node_log(net, "deathstar.com"), 30,
                                     "the relay's first connection to close")
            relay, server = relay_tls(), server_tls()
            assert len(relay) == 2 and len(server) == 2, (relay, server)
            assert server[0][0] != server[1][0]  # two connections
            assert relay[0] == "no" and server[0][1] == "no", (relay, server)  # nothing to resume yet
            assert relay[1] == second and server[1][1] == second, (env, relay, server)


if __name__ == "__main__":
    for tool in ("openssl", "swaks"):
        if not subprocess.run(["which", tool], capture_output=True).returncode == 0:
            raise SystemExit(f"missing {tool}: run scripts/install-deps.sh")
    # The first four share this network; the others make their own.
    TOPO = harness.two_domain_topology(name="tls")
    with harness.Network(TOPO) as NET:
        NET.start()
        code = harness.run_tests(exit=False, tests=[
            test_smtplib_starttls_checks_the_ca_and_the_domain_and_received_says_esmtps,
            test_openssl_s_client_verifies_the_node,
            test_swaks_sends_over_verified_tls,
            test_commands_pipelined_after_starttls_are_discarded,
            test_up_makes_a_private_ca_kept_across_ups_and_new_with_fresh,
            test_policy_tls_required_and_off,
            test_a_missing_certificate_is_told_once_at_the_first_starttls_which_answers_454,
            test_relay_verifies_the_peer_and_an_impostor_gets_no_mail,
            test_relay_accepts_the_domain_or_its_mail_host_and_nothing_else,
            test_opportunistic_relay_falls_back_to_plain_text_when_the_handshake_fails,
            test_impostor_on_a_stopped_nodes_own_address_and_port_25_gets_no_mail,
            test_relay_resumes_the_tls_session_on_its_next_connection,
        ])
    sys.exit(code)
