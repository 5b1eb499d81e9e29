"""Issue 16: text from mail, logs and other servers reaches the terminal
escaped. Mail carrying ESC/OSC/CSI sequences, C1 controls (UTF-8 and raw),
bidi overrides and invalid UTF-8 (raw, and RFC 2047-encoded) goes through a
real network; `inbox`, `show`, `logs`, `queue` and `status` must print none
of those bytes, only their visible escapes. A fake peer server answers the
relay with such a reply, so that the queue's last error and the node's log
carry it too, and the run folder's own name carries some (file names)."""
import base64
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

OSC_TITLE = "\x1b]0;pwned\x07"
CSI_ERASE = "\x1b[2K"
BIDI = "\u202e"
C1_CSI = "\u009b"

# Code points a terminal acts on, or that reorder what it shows.
UNSAFE = set(range(0x00, 0x20)) - {0x09, 0x0A} | {0x7F} | set(range(0x80, 0xA0)) | {
    0x061C, 0x200E, 0x200F, 0x2028, 0x2029} | set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def assert_inert(raw, what):
    """raw (bytes a command printed) is well-formed UTF-8 without one unsafe character."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError(f"{what} printed invalid UTF-8 ({e}):\n{raw!r}")
    bad = sorted({f"U+{ord(c):04X}" for c in text if ord(c) in UNSAFE})
    assert not bad, f"{what} printed raw {', '.join(bad)}:\n{raw!r}"
    return text


def mailnet(*args):
    out = subprocess.run([harness.binary("mailnet"), *args], capture_output=True, timeout=60)
    assert out.returncode == 0, f"mailnet {args} -> {out.returncode}: {out.stdout!r} {out.stderr!r}"
    return out.stdout


# A fake peer on a stopped node's port answers MAIL with a 451 whose text is hostile.
HOSTILE_451 = ("451 4.3.0 busy " + OSC_TITLE + CSI_ERASE + BIDI + C1_CSI).encode() + b"\rX\x9b\xff end\r\n"


def fake_peer(port):
    return harness.FakeSmtpPeer(port, capabilities=(), replies={"MAIL": HOSTILE_451}, unknown="503 5.5.1 no",
                                session_timeout=10)


def hostile_message():
    encoded = base64.b64encode((OSC_TITLE + CSI_ERASE + BIDI + "encoded").encode()).decode()
    attachment_name = "%1B%5D0%3Bfile%07" + "%E2%80%AE" + "gpj.exe"
    return (
        b"From: \"Mallory \x1b[31m\" <rey@jaku.com>\r\n"
        b"To: finn@jaku.com\r\n"
        b"Subject: raw " + (OSC_TITLE + CSI_ERASE + BIDI + C1_CSI).encode() + b"\x9b\xff =?utf-8?b?" +
        encoded.encode() + b"?=\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"first line\r\nover\rwrite " + (CSI_ERASE + "\x1b[2J" + BIDI).encode() + b"\xc2\x85\xff\r\nlast line\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''" + attachment_name.encode() + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n"
        b"--b--\r\n")


def test_cli_prints_hostile_text_escaped():
    # The run folder's own name carries ESC and a bidi override: paths are printed too.
    workdir = tempfile.mkdtemp(prefix="mailnet-e2e-\x1b[2K\u202e-")
    try:
        topo = harness.relay_in_plain_text(harness.two_domain_topology(name="escapes"))
        with harness.Network(topo, workdir=workdir) as net:
            net.start()
            run = net.run_dir
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
                s.sendmail("rey@jaku.com", ["finn@jaku.com"], hostile_message())
            net.wait_messages("jaku.com", "finn", 1)
            message = os.listdir(net.maildir_new("jaku.com", "finn"))[0]

            # deathstar.com goes down; a fake server on its port answers the relay with a hostile 451.
            mailnet("stop", "deathstar.com", "--dir", run)
            peer = fake_peer(harness.port_of(topo, "deathstar.com"))
            try:
                with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
                    s.sendmail("rey@jaku.com", ["vader@deathstar.com"], b"Subject: to the fake\r\n\r\nhi\r\n")
                queue_raw = harness.wait_for(lambda: (lambda out: b"busy" in out and out)(mailnet("queue", "--dir", run)),
                                             30, "the fake peer's 451 in the queue")
            finally:
                peer.close()

            raw = {
                "inbox": mailnet("inbox", "jaku.com", "finn", "--dir", run),
                "show": mailnet("show", message, "--dir", run),
                "queue": queue_raw,
                "logs": mailnet("logs", "jaku.com", "--dir", run),
                "status": mailnet("status", "--dir", run),
                "status --json": mailnet("status", "--json", "--dir", run),
                "mailnet up": net.output().encode(),  # it echoes its children's log lines
            }
            leaks = []
            for what, out in raw.items():
                try:
                    assert_inert(out, what)
                except AssertionError as e:
                    leaks.append(str(e))
            assert not leaks, "\n".join(leaks)
            text = {what: out.decode() for what, out in raw.items()}

            assert "\\x1b]0;pwned\\x07" in text["inbox"] and "\\u202e" in text["inbox"], text["inbox"]
            show = text["show"]
            # (The MIME parser reads 8-bit header bytes as Latin-1 and drops a lone CR: raw bytes
            # reach the terminal through the queue and the logs below.)
            for visible in ("\\x1b]0;pwned\\x07", "\\x1b[2K", "\\u202e", "\\u009b", "\\x1b[31m", "\\u0085",
                            "\\x1b]0;file\\x07\\u202egpj.exe"):
                assert visible in show, f"{visible} not in show's output:\n{show}"
            assert "first line\nover" in show and "\nlast line\n" in show, f"the body's lines are kept:\n{show}"
            assert "\\x1b]0;pwned\\x07\\x1b[2K\\u202eencoded" in show, f"the RFC 2047 subject, decoded then escaped:\n{show}"
            assert "busy \\x1b]0;pwned\\x07\\x1b[2K\\u202e\\u009b\\rX" in text["queue"], text["queue"]
            # node.log keeps the reply's bytes as they came (C0 as \x.. already): the rest is escaped here.
            logs = text["logs"]
            assert "busy" in logs and "\\u202e" in logs and "\\u009b" in logs and "\\x9b\\xff end" in logs, logs
            assert "\\x1b[2K\\u202e" in text["status"], f"the folder's name, escaped:\n{text['status']}"
            assert "\x1b[2K\u202e" in json.loads(text["status --json"])["dir"], "--json stays JSON, with the name as it is"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_run_folder_whose_name_is_not_utf8():
    """The launcher's JSON (network.json, the control socket's answers) used to throw on
    such a path: `up` died with an internal error."""
    base = tempfile.mkdtemp(prefix="mailnet-e2e-")
    try:
        net = harness.Network(harness.two_domain_topology(name="bytes"), workdir=base)
        net.run_dir = os.fsdecode(os.path.join(os.fsencode(base), b"run-\xff\x9b"))
        with net:
            net.start()
            status = assert_inert(mailnet("status", "--dir", net.run_dir), "status")
            assert "jaku.com" in status and "ready" in status, status
            with open(os.path.join(net.run_dir, "network.json"), "rb") as f:
                assert json.load(f)["nodes"], "network.json is written"
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    harness.run_tests([test_cli_prints_hostile_text_escaped, test_a_run_folder_whose_name_is_not_utf8])
