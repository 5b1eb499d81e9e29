"""SPF, DKIM and DMARC on received mail, with real processes: clients send
from chosen loopback addresses (127.0.1.x; all of 127/8 is local on Linux),
the records come from the topology's dns.records, a DKIM signature from
dkimpy (python3-dkim) with a key published the same way.

Every record lives on a subdomain of deathstar.com (mail., soft., broken.,
q., none.): the records a network serves by default for each domain (SPF,
DMARC and DKIM at the domain itself) never meet these names, so the verdicts
here hold with or without them. One exception is named where it matters:
none.deathstar.com has no _dmarc record of its own, so its DMARC verdict
falls back to deathstar.com's (the organizational domain)."""
import base64
import json
import os
import re
import smtplib
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import dkim  # noqa: E402  (Debian's python3-dkim)

GOOD = "127.0.1.2"   # the address the records allow
OTHER = "127.0.1.9"  # any other
SELECTOR = "e2e"


def make_key():
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                             capture_output=True).stdout
        with open(key, "rb") as f:
            return f.read(), base64.b64encode(der).decode()


PRIVATE_KEY, PUBLIC_KEY = make_key()


def records():
    txt = lambda name, value: {"name": name, "type": "TXT", "value": value}  # noqa: E731
    return [
        txt("mail.deathstar.com", f"v=spf1 ip4:{GOOD} -all"),
        txt("_dmarc.mail.deathstar.com", "v=DMARC1; p=reject"),
        txt(f"{SELECTOR}._domainkey.mail.deathstar.com", f"v=DKIM1; k=rsa; p={PUBLIC_KEY}"),
        txt("soft.deathstar.com", f"v=spf1 ip4:{GOOD} ~all"),
        txt("_dmarc.soft.deathstar.com", "v=DMARC1; p=none"),
        txt("broken.deathstar.com", "v=spf1 ip4:300.1.1.1 -all"),
        txt("_dmarc.broken.deathstar.com", "v=DMARC1; p=none"),
        txt("q.deathstar.com", f"v=spf1 ip4:{GOOD} -all"),
        txt("_dmarc.q.deathstar.com", "v=DMARC1; p=quarantine"),
    ]


def topology(name, **resolver):
    ports = harness.free_tcp_ports(5)
    return {
        "name": name,
        "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}", "ttl": 0, **resolver},
        "domains": [
            # report (the default), enforce and off side by side; deathstar.com holds the records.
            {"name": "jaku.com", "listen": f"127.0.0.1:{ports[0]}", "users": ["rey"]},
            {"name": "hoth.com", "listen": f"127.0.0.1:{ports[1]}", "users": ["luke"],
             "policy": {"dmarc": "enforce"}},
            {"name": "bespin.com", "listen": f"127.0.0.1:{ports[2]}", "users": ["lando"],
             "policy": {"dmarc": "off"}},
            {"name": "deathstar.com", "listen": f"127.0.0.1:{ports[3]}", "users": ["vader"],
             "dns": {"records": records()}},
            # Its node appends a footer to what it receives (an "alter" fault), before its own checks.
            {"name": "endor.com", "listen": f"127.0.0.1:{ports[4]}", "users": ["wicket"]},
        ],
        "faults": {"rules": [{"name": "footer", "to": "endor.com", "stage": "end_of_data", "action": "alter"}]},
    }


def message(subject, from_addr, to, body="The plans are in the droid.\r\n"):
    return (f"From: {from_addr}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@e2e>\r\n\r\n"
            f"{body}").encode()


def signed(msg):
    sig = dkim.sign(msg, SELECTOR.encode(), b"mail.deathstar.com", PRIVATE_KEY,
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + msg


def send(net, domain, source, mail_from, rcpt, data, helo="client.example"):
    """(code, reply) of the end of DATA, sent from source."""
    port = harness.port_of(net.topology, domain)
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, source_address=(source, 0), timeout=30) as s:
        s.ehlo(helo)
        code, reply = s.mail(mail_from)
        assert code == 250, (code, reply)
        code, reply = s.rcpt(rcpt)
        assert code == 250, (code, reply)
        code, reply = s.data(data)
        return code, reply.decode()


def stored(net, domain, user, subject, folder=""):
    """The delivered copy whose Subject is subject (in the mailbox's folder, e.g. .Junk)."""
    new = os.path.join(net.run_dir, domain, "mail", user, folder, "new")

    def find():
        if not os.path.isdir(new):
            return None
        for name in os.listdir(new):
            with open(os.path.join(new, name), "rb") as f:
                data = f.read().decode()
            if f"Subject: {subject}\n" in data:
                return data
        return None
    return harness.wait_for(find, 20, f"{subject} in {domain}/{user}/{folder}new")


def auth_results(data):
    """The Authentication-Results: field, unfolded."""
    m = re.search(r"^Authentication-Results: (.*(?:\n[ \t].*)*)", data, re.M)
    assert m, data
    return re.sub(r"\s+", " ", m.group(1))


def node_log(net, domain):
    with open(os.path.join(net.run_dir, domain, "node.log")) as f:
        return f.read()


def events(net, domain, qid):
    return [line for line in node_log(net, domain).splitlines() if f" id={qid} " in line]


def queue_id(reply):
    return reply.rsplit(" ", 1)[1]


def test_spf_verdicts(net):
    cases = [("spf-pass", GOOD, "vader@mail.deathstar.com", "pass"),
             ("spf-fail", OTHER, "vader@mail.deathstar.com", "fail"),
             ("spf-softfail", OTHER, "x@soft.deathstar.com", "softfail"),
             ("spf-none", OTHER, "x@none.deathstar.com", "none"),
             ("spf-permerror", OTHER, "x@broken.deathstar.com", "permerror")]
    for subject, source, sender, want in cases:
        code, reply = send(net, "jaku.com", source, sender, "rey@jaku.com",
                           message(subject, sender, "rey@jaku.com"))
        assert code == 250, (subject, code, reply)
        ar = auth_results(stored(net, "jaku.com", "rey", subject))
        sender_domain = sender.split("@")[1]
        assert ar.startswith(f"jaku.com; spf={want}"), (subject, ar)
        assert f"smtp.mailfrom={sender_domain}" in ar, ar
        # The node's own Received: comes first, its verdicts right under it.
        data = stored(net, "jaku.com", "rey", subject)
        assert data.index("Received: from client.example") < data.index("Authentication-Results: jaku.com;"), data
        qid = queue_id(reply)
        harness.wait_for(lambda: any(f"event=spf result={want} " in e for e in events(net, "jaku.com", qid)), 10,
                         f"event=spf result={want} for {qid}")
    # The HELO identity is checked too: client.example has no record.
    assert "helo_result=none" in node_log(net, "jaku.com")


def test_dkim_pass_and_altered_body(net):
    sender = "vader@mail.deathstar.com"
    good = signed(message("dkim-good", sender, "rey@jaku.com"))
    code, reply = send(net, "jaku.com", GOOD, sender, "rey@jaku.com", good)
    assert code == 250, reply
    ar = auth_results(stored(net, "jaku.com", "rey", "dkim-good"))
    assert f"dkim=pass header.d=mail.deathstar.com header.s={SELECTOR}" in ar, ar
    assert "dmarc=pass" in ar and "header.from=mail.deathstar.com" in ar, ar

    # Signed, then one word of the body changed in transit.
    altered = signed(message("dkim-altered", sender, "rey@jaku.com")).replace(b"droid", b"drone")
    code, reply = send(net, "jaku.com", OTHER, sender, "rey@jaku.com", altered)
    assert code == 250, reply  # report: the header only
    ar = auth_results(stored(net, "jaku.com", "rey", "dkim-altered"))
    assert "dkim=fail" in ar and "spf=fail" in ar, ar
    assert "dmarc=fail (p=reject)" in ar, ar
    qid = queue_id(reply)
    harness.wait_for(lambda: any("event=dkim result=fail " in e for e in events(net, "jaku.com", qid)), 10,
                     "event=dkim result=fail")


def test_dkim_fails_when_the_receiving_node_alters_the_body(net):
    sender = "vader@mail.deathstar.com"
    code, reply = send(net, "endor.com", GOOD, sender, "wicket@endor.com",
                       signed(message("footer", sender, "wicket@endor.com")))
    assert code == 250, reply
    data = stored(net, "endor.com", "wicket", "footer")
    assert "fault rule footer" in data, data
    ar = auth_results(data)
    assert "dkim=fail" in ar and "spf=pass" in ar and "dmarc=pass" in ar, ar  # SPF still aligns


def test_dmarc_enforce_rejects_and_quarantines(net):
    # The forgery: From mail.deathstar.com (p=reject) from an address its SPF does not allow, no signature.
    sender = "vader@mail.deathstar.com"
    code, reply = send(net, "hoth.com", OTHER, sender, "luke@hoth.com", message("forged", sender, "luke@hoth.com"))
    assert code == 550 and reply.startswith("5.7.1 "), (code, reply)
    assert "mail.deathstar.com" in reply, reply
    # The same From, signed and from its own address: delivered, into new/.
    code, reply = send(net, "hoth.com", GOOD, sender, "luke@hoth.com",
                       signed(message("genuine", sender, "luke@hoth.com")))
    assert code == 250, reply
    assert "dmarc=pass" in auth_results(stored(net, "hoth.com", "luke", "genuine"))
    # p=quarantine: delivered, into .Junk.
    q = "x@q.deathstar.com"
    code, reply = send(net, "hoth.com", OTHER, q, "luke@hoth.com", message("quarantined", q, "luke@hoth.com"))
    assert code == 250, reply
    ar = auth_results(stored(net, "hoth.com", "luke", "quarantined", ".Junk"))
    assert "dmarc=fail (p=quarantine)" in ar, ar
    qid = queue_id(reply)
    assert not any("quarantined" in m.decode() for m in net.messages("hoth.com", "luke")), "quarantined mail in new/"

    # Counters: status --json, /metrics; the trace of the quarantined message shows its verdicts.
    def counted():
        out = subprocess.run([harness.binary("mailnet"), "status", "--json", "--dir", net.run_dir],
                             capture_output=True, text=True, timeout=30)
        node = next(n for n in json.loads(out.stdout)["nodes"] if n["name"] == "hoth.com")
        d = node["mail_auth"]["dmarc"]
        return (d["rejected"], d["quarantined"], d["pass"]) == (1, 1, 1) and node
    node = harness.wait_for(counted, 15, "dmarc counters in status --json")
    assert node["dmarc_policy"] == "enforce", node
    assert node["mail_auth"]["spf"]["fail"] == 2, node
    url = harness.web_url(net.topology)
    metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    assert 'mailnet_dmarc_actions_total{domain="hoth.com",action="rejected"} 1' in metrics, metrics
    assert 'mailnet_dmarc_total{domain="hoth.com",result="pass"} 1' in metrics, metrics
    trace = json.loads(urllib.request.urlopen(f"{url}/api/v1/messages/{qid}/trace", timeout=30).read())
    verdicts = {e["event"]: e for e in trace["events"] if e["event"] in ("spf", "dkim", "dmarc")}
    assert verdicts["spf"]["result"] == "fail", trace
    assert verdicts["dkim"]["result"] == "none", trace
    assert (verdicts["dmarc"]["result"], verdicts["dmarc"]["action"]) == ("fail", "quarantined"), trace
    network = json.loads(urllib.request.urlopen(url + "/api/v1/network", timeout=30).read())
    hoth = next(n for n in network["nodes"] if n["name"] == "hoth.com")
    assert hoth["mail_auth"]["dmarc"]["quarantined"] == 1, hoth
    junk_folder_is_shown(net, url)


def junk_folder_is_shown(net, url):
    """luke's quarantined message: its .Junk folder made as a Maildir++
    subfolder, and the message shown by `mailnet inbox` (luke/Junk) and
    `show`, and by GET /api/v1/messages (folder Junk, and a folder= filter)."""
    junk = os.path.join(net.run_dir, "hoth.com", "mail", "luke", ".Junk")
    st = os.lstat(os.path.join(junk, "maildirfolder"))
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600 and st.st_size == 0, (oct(st.st_mode), st.st_size)
    (name,) = os.listdir(os.path.join(junk, "new"))

    def mailnet(*args):
        out = subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout
    rows = mailnet("inbox", "hoth.com", "luke").splitlines()
    assert any(r.startswith("luke/Junk ") and "quarantined" in r for r in rows), rows
    assert any(r.startswith("luke ") and "genuine" in r for r in rows), rows
    assert not any(r.startswith("luke ") and "quarantined" in r for r in rows), rows
    shown = mailnet("show", name)
    assert "\nFolder:  Junk (quarantined" in shown and "Subject: quarantined" in shown, shown
    assert "Folder:" not in mailnet("show", os.path.join(net.maildir_new("hoth.com", "luke"),
                                                          os.listdir(net.maildir_new("hoth.com", "luke"))[0]))

    def listed(query):
        doc = json.loads(urllib.request.urlopen(f"{url}/api/v1/messages?domain=hoth.com&user=luke{query}",
                                                timeout=30).read())
        return {m["subject"]: m["folder"] for m in doc["messages"]}
    both = listed("")
    assert both["quarantined"] == "Junk" and both["genuine"] == "INBOX", both
    assert set(listed("&folder=Junk").values()) == {"Junk"} and "quarantined" in listed("&folder=Junk")
    assert "quarantined" not in listed("&folder=inbox") and "genuine" in listed("&folder=INBOX")
    try:
        urllib.request.urlopen(f"{url}/api/v1/messages?folder=Spam", timeout=30)
        raise AssertionError("folder=Spam was taken")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "folder must be INBOX or Junk" in e.read().decode(), e
    detail = json.loads(urllib.request.urlopen(f"{url}/api/v1/messages/{name.split(':')[0]}", timeout=30).read())
    assert [(b["user"], b["folder"]) for b in detail["mailboxes"]] == [("luke", "Junk")], detail
    # Its trace by its Maildir name, as the message page asks for it.
    trace = json.loads(urllib.request.urlopen(f"{url}/api/v1/messages/{name.split(':')[0]}/trace", timeout=30).read())
    assert any(e["event"] == "dmarc" and e.get("action") == "quarantined" for e in trace["events"]), trace


def test_policy_off_checks_nothing(net):
    sender = "vader@mail.deathstar.com"
    code, reply = send(net, "bespin.com", OTHER, sender, "lando@bespin.com", message("unchecked", sender, "lando"))
    assert code == 250, reply
    data = stored(net, "bespin.com", "lando", "unchecked")
    assert "Authentication-Results:" not in data, data
    qid = queue_id(reply)
    harness.wait_for(lambda: any("event=accepted" in e for e in events(net, "bespin.com", qid)), 10, "accepted")
    assert not any(re.search(r"event=(spf|dkim|dmarc) ", e) for e in events(net, "bespin.com", qid))


def test_temperror_when_the_resolver_is_down():
    # One attempt of 300 ms per question: the dead resolver costs the check a few of them.
    with harness.Network(topology("authdown", timeout="300ms", attempts=1)) as net:
        net.start()
        resolver = net.child_pids()["resolver"]
        start = harness.process_start(resolver)
        harness.kill_processes({resolver: start})
        harness.wait_for(lambda: not harness.pid_alive(resolver), 10, "the resolver gone")
        sender = "vader@mail.deathstar.com"
        # Under enforce, a temperror is no reason to refuse: accepted.
        code, reply = send(net, "hoth.com", OTHER, sender, "luke@hoth.com", message("no-dns", sender, "luke"))
        assert code == 250, (code, reply)
        ar = auth_results(stored(net, "hoth.com", "luke", "no-dns"))
        assert "spf=temperror" in ar and "dmarc=temperror" in ar, ar


def on(net, test):
    """test(net) as a test of run_tests, under its own name."""
    def run():
        test(net)
    run.__name__ = test.__name__
    return run


def main():
    shared = [test_spf_verdicts, test_dkim_pass_and_altered_body, test_dkim_fails_when_the_receiving_node_alters_the_body,
              test_dmarc_enforce_rejects_and_quarantines, test_policy_off_checks_nothing]
    words = sys.argv[1:]
    codes = []
    if any(all(w in t.__name__ for w in words) for t in shared):
        with harness.Network(topology("mailauth")) as net:
            net.start()
            codes.append(harness.run_tests([on(net, t) for t in shared], exit=False))
    if all(w in test_temperror_when_the_resolver_is_down.__name__ for w in words):
        codes.append(harness.run_tests([test_temperror_when_the_resolver_is_down], exit=False))
    sys.exit(1 if not codes or any(codes) else 0)


if __name__ == "__main__":
    main()
