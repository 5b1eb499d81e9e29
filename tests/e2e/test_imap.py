"""IMAP and POP3 through Dovecot, seen through real clients: imaplib and
poplib log in after STARTTLS verified against the network's CA, list and
fetch a message whose attachment comes back byte-identical; IMAP IDLE sees
mail delivered while the client waits; mutt over IMAP in tmux lists the
inbox; `mailnet kill/start/restart imap` and its state in status --json and
GET /api/v1/network; a wrong password refused; a missing Dovecot named with
what to install; topology errors naming the field."""
import email
import email.policy
import imaplib
import json
import os
import poplib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

# Bytes no text transformation leaves alone: every byte value, CR and LF among them.
ATTACHMENT = bytes(range(256)) * 40 + b"\r\n.\r\nend\n"


def mailnet(net, *args, timeout=60, env=None):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env} if env else None)


def imap_topology(name):
    topo = harness.two_domain_topology(name)
    imap_port, pop3_port = harness.free_tcp_ports(2)
    topo["imap"] = {"listen": f"127.0.0.1:{imap_port}"}
    topo["pop3"] = {"listen": f"127.0.0.1:{pop3_port}"}
    topo["domains"][0]["users"] = ["rey", {"name": "finn", "password": "finn's secret"}, "obiwan"]
    return topo


def port(topo, protocol):
    return int(topo[protocol]["listen"].rsplit(":", 1)[1])


def passwords_of(net):
    out = {}
    with open(os.path.join(net.run_dir, "passwords")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                address, rest = line.rstrip("\n").split(":", 1)
                out[address] = rest[len("{PLAIN}"):]
    return out


def ca_context(net):
    """Trusts the network's CA only, and checks the name (the address connected to)."""
    out = mailnet(net, "ca")
    assert out.returncode == 0, out.stdout + out.stderr
    ctx = ssl.create_default_context(cafile=out.stdout.strip())
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def send(net, sender, to, subject, attach=None):
    args = ["send", "--from", sender, "--to", to, "--subject", subject, "--body", "see the attachment"]
    if attach:
        args += ["--attach", attach]
    out = mailnet(net, *args)
    assert out.returncode == 0, out.stdout + out.stderr


def imap_login(net, user, password):
    client = imaplib.IMAP4("127.0.0.1", port(net.topology, "imap"), timeout=20)
    client.starttls(ssl_context=ca_context(net))
    client.login(user, password)
    return client


def attachment_of(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [p for p in msg.iter_attachments()]
    assert len(parts) == 1, msg
    return parts[0].get_filename(), parts[0].get_payload(decode=True)


def dovecot_processes(net):
    """Pids of this network's Dovecot processes (their titles carry the instance name)."""
    found = []
    marker = f"dovecot-mailnet-{net.topology['name']}/"
    config = os.path.join(net.run_dir, "imap", "dovecot.conf")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if (cmd.startswith(marker) or config in cmd) and harness.pid_alive(int(entry)):
            found.append(int(entry))
    return found


def status_node(net, name):
    out = mailnet(net, "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return next(n for n in json.loads(out.stdout)["nodes"] if n["name"] == name)


def test_imaplib_and_poplib_fetch_the_attachment_after_starttls():
    with harness.Network(imap_topology("imapfetch")) as net, tempfile.TemporaryDirectory() as tmp:
        net.start()
        path = os.path.join(tmp, "blob.bin")
        with open(path, "wb") as f:
            f.write(ATTACHMENT)
        send(net, "vader@deathstar.com", "rey@jaku.com", "The plans", attach=path)
        net.wait_messages("jaku.com", "rey", 1)
        password = passwords_of(net)["rey@jaku.com"]
        users = mailnet(net, "users", "jaku.com").stdout
        assert re.search(r"^rey@jaku\.com +" + re.escape(password) + " ", users, re.M), users
        assert f"imap: {net.topology['imap']['listen']} (STARTTLS, login user@jaku.com)" in users, users

        client = imap_login(net, "rey@jaku.com", password)
        try:
            assert client.sock.version() in ("TLSv1.2", "TLSv1.3"), client.sock.version()
            typ, data = client.select("INBOX", readonly=True)
            assert typ == "OK" and data == [b"1"], (typ, data)
            typ, data = client.search(None, "ALL")
            assert data == [b"1"], data
            typ, data = client.fetch("1", "(RFC822)")
            assert typ == "OK", (typ, data)
            name, payload = attachment_of(data[0][1])
            assert name == "blob.bin" and payload == ATTACHMENT
            # The login is the address, whatever its case.
        finally:
            client.logout()
        again = imap_login(net, "Rey@JAKU.com", password)
        again.logout()

        pop = poplib.POP3("127.0.0.1", port(net.topology, "pop3"), timeout=20)
        try:
            pop.stls(context=ca_context(net))
            pop.user("finn@jaku.com")
            pop.pass_("finn's secret")  # a password written in the topology
            count, _ = pop.stat()
            assert count == 0, count
        finally:
            pop.quit()
        pop = poplib.POP3("127.0.0.1", port(net.topology, "pop3"), timeout=20)
        try:
            pop.stls(context=ca_context(net))
            pop.user("rey@jaku.com")
            pop.pass_(password)
            resp, listing, _ = pop.list()
            assert len(listing) == 1, listing
            resp, lines, _ = pop.retr(1)
            name, payload = attachment_of(b"\r\n".join(lines) + b"\r\n")
            assert name == "blob.bin" and payload == ATTACHMENT
        finally:
            pop.quit()

        # A client that trusts another CA refuses the server: the check is real.
        other = ssl.create_default_context()
        client = imaplib.IMAP4("127.0.0.1", port(net.topology, "imap"), timeout=20)
        try:
            client.starttls(ssl_context=other)
            raise AssertionError("STARTTLS verified a certificate against the system's CAs")
        except ssl.SSLCertVerificationError:
            pass
        finally:
            try:
                client.shutdown()
            except OSError:
                pass  # the failed handshake closed it

        # Plain text on loopback: Dovecot counts 127.0.0.1 as a secure
        # connection (disable_plaintext_auth applies to other addresses), so
        # it takes the login without TLS (README: IMAP and POP3).
        plain = imaplib.IMAP4("127.0.0.1", port(net.topology, "imap"), timeout=20)
        try:
            assert "LOGINDISABLED" not in plain.capabilities and "STARTTLS" in plain.capabilities, plain.capabilities
            plain.login("rey@jaku.com", password)
        finally:
            plain.logout()


def test_wrong_password_and_unknown_user_are_refused():
    with harness.Network(imap_topology("imapbad")) as net:
        net.start()
        for user, password in (("rey@jaku.com", "not the password"), ("nobody@jaku.com", "x"),
                               ("finn@jaku.com", "FINN'S SECRET")):
            client = imaplib.IMAP4("127.0.0.1", port(net.topology, "imap"), timeout=30)
            client.starttls(ssl_context=ca_context(net))
            try:
                client.login(user, password)
                raise AssertionError(f"IMAP login of {user} with a wrong password succeeded")
            except imaplib.IMAP4.error as e:
                assert "AUTHENTICATIONFAILED" in str(e) or "Authentication failed" in str(e), e
            finally:
                client.shutdown()
        pop = poplib.POP3("127.0.0.1", port(net.topology, "pop3"), timeout=30)
        try:
            pop.stls(context=ca_context(net))
            pop.user("rey@jaku.com")
            try:
                pop.pass_("not the password")
                raise AssertionError("POP3 login with a wrong password succeeded")
            except poplib.error_proto as e:
                assert b"-ERR" in e.args[0], e
        finally:
            pop.close()
        # Dovecot logs the failure, never the password.
        log = open(os.path.join(net.run_dir, "imap", "dovecot.log"), errors="replace").read()
        assert "not the password" not in log


def test_idle_sees_mail_delivered_while_connected():
    with harness.Network(imap_topology("imapidle")) as net:
        net.start()
        client = imap_login(net, "finn@jaku.com", "finn's secret")
        try:
            client.select("INBOX")
            tag = client._new_tag().decode()
            client.send(f"{tag} IDLE\r\n".encode())
            assert client.readline().startswith(b"+"), "no continuation for IDLE"
            send(net, "vader@deathstar.com", "finn@jaku.com", "While you wait")
            client.sock.settimeout(30)  # the deadline: the line comes as soon as Dovecot sees the file
            line = client.readline()
            while line and b"EXISTS" not in line:
                line = client.readline()
            assert line.strip() == b"* 1 EXISTS", line
            client.send(b"DONE\r\n")
            while not client.readline().startswith(tag.encode()):
                pass
            typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert b"While you wait" in data[0][1], data
        finally:
            client.logout()


def test_mutt_over_imap_in_tmux_lists_the_inbox():
    if not shutil.which("mutt") or not shutil.which("tmux"):
        raise AssertionError("mutt and tmux are needed (scripts/install-deps.sh installs them)")
    with harness.Network(imap_topology("imapmutt")) as net, tempfile.TemporaryDirectory() as home:
        net.start()
        send(net, "vader@deathstar.com", "rey@jaku.com", "Mutt sees this one")
        net.wait_messages("jaku.com", "rey", 1)
        password = passwords_of(net)["rey@jaku.com"]
        ca = mailnet(net, "ca").stdout.strip()
        muttrc = os.path.join(home, "muttrc")
        url = f"imap://rey%40jaku.com@localhost:{port(net.topology, 'imap')}/"
        with open(muttrc, "w") as f:
            f.write(f'set folder="{url}"\nset spoolfile="+INBOX"\nset imap_pass="{password}"\n'
                    f'set ssl_starttls=yes\nset ssl_force_tls=yes\nset ssl_ca_certificates_file="{ca}"\n'
                    'set header_cache=""\nset message_cachedir=""\nset mail_check=1\nset timeout=1\n'
                    'set record=""\nset postponed=""\nset move=no\nset sort=date\n')
        sock = os.path.join(home, "tmux.sock")
        env = {**os.environ, "HOME": home, "TERM": "xterm"}
        subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "160", "-y", "40",
                        f"mutt -n -F {muttrc}"], check=True, env=env, timeout=30)
        try:
            def screen():
                return subprocess.run(["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True, text=True,
                                      env=env, timeout=30).stdout
            harness.wait_for(lambda: "Mutt sees this one" in screen(), 30, "mutt listing the inbox:\n" + screen())
            assert "vader" in screen()
        finally:
            subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, env=env, timeout=30)


def test_kill_start_restart_imap_shown_like_a_node():
    with harness.Network(imap_topology("imapkill")) as net:
        net.start()
        assert "imap" in net.output() and "ready" in net.output()
        node = status_node(net, "imap")
        assert node["state"] == "ready" and node["kind"] == "imap" and node["tls"] == "starttls", node
        assert node["imap"] == net.topology["imap"]["listen"] and node["pop3"] == net.topology["pop3"]["listen"]
        with urllib.request.urlopen(harness.web_url(net.topology) + "/api/v1/network", timeout=10) as r:
            api = json.load(r)
        assert any(n["name"] == "imap" and n["state"] == "ready" for n in api["nodes"]), api
        table = mailnet(net, "status").stdout
        assert "imap" in table and net.topology["imap"]["listen"] in table, table
        assert dovecot_processes(net)

        # A client logged in while Dovecot is killed: its imap process goes too.
        idle_client = imap_login(net, "finn@jaku.com", "finn's secret")
        idle_client.select("INBOX")
        out = mailnet(net, "kill", "imap")
        assert out.returncode == 0, out.stdout + out.stderr
        assert status_node(net, "imap")["state"] == "killed"
        harness.wait_for(lambda: not dovecot_processes(net), 10, "no Dovecot process left after kill")
        idle_client.sock.settimeout(10)
        assert idle_client.sock.recv(4096) == b"", "the logged-in client's connection outlived the kill"
        idle_client.sock.close()
        try:
            socket.create_connection(("127.0.0.1", port(net.topology, "imap")), timeout=5).close()
            raise AssertionError("IMAP still answers after `mailnet kill imap`")
        except ConnectionRefusedError:
            pass
        # Mail still arrives while Dovecot is down, and is there when it is back.
        send(net, "vader@deathstar.com", "finn@jaku.com", "While Dovecot was down")
        net.wait_messages("jaku.com", "finn", 1)

        out = mailnet(net, "start", "imap")
        assert out.returncode == 0, out.stdout + out.stderr
        first_pid = status_node(net, "imap")["pid"]
        client = imap_login(net, "finn@jaku.com", "finn's secret")
        assert client.select("INBOX", readonly=True)[1] == [b"1"]
        client.logout()

        out = mailnet(net, "restart", "imap")
        assert out.returncode == 0, out.stdout + out.stderr
        node = status_node(net, "imap")
        assert node["state"] == "ready" and node["pid"] != first_pid, node
        client = imap_login(net, "finn@jaku.com", "finn's secret")
        assert client.select("INBOX", readonly=True)[1] == [b"1"]
        client.logout()
        out = mailnet(net, "flush", "imap")
        assert out.returncode != 0 and "holds no queue" in out.stdout + out.stderr, out.stdout + out.stderr
        net.stop()
        harness.wait_for(lambda: not dovecot_processes(net), 10, "no Dovecot process left after the network stopped")


def test_dashboard_draws_imap_beside_the_domains():
    import browser  # selenium: Debian's /usr/bin/python3, as ctest runs it
    with harness.Network(imap_topology("imapweb")) as net:
        net.start()
        with browser.Chromium() as b:
            b.open(harness.web_url(net.topology) + "/")

            def graph():
                return {n["id"]: n for n in b.driver.execute_script(
                    "return window.mailnetGraph && window.mailnetGraph.available() ? window.mailnetGraph.nodes() : []")}
            b.wait(lambda d: graph().get("imap", {}).get("state") == "ready", 30, "imap drawn, ready")
            assert graph()["imap"]["label"] == "imap (Dovecot)", graph()["imap"]
            row = b.find("#nodes tr[data-node='imap']")
            assert net.topology["imap"]["listen"] in row.text and "ready" in row.text, row.text
            out = mailnet(net, "kill", "imap")
            assert out.returncode == 0, out.stdout + out.stderr
            b.wait(lambda d: graph()["imap"]["state"] == "killed", 10, "imap shown killed")
            b.assert_no_console_errors()


def test_dovecot_crash_restarts_on_failure():
    topo = imap_topology("imapcrash")
    topo["imap"]["restart"] = "on-failure"
    with harness.Network(topo) as net:
        net.start()
        first = status_node(net, "imap")
        log = open(os.path.join(net.run_dir, "imap", "imap.log")).read()
        master = int(log.split("dovecot_pid=")[1].split()[0])
        assert master in dovecot_processes(net), (master, dovecot_processes(net))
        os.kill(master, signal.SIGKILL)  # Dovecot's master, started by this test's network
        harness.wait_for(lambda: (lambda n: n["restarts"] == 1 and n["state"] == "ready" and n)(status_node(net, "imap")),
                         30, "imap restarted after Dovecot's master died")
        assert status_node(net, "imap")["pid"] != first["pid"]
        assert "crashed" in net.output()
        client = imap_login(net, "finn@jaku.com", "finn's secret")
        assert client.select("INBOX", readonly=True)[0] == "OK"
        client.logout()


def test_missing_dovecot_says_what_to_install():
    topo = imap_topology("imapmissing")
    with harness.Network(topo) as net:
        net.start(wait_ready=False, env={"MAILNET_DOVECOT": "/nonexistent/sbin/dovecot"})
        assert net.proc.wait(timeout=30) == 1, net.output()
        out = net.output()
        assert "/nonexistent/sbin/dovecot (MAILNET_DOVECOT)" in out, out
        assert "apt-get install dovecot-imapd dovecot-pop3d" in out, out
        assert "is up" not in out
        assert not harness.network_processes(net.run_dir)


def test_topology_errors_name_the_field():
    cases = [
        ({"imap": {"listen": "10.0.0.1:1143"}}, "$.imap.listen"),
        ({"pop3": {"listen": "127.0.0.1:99999"}}, "$.pop3.listen"),
        ({"imap": {"listen": "127.0.0.1:1143"}, "pop3": {"listen": "127.0.0.1:1143"}},
         "$.pop3.listen: duplicate address 127.0.0.1:1143 (also at $.imap.listen)"),
        ({"imap": {"port": 1143}}, "$.imap"),
        ({"imap": "127.0.0.1:1143"}, "$.imap: expected an object"),
        ({"imap": {"listen": "127.0.0.1:1143", "restart": "on-failure"}, "pop3": {"listen": "127.0.0.1:1110",
                                                                                  "restart": "no"}},
         "$.pop3.restart"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for extra, expected in cases:
            topo = {**harness.two_domain_topology("imapbad"), **extra}
            path = os.path.join(tmp, "topo.json")
            with open(path, "w") as f:
                json.dump(topo, f)
            out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True,
                                 timeout=30)
            assert out.returncode == 2 and path in out.stderr and expected in out.stderr, (extra, out.stderr)
        # A node on Dovecot's address: the node's field names it.
        topo = harness.two_domain_topology("imapclash")
        topo["imap"] = {"listen": topo["domains"][1]["listen"]}
        with open(path, "w") as f:
            json.dump(topo, f)
        out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "$.domains[1].listen: duplicate address" in out.stderr, out.stderr
        assert "(also at $.imap.listen)" in out.stderr, out.stderr
        # Below ip_unprivileged_port_start Dovecot cannot listen, root or not.
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            if int(f.read()) > 143:
                topo = harness.two_domain_topology("imaplow")
                topo["imap"] = {"listen": "127.0.0.1:143"}
                with open(path, "w") as f:
                    json.dump(topo, f)
                out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True,
                                     timeout=30)
                assert out.returncode == 2 and "$.imap.listen: port 143" in out.stderr, out.stderr
        # "imap" names Dovecot's folder in the run folder: no domain may take it.
        topo = harness.two_domain_topology("imapname")
        topo["domains"][0]["name"] = "imap"
        with open(path, "w") as f:
            json.dump(topo, f)
        out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "$.domains[0].name" in out.stderr, out.stderr


if __name__ == "__main__":
    harness.run_tests([
        test_topology_errors_name_the_field,
        test_missing_dovecot_says_what_to_install,
        test_imaplib_and_poplib_fetch_the_attachment_after_starttls,
        test_wrong_password_and_unknown_user_are_refused,
        test_idle_sees_mail_delivered_while_connected,
        test_mutt_over_imap_in_tmux_lists_the_inbox,
        test_kill_start_restart_imap_shown_like_a_node,
        test_dovecot_crash_restarts_on_failure,
        test_dashboard_draws_imap_beside_the_domains,
    ])
