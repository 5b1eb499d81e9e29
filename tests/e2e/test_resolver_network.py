"""Issue 4 through the launcher: `mailnet resolve`, and the resolver killed and
restarted like a node while nodes keep accepting and queueing mail."""
import os
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(net, *args):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=60)


def test_resolve_command():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        ds_port = harness.port_of(topo, "deathstar.com")
        out = mailnet(net, "resolve", "DeathStar.com")
        assert out.returncode == 0 and out.stdout.strip() == f"deathstar.com → 127.0.0.1:{ds_port}", out
        out = mailnet(net, "resolve", "genshinimpact.com")
        assert out.returncode == 1 and "no such mail domain" in out.stdout, out
        out = mailnet(net, "resolve", "_smtp._tcp.jaku.com", "srv")
        assert out.returncode == 0 and f"mx.jaku.com:{harness.port_of(topo, 'jaku.com')}" in out.stdout, out
        out = mailnet(net, "resolve", "jaku.com", "MX")
        assert "jaku.com MX → mx.jaku.com (preference 10)" in out.stdout, out
        out = mailnet(net, "resolve", "mx.deathstar.com", "A")
        assert out.stdout.strip() == "mx.deathstar.com A → 127.0.0.1", out
        out = mailnet(net, "resolve", "jaku.com", "TXT")  # the default SPF record
        assert out.returncode == 0 and out.stdout.strip() == 'jaku.com TXT "v=spf1 ip4:127.0.0.1 -all"', out
        out = mailnet(net, "resolve", "mx.jaku.com", "TXT")
        assert out.returncode == 1 and "mx.jaku.com: no TXT record" in out.stdout, out
        out = mailnet(net, "resolve", "jaku.com", "HINFO")
        assert out.returncode == 2 and "unknown record type" in out.stderr, out
        log = open(os.path.join(net.run_dir, "resolver", "resolver.log")).read()
        assert "name=_smtp._tcp.deathstar.com type=SRV rcode=NOERROR" in log, log
        assert "rcode=NXDOMAIN" in log, log


def test_resolver_down_mail_waits_then_flows():
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = {"first": "30s", "max": "1m", "give_up_after": "10m"}  # only a flush is fast
    topo["resolver"]["timeout"] = "100ms"
    with harness.Network(topo) as net:
        net.start()
        assert mailnet(net, "kill", "resolver").returncode == 0
        out = mailnet(net, "resolve", "jaku.com")
        assert out.returncode == 2 and "did not answer" in out.stderr, out
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com", "finn@jaku.com"], b"Subject: no dns\r\n\r\nx\r\n")
        net.wait_messages("jaku.com", "finn", 1)  # local mail needs no resolver
        harness.wait_for(lambda: "last error: 4.4.3" in mailnet(net, "queue").stdout, 10,
                         "the relayed copy to wait with a temporary resolver error")
        assert net.messages("deathstar.com", "vader") == []
        assert mailnet(net, "start", "resolver").returncode == 0
        msgs = net.wait_messages("deathstar.com", "vader", 1, timeout=5)
        assert b"Subject: no dns" in msgs[0]
        assert net.messages("jaku.com", "rey") == [], "a resolver outage must not bounce"


if __name__ == "__main__":
    harness.run_tests([test_resolve_command, test_resolver_down_mail_waits_then_flows])
