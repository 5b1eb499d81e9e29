#!/usr/bin/python3
"""Issue 22, records and DKIM signing, with real processes.

- The resolver serves each domain's SPF, DMARC and DKIM TXT records by
  default (dig over UDP and TCP); the DKIM key is RSA of at least 2048 bits.
- Mail from jaku.com to deathstar.com arrives with a DKIM-Signature that
  dkimpy (Debian's python3-dkim, the library behind `dkimverify`) verifies,
  its key looked up with dnspython at the network's own resolver; the same
  message with its body altered after signing fails.
- run/<name>/<domain>/dkim.key: 0600 even under umask 0, kept across `up`,
  new with --fresh; a link planted there is refused, never followed.
- "dkim": false: no signature; a key the node cannot sign with: the mail
  goes unsigned with event=dkim_unavailable (told at the first message to
  sign, and for each message, naming the file and why), never lost.
"""

import base64
import os
import re
import shutil
import smtplib
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import dkim  # noqa: E402  Debian's python3-dkim
import dns.message  # noqa: E402  Debian's python3-dnspython
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402

DIG = shutil.which("dig") or "/usr/bin/dig"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def resolver_of(topo):
    host, port = topo["resolver"]["listen"].rsplit(":", 1)
    return host, int(port)


def txt_lookup(topo, tcp=False):
    """dkimpy's dnsfunc: the TXT strings of a name, joined, asked of the network's resolver."""
    host, port = resolver_of(topo)

    def lookup(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        ask = dns.query.tcp if tcp else dns.query.udp
        reply = ask(query, host, port=port, timeout=timeout)
        for rrset in reply.answer:
            for rr in rrset:
                return b"".join(rr.strings)
        return None
    return lookup


def dig(topo, name, *options):
    host, port = resolver_of(topo)
    r = subprocess.run([DIG, "+short", "+time=5", "+tries=2", *options, "TXT", name, "@" + host, "-p", str(port)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    return r.stdout.strip()


def joined(dig_line):
    """dig +short's "a" "b" as the text readers get: the strings joined."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', dig_line))


def send(topo, sender, rcpt, subject, body="Help me, Obi-Wan Kenobi.\r\n", via=None, mail_from=None):
    """From: sender, through the node of via (default: the sender's domain)."""
    message = (f"From: Rey <{sender}>\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
               f"Date: Thu, 03 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@test>\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, via or sender.split("@")[1]), timeout=30) as s:
        s.sendmail(mail_from or sender, [rcpt], message.encode())


def wire(maildir_message):
    """A Maildir copy (LF line ends) as it went on the wire (CRLF)."""
    return maildir_message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def node_log(net, domain):
    with open(os.path.join(net.domain_dir(domain), "node.log")) as f:
        return f.read()


def key_bits_of_record(record):
    p = record.split("p=", 1)[1]
    der = base64.b64decode(p)
    r = subprocess.run([OPENSSL, "pkey", "-pubin", "-inform", "DER", "-noout", "-text"], input=der,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r
    return int(re.search(rb"\((\d+) bit\)", r.stdout).group(1))


def key_file(net, domain):
    return os.path.join(net.domain_dir(domain), "dkim.key")


def test_records_served_and_signed_mail_verifies_against_the_network_resolver():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        # umask 0 for the launcher: the key file's mode must not follow it.
        net.start(preexec_fn=lambda: os.umask(0))
        jaku_host = topo["domains"][0]["listen"].rsplit(":", 1)[0]
        for options in ((), ("+tcp",), ("+notcp", "+noedns")):
            assert dig(topo, "jaku.com", *options) == f'"v=spf1 ip4:{jaku_host} -all"', options
            assert dig(topo, "_dmarc.jaku.com", *options) == '"v=DMARC1; p=reject; adkim=r; aspf=r"', options
            dkim_answer = dig(topo, "mailnet._domainkey.jaku.com", *options)
            assert dkim_answer.count('" "') == 1, dkim_answer  # two character-strings: 255 bytes, then the rest
            record = joined(dkim_answer)
            assert record.startswith("v=DKIM1; k=rsa; p=MII"), record
        assert key_bits_of_record(record) >= 2048
        mode = os.lstat(key_file(net, "jaku.com")).st_mode
        assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)

        send(topo, "rey@jaku.com", "vader@deathstar.com", "signed one")
        got = net.wait_messages("deathstar.com", "vader", 1, timeout=30)[0]
        head = got.split(b"\n\n", 1)[0]
        assert head.count(b"DKIM-Signature:") == 1, head
        signature = re.sub(rb"\s+", b"", head.split(b"DKIM-Signature:", 1)[1].split(b"\nMessage-ID", 1)[0])
        for tag in (b"d=jaku.com;", b"s=mailnet;", b"a=rsa-sha256;", b"c=relaxed/relaxed;"):
            assert tag in signature, (tag, signature)
        signed = re.search(rb"(?:^|;)h=([^;]*);", signature).group(1).lower().split(b":")
        for field in (b"from", b"to", b"subject", b"date", b"message-id"):
            assert field in signed, (field, signed)
        assert b"received" not in signed, signed
        assert re.search(r"event=accepted .* dkim=mailnet tls=", node_log(net, "jaku.com")), node_log(net, "jaku.com")

        # dkimpy verifies it, its key from the network's resolver (UDP and TCP).
        assert dkim.verify(wire(got), dnsfunc=txt_lookup(topo)), "dkimpy did not verify the signature"
        assert dkim.verify(wire(got), dnsfunc=txt_lookup(topo, tcp=True))
        # A body altered after signing fails; so does a changed Subject.
        altered = wire(got).replace(b"Help me, Obi-Wan Kenobi.", b"Help me, Obi-Wan Kenobi!")
        assert altered != wire(got)
        assert not dkim.verify(altered, dnsfunc=txt_lookup(topo))
        assert not dkim.verify(wire(got).replace(b"Subject: signed one", b"Subject: signed two"),
                               dnsfunc=txt_lookup(topo))

        # jaku.com signs neither its local mail nor mail it relays for another author domain.
        send(topo, "rey@jaku.com", "finn@jaku.com", "local one")
        send(topo, "vader@deathstar.com", "tarkin@deathstar.com", "not from jaku", via="jaku.com",
             mail_from="rey@jaku.com")
        unsigned = net.wait_messages("jaku.com", "finn", 1, timeout=30) + \
            net.wait_messages("deathstar.com", "tarkin", 1, timeout=30)
        assert all(b"DKIM-Signature:" not in m.split(b"\n\n", 1)[0] for m in unsigned), unsigned
        assert len(re.findall(r"event=accepted .* dkim=no tls=", node_log(net, "jaku.com"))) == 2


def up_again(net, *args):
    """`mailnet up` once more in the same folder (after net.stop()): a Network of its own, whose output is new."""
    again = harness.Network(net.topology, workdir=net.workdir)
    again.start(extra_args=args)
    return again


def test_the_key_is_kept_across_up_and_new_with_fresh():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with open(key_file(net, "jaku.com"), "rb") as f:
            first = f.read()
        record = joined(dig(topo, "mailnet._domainkey.jaku.com"))
        assert b"PRIVATE KEY" in first
        assert net.stop() == 0
        with up_again(net) as second:
            with open(key_file(net, "jaku.com"), "rb") as f:
                assert f.read() == first, "a new key without --fresh"
            assert joined(dig(topo, "mailnet._domainkey.jaku.com")) == record
            assert second.stop() == 0
        with up_again(net, "--fresh") as third:
            with open(key_file(net, "jaku.com"), "rb") as f:
                assert f.read() != first, "the same key after --fresh"
            again = joined(dig(topo, "mailnet._domainkey.jaku.com"))
            assert again != record and again.startswith("v=DKIM1; k=rsa; p=")
            # The new key signs what the resolver now serves.
            send(topo, "rey@jaku.com", "vader@deathstar.com", "after fresh")
            got = third.wait_messages("deathstar.com", "vader", 1, timeout=30)[0]
            assert dkim.verify(wire(got), dnsfunc=txt_lookup(topo))


def test_a_link_planted_as_the_key_is_refused_not_followed():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        assert net.stop() == 0
        target = os.path.join(net.workdir, "not-a-key")
        with open(target, "w") as f:
            f.write("precious\n")
        os.remove(key_file(net, "jaku.com"))
        os.symlink(target, key_file(net, "jaku.com"))
        again = harness.Network(net.topology, workdir=net.workdir)
        with again:
            again.start(wait_ready=False)
            assert again.proc.wait(timeout=60) != 0
            again.reader.join(timeout=5)
            assert "dkim.key" in again.output() and "link" in again.output(), again.output()
        with open(target) as f:
            assert f.read() == "precious\n"


def test_dkim_false_and_a_key_that_cannot_sign_send_unsigned():
    topo = harness.two_domain_topology()
    topo["domains"][0]["restart"] = "on-failure"
    topo["domains"][1]["dns"] = {"dkim": False}
    with harness.Network(topo) as net:
        net.start()
        assert not os.path.exists(key_file(net, "deathstar.com"))
        assert dig(topo, "mailnet._domainkey.deathstar.com") == ""
        send(topo, "vader@deathstar.com", "rey@jaku.com", "unsigned by choice")
        got = net.wait_messages("jaku.com", "rey", 1, timeout=30)[0]
        assert b"DKIM-Signature:" not in got, got[:800]
        assert re.search(r"event=accepted .* dkim=no tls=", node_log(net, "deathstar.com"))

        # jaku.com's node restarts with a key libopendkim cannot read: its
        # mail still goes, unsigned, and the log says why.
        with open(key_file(net, "jaku.com"), "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        pid = net.child_pids()["jaku.com"]
        os.kill(pid, 9)
        harness.wait_for(lambda: net.child_pids().get("jaku.com") not in (None, pid), 60, "jaku.com's node restarted")
        harness.wait_for(lambda: _accepts(topo), 60, "jaku.com accepting again")
        send(topo, "rey@jaku.com", "vader@deathstar.com", "unsigned by trouble")
        got = net.wait_messages("deathstar.com", "vader", 1, timeout=30)[0]
        assert b"Subject: unsigned by trouble" in got and b"DKIM-Signature:" not in got, got[:800]
        log = node_log(net, "jaku.com")
        # The node reads its key at the first message to sign: the problem is
        # told once then (no id), and the message it left unsigned says why
        # too; both name the file and the reason.
        why = r'error="cannot use [^"]*/jaku\.com/dkim\.key: not a PEM private key'
        assert re.search(r"Z event=dkim_unavailable " + why, log), log[-2000:]
        assert re.search(r"id=\S+ event=dkim_unavailable " + why, log), log[-2000:]
        assert re.search(r"event=accepted .* dkim=no tls=", log), log[-2000:]


def _accepts(topo):
    try:
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=5) as s:
            return s.noop()[0] == 250
    except OSError:
        return False


if __name__ == "__main__":
    harness.run_tests([v for k, v in sorted(globals().items()) if k.startswith("test_")])
