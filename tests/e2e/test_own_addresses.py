#!/usr/bin/python3
"""Issue 22, first part: each domain on its own loopback address.

Real launcher, nodes and resolver; answers read with dig. The relay leaves
from the node's own address (Received:, smtp.log and node.log of the
receiving node show it); the resolver serves PTR for every node address,
the topology's own records (TXT split at 255 bytes, CNAME), and SRV only
for domains not on port 25; policy.require_fcrdns refuses MAIL from a
client without reverse DNS; port 25 is refused, with the three ways to
allow it, to a user who may not bind it.
"""

import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

DIG = shutil.which("dig") or "/usr/bin/dig"


def free_port_on(host):
    """A TCP port free on host, not one of the shipped scenarios' ports."""
    for _ in range(50):
        s = socket.socket()
        s.bind((host, 0))
        port = s.getsockname()[1]
        s.close()
        if port not in harness.SHIPPED_PORTS:
            return port
    raise AssertionError(f"no free port on {host}")


def topology(name, jaku_host="127.0.0.2", deathstar_host="127.0.0.3", jaku_port=None, deathstar_port=None, **jaku_extra):
    return {
        "name": name,
        "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
        "web": False,
        "defaults": {"retry": {"first": "200ms", "max": "1s", "give_up_after": "1m"}},
        "domains": [
            {"name": "jaku.com", "listen": f"{jaku_host}:{jaku_port or free_port_on(jaku_host)}",
             "users": ["luke", "rey"], **jaku_extra},
            {"name": "deathstar.com", "listen": f"{deathstar_host}:{deathstar_port or free_port_on(deathstar_host)}",
             "users": ["vader"]},
        ],
    }


def listen_of(topo, domain):
    d = next(d for d in topo["domains"] if d["name"] == domain)
    host, port = d["listen"].rsplit(":", 1)
    return host, int(port)


def dig(topo, *args):
    port = topo["resolver"]["listen"].rsplit(":", 1)[1]
    out = subprocess.run([DIG, "@127.0.0.1", "-p", port, "+time=5", "+tries=2", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def short(topo, *args):
    return dig(topo, "+short", *args).strip()


def send(topo, via, sender, rcpt, subject):
    host, port = listen_of(topo, via)
    with smtplib.SMTP(host, port, timeout=60) as s:
        s.sendmail(sender, [rcpt], f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def test_relay_leaves_from_the_nodes_own_address():
    topo = topology("own-addr")
    with harness.Network(topo) as net:
        net.start()
        send(topo, "deathstar.com", "vader@deathstar.com", "luke@jaku.com", "from my own address")
        message = net.wait_messages("jaku.com", "luke", 1, timeout=60)[0].decode("utf-8", "replace")
        # The first Received: is jaku.com's, naming the peer it saw.
        first = message.split("Received: ", 2)[1]
        assert first.startswith("from deathstar.com ([127.0.0.3])"), message
        smtp_log = read(os.path.join(net.domain_dir("jaku.com"), "smtp.log"))
        assert "connect from 127.0.0.3" in smtp_log, smtp_log
        log = os.path.join(net.domain_dir("jaku.com"), "node.log")
        harness.wait_for(lambda: "event=connect client=127.0.0.3" in read(log), 30,
                         "jaku.com's node.log to name 127.0.0.3 as the client")


def test_resolver_serves_ptr_records_and_srv_only_off_port_25():
    records = [
        {"name": "@", "type": "TXT", "value": "v=spf1 " + "a" * 300 + " -all"},
        {"name": "_dmarc.jaku.com", "type": "txt", "value": 'say "hi" \\ there'},
        {"name": "www.jaku.com", "type": "CNAME", "value": "mx.jaku.com"},
        {"name": "old.jaku.com", "type": "A", "value": "127.0.0.9"},
        {"name": "@", "type": "MX", "value": "20 old.jaku.com"},
    ]
    topo = topology("own-ptr", dns={"records": records})
    with harness.Network(topo) as net:
        net.start()
        assert short(topo, "-x", "127.0.0.2") == "mx.jaku.com.", dig(topo, "-x", "127.0.0.2")
        assert short(topo, "+tcp", "-x", "127.0.0.3") == "mx.deathstar.com."
        assert "NXDOMAIN" in dig(topo, "-x", "127.0.0.77")
        assert short(topo, "A", "mx.jaku.com") == "127.0.0.2"
        # A long TXT value is cut into 255-byte strings, read back as one.
        txt = short(topo, "TXT", "jaku.com")
        parts = [p.strip('"') for p in txt.split('" "')]
        assert len(parts) == 2 and len(parts[0]) == 255 and "".join(parts) == records[0]["value"], txt
        assert short(topo, "+tcp", "TXT", "jaku.com") == txt
        assert short(topo, "TXT", "_dmarc.jaku.com") == r'"say \"hi\" \\ there"'
        assert short(topo, "A", "www.jaku.com").split() == ["mx.jaku.com.", "127.0.0.2"]
        assert sorted(short(topo, "MX", "jaku.com").splitlines()) == ["10 mx.jaku.com.", "20 old.jaku.com."]
        # Port-based domains keep their SRV record.
        assert short(topo, "SRV", "_smtp._tcp.jaku.com").endswith(f"{listen_of(topo, 'jaku.com')[1]} mx.jaku.com.")
        # mailnet resolve shows PTR and TXT.
        out = subprocess.run([harness.binary("mailnet"), "resolve", "127.0.0.2", "--dir", net.run_dir],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "PTR → mx.jaku.com" in out.stdout, out.stdout + out.stderr
        out = subprocess.run([harness.binary("mailnet"), "resolve", "_dmarc.jaku.com", "TXT", "--dir", net.run_dir],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and 'TXT "say "hi" \\ there"' in out.stdout, out.stdout + out.stderr


def test_fcrdns_refuses_a_client_without_reverse_dns():
    topo = topology("own-fcrdns", policy={"require_fcrdns": True})
    with harness.Network(topo) as net:
        net.start()
        # deathstar.com's relay comes from 127.0.0.3, whose PTR leads back.
        send(topo, "deathstar.com", "vader@deathstar.com", "luke@jaku.com", "confirmed")
        net.wait_messages("jaku.com", "luke", 1, timeout=60)
        # A client from 127.0.0.1 has no PTR: refused at MAIL, and told why.
        host, port = listen_of(topo, "jaku.com")
        with smtplib.SMTP(host, port, timeout=60) as s:
            s.ehlo("client.example")
            code, text = s.mail("someone@outside.example")
        assert code == 550 and text.startswith(b"5.7.25 Reverse DNS validation failed"), (code, text)
        log = os.path.join(net.domain_dir("jaku.com"), "node.log")
        for event in ("event=fcrdns client=127.0.0.3 result=pass name=mx.deathstar.com",
                      "event=fcrdns client=127.0.0.1 result=fail"):
            harness.wait_for(lambda: event in read(log), 30, f"'{event}' in jaku.com's node.log")


def test_records_are_validated_with_their_json_path():
    cases = [
        ({"records": [{"name": "jaku.org", "type": "TXT", "value": "x"}]},
         "$.domains[0].dns.records[0].name: \"jaku.org\" is not jaku.com nor a name under it"),
        ({"records": [{"name": "@", "type": "SOA", "value": "x"}]}, "$.domains[0].dns.records[0].type: expected"),
        ({"records": [{"name": "@", "type": "A", "value": "10.0.0.1"}]}, "$.domains[0].dns.records[0].value: expected a loopback"),
        ({"records": [{"name": "@", "type": "TXT", "value": "x" * 4001}]}, "$.domains[0].dns.records[0].value: a TXT value of at most 4000"),
        ({"records": [{"name": "a.jaku.com", "type": "CNAME", "value": "b.jaku.com"},
                      {"name": "a.jaku.com", "type": "TXT", "value": "x"}]}, "$.domains[0].dns.records[1].name:"),
        ({"spf": "x"}, "$.domains[0].dns.spf: unknown field"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for dns, expected in cases:
            topo = topology("own-bad", dns=dns)
            path = os.path.join(tmp, "t.json")
            with open(path, "w") as f:
                json.dump(topo, f)
            out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True, timeout=60)
            assert out.returncode == 2 and expected in out.stderr, (expected, out.stderr)


def test_port_25_needs_a_right_and_the_error_names_three_ways():
    assert os.geteuid() == 0, "needs root: the user without the right is `nobody`, reached through setpriv"
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    assert start > 25, f"net.ipv4.ip_unprivileged_port_start is {start}: everyone may bind port 25 here"
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        topo = topology("own-25", jaku_host="127.0.1.1", deathstar_host="127.0.1.2", jaku_port=25, deathstar_port=25)
        path = os.path.join(tmp, "t.json")
        with open(path, "w") as f:
            json.dump(topo, f)
        os.chmod(path, 0o644)
        for command in (["validate", path], ["up", path, "--dir", os.path.join(tmp, "run")]):
            out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                  harness.binary("mailnet"), *command], capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL)
            assert out.returncode == 2, (command, out.stdout, out.stderr)
            for words in ("$.domains[0].listen (jaku.com): port 25 of 127.0.1.1:25", "root",
                          "cap_net_bind_service", "sysctl net.ipv4.ip_unprivileged_port_start=25"):
                assert words in out.stderr, (words, out.stderr)
        assert not os.path.exists(os.path.join(tmp, "run", "jaku.com")), "a node was started"
        # root may: validate says ok.
        out = subprocess.run([harness.binary("mailnet"), "validate", path], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def test_port_25_right_is_asked_of_each_binary_that_binds():
    """A capability set on the mailnet binary alone is lost when it execs
    mailnet-node: validate names the node's binary until it has the right too."""
    assert os.geteuid() == 0, "needs root: setcap, and `nobody` through setpriv"
    setcap = shutil.which("setcap") or "/sbin/setcap"
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert int(f.read()) > 25, "everyone may bind port 25 here"
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        bins = os.path.join(tmp, "bin")
        os.mkdir(bins)
        for name in ("mailnet", "mailnet-node", "mailnet-resolver"):
            shutil.copy2(harness.binary(name), os.path.join(bins, name))
        os.chmod(bins, 0o755)
        topo = topology("own-caps", jaku_host="127.0.1.1", deathstar_host="127.0.1.2", jaku_port=25, deathstar_port=25)
        path = os.path.join(tmp, "t.json")
        with open(path, "w") as f:
            json.dump(topo, f)
        os.chmod(path, 0o644)
        env = {k: v for k, v in os.environ.items() if k != "MAILNET_BIN_DIR"}

        def validate():
            return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                   os.path.join(bins, "mailnet"), "validate", path], capture_output=True, text=True,
                                  timeout=60, stdin=subprocess.DEVNULL, env=env)

        subprocess.run([setcap, "cap_net_bind_service=+ep", os.path.join(bins, "mailnet")], check=True)
        out = validate()
        assert out.returncode == 2, (out.stdout, out.stderr)
        for words in ("$.domains[0].listen (jaku.com): port 25", "mailnet-node", "setcap", bins):
            assert words in out.stderr, (words, out.stderr)
        subprocess.run([setcap, "cap_net_bind_service=+ep", os.path.join(bins, "mailnet-node")], check=True)
        out = validate()
        assert out.returncode == 0, (out.stdout, out.stderr)


def free_address_on_25():
    for n in range(50, 250):
        host = f"127.0.3.{n}"
        s = socket.socket()
        try:
            s.bind((host, 25))
            return host
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no 127.0.3.x address with port 25 free")


def test_port_25_domains_are_found_by_mx_and_a_alone():
    assert os.geteuid() == 0, "needs root to bind port 25"
    jaku = free_address_on_25()
    s = socket.socket()
    s.bind((jaku, 25))  # held while the second is picked
    try:
        deathstar = free_address_on_25()
    finally:
        s.close()
    topo = topology("own-mx", jaku_host=jaku, deathstar_host=deathstar, jaku_port=25, deathstar_port=25)
    with harness.Network(topo) as net:
        net.start()
        assert "NXDOMAIN" in dig(topo, "SRV", "_smtp._tcp.jaku.com")
        assert short(topo, "MX", "jaku.com") == "10 mx.jaku.com."
        send(topo, "deathstar.com", "vader@deathstar.com", "luke@jaku.com", "over port 25")
        message = net.wait_messages("jaku.com", "luke", 1, timeout=60)[0].decode("utf-8", "replace")
        assert f"from deathstar.com ([{deathstar}])" in message, message


if __name__ == "__main__":
    harness.run_tests([test_relay_leaves_from_the_nodes_own_address,
                       test_port_25_right_is_asked_of_each_binary_that_binds,
                       test_resolver_serves_ptr_records_and_srv_only_off_port_25,
                       test_fcrdns_refuses_a_client_without_reverse_dns,
                       test_records_are_validated_with_their_json_path,
                       test_port_25_needs_a_right_and_the_error_names_three_ways,
                       test_port_25_domains_are_found_by_mx_and_a_alone])
