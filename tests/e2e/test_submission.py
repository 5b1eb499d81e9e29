"""Passwords and the submission listener, through real clients: the
passwords file (0600 under umask 000, kept across restarts, new with
--fresh) and `mailnet users`; Python's smtplib with starttls(context with
the network's CA) and login; swaks --tls --auth PLAIN and LOGIN; wrong
passwords (535 5.7.8 with a growing delay), AUTH before STARTTLS (538),
MAIL FROM another user (553), relay to another domain after AUTH;
`mailnet send` through the submission listener."""
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


TESTS = [
    test_passwords_file_private_kept_and_shown_by_users,
]

if __name__ == "__main__":
    harness.run_tests(TESTS)
