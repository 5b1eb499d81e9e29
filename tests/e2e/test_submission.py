"""Passwords and the submission listener, through real clients: the
passwords file (0600 under umask 000, kept across restarts, new with
--fresh) and `mailnet users`; Python's smtplib with starttls(context with
the network's CA) and login; swaks --tls --auth PLAIN and LOGIN; wrong
passwords (535 5.7.8 with a growing delay), AUTH before STARTTLS (538),
MAIL FROM another user (553), relay to another domain after AUTH;
`mailnet send` through the submission listener."""
import json
import os
import re
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(net, *args, timeout=60):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=timeout)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def node_log(net, domain):
    return read(os.path.join(net.domain_dir(domain), "node.log"))


def submission_topology(name="sub"):
    topo = harness.two_domain_topology(name)
    sub_port, = harness.free_tcp_ports(1)
    jaku = topo["domains"][0]
    jaku["submission"] = f"127.0.0.1:{sub_port}"
    jaku["users"] = ["rey", {"name": "finn", "password": "finn's secret"}, "obiwan"]
    return topo


def passwords_of(net):
    """{address: password} from run/<name>/passwords."""
    out = {}
    for line in read(os.path.join(net.run_dir, "passwords")).splitlines():
        if line and not line.startswith("#"):
            address, rest = line.split(":", 1)
            assert rest.startswith("{PLAIN}"), line
            out[address] = rest[len("{PLAIN}"):]
    return out


def restart(net, *extra_args):
    """Stops the network and brings it up again; waits for the new launcher's
    "is up" (not the old one's, which the harness still holds)."""
    net.stop()
    with net.lock:
        net.lines.clear()
    net.start(extra_args=extra_args)


def test_passwords_file_private_kept_and_shown_by_users():
    topo = submission_topology("pw")
    net = harness.Network(topo)
    try:
        # umask 000 for the launcher: the file's mode must not come from it.
        net.start(preexec_fn=lambda: os.umask(0))
        path = os.path.join(net.run_dir, "passwords")
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        first = passwords_of(net)
        assert first["finn@jaku.com"] == "finn's secret", first
        assert re.fullmatch(r"[A-Za-z0-9]{20}", first["rey@jaku.com"]), first
        assert len(set(first.values())) == len(first) == 5, first

        out = mailnet(net, "users", "jaku.com")
        assert out.returncode == 0, out.stdout + out.stderr
        assert re.search(r"^rey@jaku\.com +" + first["rey@jaku.com"] + r" +\(generated\)$", out.stdout, re.M), out.stdout
        assert re.search(r"^finn@jaku\.com +finn's secret +\(topology\)$", out.stdout, re.M), out.stdout
        assert "submission: " + topo["domains"][0]["submission"] in out.stdout, out.stdout
        assert "vader" not in out.stdout
        bad = mailnet(net, "users", "nowhere.com")
        assert bad.returncode == 1 and "no domain \"nowhere.com\"" in bad.stderr, bad.stderr

        # Kept across a restart of the network; new with --fresh.
        restart(net)
        assert passwords_of(net) == first
        restart(net, "--fresh")
        fresh = passwords_of(net)
        assert fresh["finn@jaku.com"] == "finn's secret"
        assert fresh["rey@jaku.com"] != first["rey@jaku.com"], (fresh, first)
    finally:
        net.cleanup()


def test_submission_address_checked_like_the_main_one():
    # A clash with another listener, and an address that is not loopback: validate says where.
    topo = submission_topology("clash")
    topo["domains"][0]["submission"] = topo["domains"][1]["listen"]
    net = harness.Network(topo)
    try:
        out = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode != 0 and "$.domains[1].listen: duplicate address" in out.stderr and \
            "$.domains[0].submission" in out.stderr, out.stdout + out.stderr
        topo["domains"][0]["submission"] = "192.0.2.1:1587"
        with open(net.topology_file, "w") as f:
            json.dump(topo, f)
        out = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode != 0 and "$.domains[0].submission: " in out.stderr, out.stdout + out.stderr
    finally:
        net.cleanup()

    # A port another server holds: up fails and names the domain and the address.
    topo = submission_topology("taken")
    port = int(topo["domains"][0]["submission"].rsplit(":", 1)[1])
    busy = socket.socket()
    net = harness.Network(topo)
    try:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        net.start(wait_ready=False)
        assert net.proc.wait(timeout=120) != 0
        harness.wait_for(lambda: "failed to start" in net.output(), 30, "the launcher's verdict read")
        line = next((l for l in net.output().splitlines() if "failed to start" in l), "")
        assert "jaku.com" in line and f"cannot listen on 127.0.0.1:{port}" in line, net.output()
    finally:
        busy.close()
        net.cleanup()


# ---- one network for the tests below ---------------------------------------

NET = None


def sub_port():
    return int(NET.topology["domains"][0]["submission"].rsplit(":", 1)[1])


def ca_path():
    out = mailnet(NET, "ca")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


class DomainContext(ssl.SSLContext):
    """Trusts the network's CA only and checks the certificate against
    `domain`, whatever address the client connected to."""

    domain = None

    def wrap_socket(self, sock, server_hostname=None, **kw):
        return super().wrap_socket(sock, server_hostname=self.domain, **kw)


def domain_context(domain="jaku.com"):
    ctx = DomainContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_path())
    ctx.domain = domain
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def submission(source="127.0.0.1", tls=True):
    """An smtplib client of jaku.com's submission listener, from `source`
    (another loopback address keeps a test's AUTH failures its own)."""
    smtp = smtplib.SMTP("127.0.0.1", sub_port(), timeout=60, source_address=(source, 0))
    smtp.ehlo("client.example")
    if tls:
        smtp.starttls(context=domain_context())
        smtp.ehlo("client.example")
    return smtp


def message(subject, sender, to):
    return f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nsubmitted\r\n"


def wait_message(domain, user, subject, timeout=30):
    def found():
        return [m for m in NET.messages(domain, user) if f"Subject: {subject}".encode() in m]
    harness.wait_for(lambda: found(), timeout, f"{subject!r} in {user}@{domain}")
    return found()[0].decode(errors="replace")


def test_smtplib_starttls_login_relays_to_another_domain():
    smtp = submission()
    try:
        assert "auth" in smtp.esmtp_features, smtp.esmtp_features
        assert set(smtp.esmtp_features["auth"].upper().split()) == {"PLAIN", "LOGIN"}, smtp.esmtp_features
        code, text = smtp.login("finn@jaku.com", "finn's secret")
        assert code == 235 and text.startswith(b"2.7.0"), (code, text)
        refused = smtp.sendmail("finn@jaku.com", ["vader@deathstar.com", "rey@jaku.com"],
                                message("smtplib submission", "finn@jaku.com", "vader@deathstar.com"))
        assert refused == {}, refused
    finally:
        smtp.quit()
    relayed = wait_message("deathstar.com", "vader", "smtplib submission")
    local = wait_message("jaku.com", "rey", "smtplib submission")
    # The submission hop says ESMTPSA (RFC 3848), in both copies.
    for stored in (relayed, local):
        assert re.search(r"by jaku\.com \(mailnet\) with ESMTPSA id", stored), stored
    log = node_log(NET, "jaku.com")
    assert "event=auth" in log and "finn@jaku.com" in log, log[-2000:]


def test_swaks_tls_auth_plain_and_login():
    rey = passwords_of(NET)["rey@jaku.com"]
    for mechanism in ("PLAIN", "LOGIN"):
        subject = f"swaks auth {mechanism}"
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{sub_port()}", "--from", "rey@jaku.com",
                              "--to", "tarkin@deathstar.com", "--tls", "--tls-verify", "--tls-ca-path", ca_path(),
                              "--tls-sni", "jaku.com", "--auth", mechanism, "--auth-user", "rey@jaku.com",
                              "--auth-password", rey, "--header", f"Subject: {subject}"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "235 2.7.0" in out.stdout, out.stdout
        stored = wait_message("deathstar.com", "tarkin", subject)
        assert "with ESMTPSA" in stored, stored
    # The password stays out of the transcript, in clear and in base64.
    import base64
    transcript = read(os.path.join(NET.domain_dir("jaku.com"), "smtp.log"))
    assert rey not in transcript
    assert base64.b64encode(rey.encode()).decode() not in transcript
    assert base64.b64encode(b"\0rey@jaku.com\0" + rey.encode()).decode() not in transcript
    assert "<redacted>" in transcript or "AUTH response redacted" in transcript


def auth_plain(smtp, user, password):
    """One AUTH PLAIN (smtplib's login() tries each mechanism in turn)."""
    import base64
    return smtp.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())


def test_wrong_password_535_with_a_growing_delay_counted():
    source = "127.0.0.3"  # failures are counted per client address as well: this test's own
    took = []
    smtp = submission(source)
    try:
        for _ in range(4):
            started = time.monotonic()
            code, text = auth_plain(smtp, "rey@jaku.com", "not the password")
            took.append(time.monotonic() - started)
            assert (code, text) == (535, b"5.7.8 Authentication credentials invalid"), (code, text)
    finally:
        smtp.close()
    # 250 ms, 500 ms, 1 s, 2 s by design: asserted only as growing, generously.
    assert took[-1] > took[0] + 0.5 and took[-1] >= 1.0 and took[2] > took[0], took
    # Per client address: a new connection from it starts where the last left off.
    smtp = submission(source)
    try:
        started = time.monotonic()
        code, _ = auth_plain(smtp, "rey@jaku.com", "wrong again")
        again = time.monotonic() - started
        assert code == 535, code
        assert again >= 1.5, (again, took)  # 4 s by design (the fifth from the address)
        # The right password still works, and forgets the address's failures.
        code, _ = auth_plain(smtp, "rey@jaku.com", passwords_of(NET)["rey@jaku.com"])
        assert code == 235, code
    finally:
        smtp.close()
    print(f"  535 delays (s): {[round(t, 2) for t in took]}, then {again:.2f} on a new connection", flush=True)
    log = node_log(NET, "jaku.com")
    assert re.search(r"event=auth_failed .*client=127\.0\.0\.3", log), log[-2000:]
    status = json.loads(mailnet(NET, "status", "--json").stdout)
    jaku = [n for n in status["nodes"] if n["name"] == "jaku.com"][0]
    assert jaku["auth_failures"] >= 5 and jaku["submission"] == f"127.0.0.1:{sub_port()}", jaku
    table = mailnet(NET, "status").stdout
    assert re.search(rf"^jaku\.com: submission on 127\.0\.0\.1:{sub_port()}, \d+ failed AUTHs since up$", table, re.M), table


def test_auth_before_starttls_538_mail_before_auth_530_and_port_25_502():
    smtp = submission(tls=False)
    try:
        assert "auth" not in smtp.esmtp_features, smtp.esmtp_features  # not offered in plain text
        assert "starttls" in smtp.esmtp_features
        code, text = smtp.docmd("AUTH", "PLAIN AHJleUBqYWt1LmNvbQB4")
        assert (code, text[:6]) == (538, b"5.7.11"), (code, text)
        code, text = smtp.docmd("MAIL", "FROM:<rey@jaku.com>")
        assert code == 530 and b"STARTTLS" in text, (code, text)
        smtp.starttls(context=domain_context())
        smtp.ehlo("client.example")
        code, text = smtp.docmd("MAIL", "FROM:<rey@jaku.com>")
        assert (code, text) == (530, b"5.7.0 Authentication required"), (code, text)
    finally:
        smtp.close()
    # The port-25 listener neither offers nor takes AUTH, in TLS or not.
    port = harness.port_of(NET.topology, "jaku.com")
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
    try:
        smtp.ehlo("client.example")
        smtp.starttls(context=domain_context())
        smtp.ehlo("client.example")
        assert "auth" not in smtp.esmtp_features, smtp.esmtp_features
        code, _ = smtp.docmd("AUTH", "PLAIN AHJleUBqYWt1LmNvbQB4")
        assert code == 502, code
    finally:
        smtp.close()


def test_mail_from_another_sender_553():
    smtp = submission()
    try:
        smtp.login("rey", passwords_of(NET)["rey@jaku.com"])  # the bare user name: this domain's
        for sender in ("finn@jaku.com", "vader@deathstar.com", ""):
            code, text = smtp.docmd("MAIL", f"FROM:<{sender}>")
            assert code == 553 and text.startswith(b"5.7.1"), (sender, code, text)
        code, _ = smtp.docmd("MAIL", "FROM:<postmaster@jaku.com>")
        assert code == 250, code
        smtp.rset()
        code, _ = smtp.docmd("MAIL", "FROM:<REY@jaku.com>")
        assert code == 250, code
    finally:
        smtp.close()


def test_mailnet_send_uses_the_submission_listener():
    out = mailnet(NET, "send", "--from", "obiwan@jaku.com", "--to", "vader@deathstar.com", "--subject",
                  "mailnet send auth", "--body", "hello", "-v")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"connected to 127.0.0.1:{sub_port()}" in out.stderr, out.stderr
    assert "certificate verified for jaku.com" in out.stderr and "235 2.7.0" in out.stderr, out.stderr
    assert passwords_of(NET)["obiwan@jaku.com"] not in out.stderr  # -v does not show the credentials
    stored = wait_message("deathstar.com", "vader", "mailnet send auth")
    assert "with ESMTPSA" in stored, stored
    bad = mailnet(NET, "send", "--from", "obiwan@jaku.com", "--to", "vader@deathstar.com", "--subject", "x",
                  "--body", "x", "--password", "wrong")
    assert bad.returncode == 1 and "535 5.7.8" in bad.stderr, bad.stdout + bad.stderr


TESTS = [
    test_passwords_file_private_kept_and_shown_by_users,
    test_submission_address_checked_like_the_main_one,
    test_smtplib_starttls_login_relays_to_another_domain,
    test_swaks_tls_auth_plain_and_login,
    test_wrong_password_535_with_a_growing_delay_counted,
    test_auth_before_starttls_538_mail_before_auth_530_and_port_25_502,
    test_mail_from_another_sender_553,
    test_mailnet_send_uses_the_submission_listener,
]


def main():
    global NET
    NET = harness.Network(submission_topology())
    try:
        NET.start()
        code = harness.run_tests(TESTS, exit=False)
    finally:
        NET.cleanup()
    sys.exit(code)


if __name__ == "__main__":
    main()
