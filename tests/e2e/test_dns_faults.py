"""DNS faults on purpose (the topology's `"stage": "dns"` rules): the real
resolver of a real network answers SERVFAIL, NXDOMAIN, REFUSED, an empty
reply with TC set, or nothing, for a rule's name and the names under it, as
dig sees it over UDP and TCP; every such answer is an event=fault line in
resolver.log; and a node's relay takes SERVFAIL as trouble to retry and
NXDOMAIN as a bounce (5.1.2). A dns rule added while the network runs
(`mailnet fault add`, POST /api/v1/faults) acts at once, also on a name whose
answer the resolver had cached, and a clear ends it; the resolver reads its
resolver/faults.json again at SIGUSR2 and at a restart, and keeps its rules
when the file is bad or a link."""
import os
import json
import shlex
import shutil
import signal
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_web_api import request, web_port  # noqa: E402

DIG = shutil.which("dig") or "/usr/bin/dig"


def topology(rules, seed=42):
    topo = harness.two_domain_topology("dnsfaults")
    topo["faults"] = {"seed": seed, "rules": rules}
    return topo


def dns_rule(answer, name="d1", to="deathstar.com", **when):
    return {"name": name, "to": to, "stage": "dns", "answer": answer, **when}


def dig(net, name, qtype, *options):
    host, port = net.topology["resolver"]["listen"].rsplit(":", 1)
    # +nocookie: the same question is the same bytes, as a cached answer would be found.
    out = subprocess.run([DIG, f"@{host}", "-p", port, "+time=1", "+tries=1", "+nocookie", *options, name, qtype],
                         capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout + out.stderr


def header(text):
    """(status, flags) of dig's ->>HEADER<<- lines; None when no reply came."""
    status = flags = None
    for line in text.splitlines():
        if "->>HEADER<<-" in line:
            status = line.split("status: ", 1)[1].split(",", 1)[0]
        if line.startswith(";; flags:"):
            flags = line.split(":", 1)[1].split(";", 1)[0].split()
    return (status, flags) if status else None


def resolver_events(net, kind):
    path = os.path.join(net.run_dir, "resolver", "resolver.log")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = dict(w.split("=", 1) for w in shlex.split(line.split(" ", 1)[1]) if "=" in w)
            if fields.get("event") == kind:
                out.append(fields)
    return out


def wait_resolver_faults(net, count, timeout=15):
    return harness.wait_for(lambda: len(resolver_events(net, "fault")) >= count and resolver_events(net, "fault"),
                            timeout, f"{count} event=fault in resolver.log")


def test_dig_sees_each_answer_over_udp_and_tcp():
    for answer, status in (("SERVFAIL", "SERVFAIL"), ("NXDOMAIN", "NXDOMAIN"), ("REFUSED", "REFUSED")):
        with harness.Network(topology([dns_rule(answer)])) as net:
            net.start()
            for transport in ((), ("+tcp",)):
                code, text = dig(net, "_smtp._tcp.deathstar.com", "SRV", *transport)
                assert code == 0 and header(text) and header(text)[0] == status, (answer, transport, text)
            # A name the rule does not cover is answered for real.
            code, text = dig(net, "_smtp._tcp.jaku.com", "SRV")
            assert header(text)[0] == "NOERROR" and "jaku.com" in text.split("ANSWER SECTION", 1)[1], text
            evs = wait_resolver_faults(net, 2)
            assert [(e["rule"], e["stage"], e["answer"], e["name"], e["type"], e["transport"]) for e in evs] == [
                ("d1", "dns", answer, "_smtp._tcp.deathstar.com", "SRV", "udp"),
                ("d1", "dns", answer, "_smtp._tcp.deathstar.com", "SRV", "tcp")], evs
            # status --json counts them for the resolver, as for a node.
            harness.wait_for(lambda: resolver_status(net).get("faults") == 2, 15,
                             "the resolver's faults in status --json to be 2")
    with harness.Network(topology([dns_rule("truncated")])) as net:
        net.start()
        # +ignore: dig would otherwise retry a truncated reply over TCP.
        for transport in (("+ignore",), ("+tcp",)):
            code, text = dig(net, "deathstar.com", "MX", *transport)
            status, flags = header(text)
            assert status == "NOERROR" and "tc" in flags and "ANSWER: 0" in text, (transport, text)
        assert [e["answer"] for e in wait_resolver_faults(net, 2)] == ["truncated"] * 2
    with harness.Network(topology([dns_rule("timeout", first=2)])) as net:
        net.start()
        for transport in ((), ("+tcp",)):
            code, text = dig(net, "mx.deathstar.com", "A", *transport)
            assert code == 9 and header(text) is None and "timed out" in text, (transport, code, text)
        # first: 2, so the third question gets its real answer.
        code, text = dig(net, "mx.deathstar.com", "A")
        assert header(text)[0] == "NOERROR" and "127.0.0.1" in text, text
        evs = wait_resolver_faults(net, 2)
        assert [(e["answer"], e["transport"]) for e in evs] == [("timeout", "udp"), ("timeout", "tcp")], evs
        # The resolver goes on serving both transports.
        code, text = dig(net, "mx.deathstar.com", "A", "+tcp")
        assert header(text)[0] == "NOERROR", text


def test_every_and_the_seed_decide_the_same_way_run_after_run():
    def faulted(seed):
        with harness.Network(topology([dns_rule("SERVFAIL", probability=0.5)], seed=seed)) as net:
            net.start()
            out = []
            for i in range(24):
                _, text = dig(net, "deathstar.com", "MX")
                out.append(header(text)[0] == "SERVFAIL")
            assert sum(out) == len(wait_resolver_faults(net, sum(out))), out
            (faults,) = resolver_events(net, "faults")
            assert (faults["seed"], faults["rules"], faults["seeded_by"]) == (str(seed), "1", "topology"), faults
            return out
    first = faulted(42)
    assert 2 <= sum(first) <= 22, first  # 0.5 of 24: far from none and all
    assert faulted(42) == first
    assert faulted(43) != first  # equal by chance: 1 in 2^24
    with harness.Network(topology([dns_rule("REFUSED", every=3)])) as net:
        net.start()
        seen = [header(dig(net, "deathstar.com", "MX")[1])[0] for _ in range(6)]
        assert seen == ["NOERROR", "NOERROR", "REFUSED"] * 2, seen


def send_through_jaku(net, subject):
    with smtplib.SMTP("127.0.0.1", harness.port_of(net.topology, "jaku.com"), timeout=30) as s:
        s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                   f"From: rey@jaku.com\r\nTo: vader@deathstar.com\r\nSubject: {subject}\r\n\r\nbody\r\n")


def node_log(net, domain):
    with open(os.path.join(net.domain_dir(domain), "node.log"), encoding="utf-8", errors="replace") as f:
        return f.read()


def test_the_relay_retries_servfail_and_bounces_nxdomain():
    # SERVFAIL for the first two questions: the relay keeps the message,
    # retries with its backoff, and delivers once the name answers.
    with harness.Network(topology([dns_rule("SERVFAIL", first=2)])) as net:
        net.start()
        send_through_jaku(net, "through the flap")
        net.wait_messages("deathstar.com", "vader", 1, timeout=60)
        evs = wait_resolver_faults(net, 2)
        assert [(e["answer"], e["name"]) for e in evs] == [("SERVFAIL", "_smtp._tcp.deathstar.com")] * 2, evs
        log = node_log(net, "jaku.com")
        assert "SERVFAIL" in log and "5.1.2" not in log, log
        assert not net.messages("jaku.com", "rey"), "a bounce came back"
    # NXDOMAIN: the domain is gone, the relay bounces at once.
    with harness.Network(topology([dns_rule("NXDOMAIN")])) as net:
        net.start()
        send_through_jaku(net, "to nowhere")
        net.wait_messages("jaku.com", "rey", 1, timeout=60)
        (bounce,) = net.messages("jaku.com", "rey")
        assert b"5.1.2" in bounce, bounce
        assert not net.messages("deathstar.com", "vader")
        assert {e["answer"] for e in wait_resolver_faults(net, 1)} == {"NXDOMAIN"}


def test_validate_takes_dns_rules_from_any_sender_only():
    good = topology([dns_rule("SERVFAIL", probability=0.3), dns_rule("timeout", name="d2", to="elsewhere.org")])
    with harness.Network(good) as net:
        check = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    for field, value, path, words in (
            ("from", "jaku.com", "rules[0].from", "cannot tell which node asks"),
            ("from", "clients", "rules[0].from", "cannot tell which node asks"),
            ("answer", "NOTIMP", "rules[0].answer", "expected SERVFAIL, NXDOMAIN, REFUSED, truncated or timeout"),
            ("action", "disconnect", "rules[0].action", "a dns rule has an \"answer\""),
            ("reply", "451 4.3.0 x", "rules[0].reply", "only a reply or rate_limit rule")):
        bad = topology([{**dns_rule("SERVFAIL"), field: value}])
        with harness.Network(bad) as net:
            check = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file],
                                   capture_output=True, text=True, timeout=30)
            assert check.returncode == 2, (field, check.stdout, check.stderr)
            assert f"{net.topology_file}: $.faults.{path}: " in check.stderr and words in check.stderr, (
                field, check.stderr)


def mailnet(net, *args, timeout=60):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=timeout)


def fault_list(net):
    out = mailnet(net, "fault", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {f["name"]: f for f in json.loads(out.stdout)}


def status_of(net, dig_args=("_smtp._tcp.deathstar.com", "SRV")):
    code, text = dig(net, *dig_args)
    h = header(text)
    return h[0] if h else "no reply"


def rule_faults(net, rule):
    return [e for e in resolver_events(net, "fault") if e["rule"] == rule]


def test_a_dns_rule_added_at_run_time_acts_at_once_and_a_clear_ends_it():
    with harness.Network(harness.two_domain_topology("dnsrt")) as net:
        net.start()
        # Asked twice: the second answer comes from the resolver's cache.
        assert status_of(net) == "NOERROR" and status_of(net) == "NOERROR"
        started = time.monotonic()
        out = mailnet(net, "fault", "add", json.dumps(dns_rule("SERVFAIL", name="rt-dns")))
        assert out.returncode == 0, out.stderr
        assert "rule rt-dns added (resolver applies it)" in out.stdout, out.stdout
        # add answers once the resolver has read the rule: the next question is faulted.
        assert status_of(net) == "SERVFAIL"
        print(f"fault add: a dns rule acted {(time.monotonic() - started) * 1000:.0f} ms after the command began")
        assert status_of(net, ("_smtp._tcp.deathstar.com", "SRV", "+tcp")) == "SERVFAIL"
        assert status_of(net, ("_smtp._tcp.jaku.com", "SRV")) == "NOERROR"  # not covered
        loaded = resolver_events(net, "fault_rules")
        assert loaded and loaded[-1]["rules"] == "1" and loaded[-1]["added"] == "1", loaded
        # A relay between the nodes meets it: the message waits in jaku.com's queue.
        send_through_jaku(net, "through the run-time flap")
        harness.wait_for(lambda: len(rule_faults(net, "rt-dns")) >= 4, 30, "the relay's questions faulted")
        assert "SERVFAIL" in node_log(net, "jaku.com")
        assert not net.messages("deathstar.com", "vader")
        # Counted like a node's rule: fault list and GET /api/v1/faults match resolver.log.
        harness.wait_for(lambda: fault_list(net)["rt-dns"]["injected"] == len(rule_faults(net, "rt-dns")), 30,
                         "the counts of fault list to match resolver.log")
        listed = fault_list(net)["rt-dns"]
        assert listed["source"] == "run time" and listed["rule"]["stage"] == "dns" and \
            listed["rule"]["answer"] == "SERVFAIL", listed
        code, _, body = request(web_port(net.topology), "GET", "/api/v1/faults")
        assert code == 200 and [f["name"] for f in json.loads(body)["faults"]] == ["rt-dns"], (code, body)
        table = mailnet(net, "fault", "list")
        assert table.returncode == 0 and "rt-dns" in table.stdout and " dns " in table.stdout, table.stdout

        started = time.monotonic()
        out = mailnet(net, "fault", "clear", "rt-dns")
        assert out.returncode == 0 and "cleared rt-dns" in out.stdout, (out.stdout, out.stderr)
        assert status_of(net) == "NOERROR"
        print(f"fault clear: NOERROR {(time.monotonic() - started) * 1000:.0f} ms after the command began")
        assert "rt-dns" not in fault_list(net)
        # The relay's next try finds deathstar.com and delivers.
        net.wait_messages("deathstar.com", "vader", 1, timeout=60)
        assert not net.messages("jaku.com", "rey"), "a bounce came back"


def test_http_adds_a_dns_rule_and_a_topology_dns_rule_can_be_cleared():
    topo = topology([dns_rule("REFUSED", name="topo-dns", to="jaku.com")])
    with harness.Network(topo) as net:
        net.start()
        port = web_port(net.topology)
        change = {"Content-Type": "application/json"}
        code, _, body = request(port, "POST", "/api/v1/faults", change,
                                json.dumps(dns_rule("NXDOMAIN", name="rt-gone", to="mx.deathstar.com")))
        assert code == 201 and json.loads(body)["applied"] == ["resolver"], (code, body)
        assert status_of(net, ("mx.deathstar.com", "A")) == "NXDOMAIN"
        assert status_of(net, ("_smtp._tcp.jaku.com", "SRV")) == "REFUSED"
        # Clearing the topology's rule ends it in the resolver; the run-time one stays.
        code, _, body = request(port, "DELETE", "/api/v1/faults/topo-dns", change)
        assert code == 200 and json.loads(body)["applied"] == ["resolver"], (code, body)
        assert status_of(net, ("_smtp._tcp.jaku.com", "SRV")) == "NOERROR"
        assert status_of(net, ("mx.deathstar.com", "A")) == "NXDOMAIN"
        code, _, body = request(port, "DELETE", "/api/v1/faults", change)
        assert code == 200 and json.loads(body)["cleared"] == ["rt-gone"], (code, body)
        assert status_of(net, ("mx.deathstar.com", "A")) == "NOERROR"


def resolver_status(net):
    out = mailnet(net, "status", "--json")
    assert out.returncode == 0, out.stderr
    return next(n for n in json.loads(out.stdout)["nodes"] if n["name"] == "resolver")


def resolver_pid(net):
    return resolver_status(net)["pid"]


def test_the_resolver_keeps_its_rules_at_a_restart_and_when_the_file_is_bad():
    with harness.Network(harness.two_domain_topology("dnsrt")) as net:
        net.start()
        out = mailnet(net, "fault", "add", json.dumps(dns_rule("REFUSED", name="rt-keep")))
        assert out.returncode == 0, out.stderr
        file = os.path.join(net.run_dir, "resolver", "faults.json")
        assert os.stat(file).st_mode & 0o777 == 0o600
        with open(file, encoding="utf-8") as f:
            good = f.read()
        # A restarted resolver reads the file as it starts, before it says it is ready.
        assert mailnet(net, "restart", "resolver").returncode == 0
        with open(os.path.join(net.run_dir, "resolver", "resolver.log"), encoding="utf-8") as f:
            events = [line.split(" event=")[1].split()[0] for line in f if " event=" in line]
        last_start = len(events) - 1 - events[::-1].index("ready")
        assert "fault_rules" in events[events.index("stopped"):last_start], events
        assert status_of(net) == "REFUSED"
        # A bad file: logged with the file and the field, the rules stay.
        errors = len(resolver_events(net, "fault_rules_error"))
        doc = json.loads(good)
        doc["rules"][0]["answer"] = "NOTIMP"
        with open(file, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.kill(resolver_pid(net), signal.SIGUSR2)
        evs = harness.wait_for(lambda: resolver_events(net, "fault_rules_error")[errors:], 30, "fault_rules_error")
        assert evs[0]["file"] == file and f"{file}: $.rules[0].answer: expected SERVFAIL" in evs[0]["error"], evs
        assert status_of(net) == "REFUSED"
        # A link planted in its place is not followed.
        target = os.path.join(net.run_dir, "elsewhere.json")
        with open(target, "w", encoding="utf-8") as f:
            f.write(json.dumps(dict(json.loads(good), rules=[])))
        os.remove(file)
        os.symlink(target, file)
        os.kill(resolver_pid(net), signal.SIGUSR2)
        evs = harness.wait_for(lambda: resolver_events(net, "fault_rules_error")[errors + 1:], 30, "a second error")
        assert "link" in evs[0]["error"], evs
        assert status_of(net) == "REFUSED"
        # The launcher's next change replaces the link with a file of its own.
        out = mailnet(net, "fault", "clear", "rt-keep")
        assert out.returncode == 0 and "cleared rt-keep" in out.stdout, (out.stdout, out.stderr)
        assert not os.path.islink(file) and status_of(net) == "NOERROR"


if __name__ == "__main__":
    harness.run_tests([
        test_dig_sees_each_answer_over_udp_and_tcp,
        test_every_and_the_seed_decide_the_same_way_run_after_run,
        test_the_relay_retries_servfail_and_bounces_nxdomain,
        test_validate_takes_dns_rules_from_any_sender_only,
        test_a_dns_rule_added_at_run_time_acts_at_once_and_a_clear_ends_it,
        test_http_adds_a_dns_rule_and_a_topology_dns_rule_can_be_cleared,
        test_the_resolver_keeps_its_rules_at_a_restart_and_when_the_file_is_bad,
    ])
