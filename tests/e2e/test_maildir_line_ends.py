"""Issue 18: Maildir files have LF line ends (maildir(5), as qmail, Postfix
and Dovecot store them) while the SMTP wire stays CRLF; files written with
CRLF by earlier versions are still read; `accepted` is logged before
`delivered`. Read by real readers: file(1), Python's mailbox, mutt in tmux."""
import email
import email.policy
import itertools
import mailbox
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_queue_and_bounces import reports  # noqa: E402

FILES = os.path.join(harness.SOURCE_DIR, "scenarios", "files")
TEXT = os.path.join(FILES, "death-star-plans.txt")
GIF = os.path.join(FILES, "bb8.gif")

# A message as an earlier version stored it: CRLF everywhere, with a text
# attachment (7bit, so its line ends are the file's) and a base64 one.
OLD_CRLF_MESSAGE = (
    "Received: from old.example ([127.0.0.1])\r\n\tby jaku.com (mailnet) with ESMTP id 18F00000000001\r\n"
    "\tfor <finn@jaku.com>; Sun, 22 Nov 2026 03:04:05 +0000\r\n"
    "Date: Sun, 22 Nov 2026 03:04:05 +0000\r\nFrom: <rey@jaku.com>\r\nTo: <finn@jaku.com>\r\n"
    "Subject: written by an earlier version\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"old1\"\r\n\r\n"
    "--old1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOld text, line one.\r\nLine two.\r\n"
    "--old1\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n\r\n"
    "first note\r\nsecond note\r\n"
    "--old1\r\nContent-Type: image/gif\r\nContent-Disposition: attachment; filename=\"tiny.gif\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n--old1--\r\n").encode()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def mailnet(net, *args):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True,
                          timeout=60)


def node_log_lines(net, domain):
    try:
        with open(os.path.join(net.domain_dir(domain), "node.log"), encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def file_says(path):
    out = subprocess.run(["file", "-b", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    return out.stdout.strip()


def files_in(net, domain, user):
    folder = net.maildir_new(domain, user)
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))]


def raw_session(port, mail_from, rcpts, data):
    """One SMTP transaction with data sent exactly as given (smtplib would
    mend bare CR and LF); returns the reply to the end of the data."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline()
                assert line, "connection closed"
                lines.append(line)
                if line[3:4] != b"-":
                    return b"".join(lines)
        reply()
        for cmd in [b"EHLO lf.example", b"MAIL FROM:<" + mail_from + b">"] + [b"RCPT TO:<" + r + b">" for r in rcpts]:
            s.sendall(cmd + b"\r\n")
            assert reply()[:1] == b"2", cmd
        s.sendall(b"DATA\r\n")
        assert reply().startswith(b"354")
        s.sendall(data + b".\r\n")
        answer = reply()
        s.sendall(b"QUIT\r\n")
        reply()
        return answer


def test_delivered_mail_has_lf_line_ends_for_every_reader():
    out = mailnet(NET, "send", "--from", "rey@jaku.com", "--to", "finn@jaku.com", "--to", "obiwan@jaku.com",
                  "--subject", "Line ends ✓", "--body", ".a leading dot\nsecond line\n",
                  "--attach", TEXT, "--attach", GIF)
    assert out.returncode == 0, out
    (finn,) = [p for p in harness.wait_for(lambda: files_in(NET, "jaku.com", "finn"), 15, "finn's copy")]
    (obiwan,) = harness.wait_for(lambda: files_in(NET, "jaku.com", "obiwan"), 15, "obiwan's copy")
    raw = read(finn)
    assert b"\r" not in raw, raw[:400]
    assert raw.startswith(b"Received: from "), raw[:200]
    # Stored once: the same file under the same name in both Maildirs.
    assert os.path.basename(finn) == os.path.basename(obiwan)
    assert os.stat(finn).st_ino == os.stat(obiwan).st_ino and os.stat(finn).st_nlink == 2
    said = file_says(finn)
    assert "CRLF" not in said and "CR line" not in said and "text" in said, said

    (msg,) = list(mailbox.Maildir(os.path.dirname(os.path.dirname(finn)), create=False))
    assert msg["Subject"] is not None and "\r" not in msg["Subject"]
    for part in msg.walk():
        if not part.is_multipart():
            assert "\r" not in part.get_payload(), part.get_payload()[:200]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Line ends ✓", parsed["Subject"]
    assert parsed.get_body(("plain",)).get_content() == ".a leading dot\nsecond line\n"
    attached = {p.get_filename(): p.get_payload(decode=True) for p in parsed.iter_attachments()}
    assert attached == {"death-star-plans.txt": read(TEXT), "bb8.gif": read(GIF)}

    # The node saved the attachments from that file, byte for byte.
    saved = os.path.join(NET.domain_dir("jaku.com"), "attachments", os.path.basename(finn))
    harness.wait_for(lambda: any("event=attachments" in l and "mailbox=finn" in l and "saved=2" in l
                                 for l in node_log_lines(NET, "jaku.com")), 15, "attachments saved for finn")
    assert read(os.path.join(saved, "death-star-plans.txt")) == read(TEXT)
    assert read(os.path.join(saved, "bb8.gif")) == read(GIF)

    show = mailnet(NET, "show", finn)  # the name alone is finn's and obiwan's
    assert show.returncode == 0, show
    text = show.stdout.decode()
    assert "Subject: Line ends ✓" in text and ".a leading dot\nsecond line\n" in text, text
    assert "\\r" not in text and "\\x0d" not in text, text
    assert f"death-star-plans.txt  text/plain  {len(read(TEXT))} bytes" in text, text
    assert "Attachments: 2" in text and "Saved in:" in text, text


def test_an_earlier_versions_crlf_file_reads_as_its_lf_twin():
    """inbox and show read a CRLF file by hand in a Maildir as they read the
    same message with LF line ends: the same columns, text and attachments."""
    folder = NET.maildir_new("jaku.com", "tarkin")  # a Maildir of its own: user tarkin@jaku.com is unlisted
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for sub in ("tmp", "cur"):
        os.makedirs(os.path.join(os.path.dirname(folder), sub), mode=0o700, exist_ok=True)
    old = os.path.join(folder, "1700000000.M000001P1Q1.oldcrlf")
    twin = os.path.join(folder, "1700000000.M000002P1Q1.lftwin")
    with open(old, "wb") as f:
        f.write(OLD_CRLF_MESSAGE)
    with open(twin, "wb") as f:
        f.write(OLD_CRLF_MESSAGE.replace(b"\r\n", b"\n"))
    assert "CRLF" in file_says(old) and "CRLF" not in file_says(twin)

    inbox = mailnet(NET, "inbox", "jaku.com", "tarkin")
    assert inbox.returncode == 0, inbox
    rows = [line for line in inbox.stdout.decode().splitlines() if "written by an earlier version" in line]
    assert len(rows) == 2, inbox.stdout.decode()
    assert rows[0].split("/")[0] == rows[1].split("/")[0], rows  # date, from, subject, attachments alike
    assert re.search(r"\s2\s+/", rows[0]), rows
    assert "\\r" not in inbox.stdout.decode()

    shown = []
    for path in (old, twin):
        out = mailnet(NET, "show", os.path.basename(path))
        assert out.returncode == 0, out
        shown.append(out.stdout.decode().split("\n", 1)[1])  # all but the File: line
    # Alike but for the 7bit text attachment, whose bytes are the file's own
    # line ends, decoded: "first note", a line end, "second note".
    assert "notes.txt  text/plain  23 bytes" in shown[0] and "notes.txt  text/plain  22 bytes" in shown[1], shown
    assert shown[0].replace("23 bytes", "22 bytes") == shown[1], shown
    assert "Old text, line one.\nLine two.\n" in shown[0] and "\\r" not in shown[0], shown[0]
    assert "tiny.gif  image/gif  14 bytes" in shown[0] and "MIME problem" not in shown[0], shown[0]
    shutil.rmtree(os.path.dirname(folder))


def test_bare_cr_and_bare_lf_are_stored_as_postfix_stores_them():
    """Each CRLF becomes LF; a bare LF is a line end already; a lone CR is
    content and stays (Postfix ends a record at LF and strips one CR before
    it, so "\\r\\r\\n" keeps one CR)."""
    before = len(files_in(NET, "jaku.com", "rey"))
    body = b"one\ntwo\rthree\r\r\nfour\r\n..dot\r\n"
    answer = raw_session(harness.port_of(TOPO, "jaku.com"), b"finn@jaku.com", [b"rey@jaku.com"],
                         b"Subject: bare ends\r\n\r\n" + body)
    assert answer.startswith(b"250"), answer
    path = harness.wait_for(lambda: len(files_in(NET, "jaku.com", "rey")) > before and files_in(NET, "jaku.com", "rey")[-1],
                            15, "rey's copy")
    raw = read(path)
    assert raw.endswith(b"\nSubject: bare ends\n\none\ntwo\rthree\r\nfour\n.dot\n"), raw


def test_the_relay_sends_crlf_as_before_and_bounces_are_stored_with_lf():
    """The queue keeps the wire form: a peer gets every line end as CRLF and
    leading dots stuffed, byte for byte as before. A refused recipient
    bounces into a local Maildir with LF line ends, quoting the original."""
    assert mailnet(NET, "kill", "deathstar.com").returncode == 0
    port = harness.port_of(TOPO, "deathstar.com")
    harness.wait_for(lambda: _port_free(port), 15, "deathstar.com's port to be free")
    gone = {"RCPT": lambda line, s: "550 5.1.1 no such user" if b"gone@" in line else None}
    with harness.FakeSmtpPeer(port, name="deathstar.com", replies=gone) as peer:
        # Stuffed, as sent. "\r\r\n" is two line ends on the wire, one in a Maildir:
        # only a queue that keeps the wire form sends it as before.
        body = b"..dot first\r\nbare\nlf and lone\rcr\r\ncr before\r\r\n...two\r\n"
        answer = raw_session(harness.port_of(TOPO, "jaku.com"), b"rey@jaku.com",
                             [b"vader@deathstar.com", b"gone@deathstar.com"],
                             b"From: <rey@jaku.com>\r\nSubject: to the peer\r\n\r\n" + body)
        assert answer.startswith(b"250"), answer
        assert mailnet(NET, "flush", "jaku.com").returncode == 0
        (wire,) = harness.wait_for(lambda: peer.delivered(), 20, "the relayed message at the peer")
        # The fake keeps the lines as sent (stuffed), each with its CRLF.
        assert wire.endswith(b"\r\nSubject: to the peer\r\n\r\n"
                             b"..dot first\r\nbare\r\nlf and lone\r\ncr\r\ncr before\r\n\r\n...two\r\n"), wire
        assert wire.replace(b"\r\n", b"").count(b"\r") == 0 and wire.replace(b"\r\n", b"").count(b"\n") == 0

        def bounce():
            found = [p for p in files_in(NET, "jaku.com", "rey") if b"multipart/report" in read(p)]
            return found and found[0]
        path = harness.wait_for(bounce, 20, "the bounce for gone@deathstar.com")
    raw = read(path)
    assert b"\r" not in raw, raw[:600]
    assert "CRLF" not in file_says(path)
    (report,) = reports([raw])
    assert report["blocks"][0]["Final-Recipient"] == "rfc822; gone@deathstar.com", report
    assert report["blocks"][0]["Status"] == "5.1.1", report
    assert "Subject: to the peer" in report["original"], report["original"]
    msg = mailbox.MaildirMessage(raw)
    for part in msg.walk():
        if not part.is_multipart() and isinstance(part.get_payload(), str):
            assert "\r" not in part.get_payload()
    # bounce_queued before the bounce's own delivered event.
    lines = node_log_lines(NET, "jaku.com")
    queued = [i for i, l in enumerate(lines) if "event=bounce_queued" in l]
    assert queued, lines[-20:]
    bounce_id = lines[queued[-1]].split(" id=", 1)[1].split()[0]
    delivered = [i for i, l in enumerate(lines) if f"id={bounce_id} event=delivered" in l]
    assert delivered and queued[-1] < delivered[0], lines[-20:]


def _port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_accepted_is_logged_before_delivered():
    sender = f"order-{os.getpid()}@jaku.com"
    with smtplib.SMTP("127.0.0.1", harness.port_of(TOPO, "jaku.com"), timeout=10) as s:
        s.sendmail(sender, ["finn@jaku.com", "rey@jaku.com"],  # obiwan's Maildir is for mutt
                   b"Subject: order\r\n\r\nwhich comes first\r\n")

    def events():
        lines = node_log_lines(NET, "jaku.com")
        accepted = [i for i, l in enumerate(lines) if "event=accepted" in l and f"from={sender}" in l]
        if not accepted:
            return None
        qid = lines[accepted[0]].split(" id=", 1)[1].split()[0]
        delivered = [i for i, l in enumerate(lines) if f"id={qid} event=delivered" in l]
        return len(delivered) == 2 and (accepted[0], delivered, lines)
    accepted, delivered, lines = harness.wait_for(events, 15, "accepted and two delivered events")
    assert all(accepted < d for d in delivered), "\n".join(lines[min(delivered + [accepted]):])


TMUX_SERVERS = itertools.count(1)


def mutt_screen(workdir, maildir, open_first=True):
    """The screen of mutt (read-only, no configuration but where the mail
    is) on maildir in a tmux of its own: the index, then the first message's
    pager. Its tmux server is ended by its own socket."""
    muttrc = os.path.join(workdir, "muttrc")
    with open(muttrc, "w") as f:
        f.write(f'set folder="{workdir}"\nset spoolfile="{maildir}"\nset mbox_type=Maildir\n'
                'set pager_stop=yes\nset sort=date\n')
    sock = os.path.join(workdir, f"tmux-{next(TMUX_SERVERS)}.sock")  # a server of its own each time
    tmux = ["tmux", "-S", sock, "-f", "/dev/null"]
    env = dict(os.environ, HOME=workdir, LC_ALL="C.UTF-8", TERM="screen")
    command = f"mutt -n -R -F {muttrc} -f {maildir}"
    subprocess.run(tmux + ["new-session", "-d", "-x", "200", "-y", "50", command], check=True, env=env, timeout=30)
    try:
        def capture():
            return subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True, timeout=30).stdout
        index = harness.wait_for(lambda: (s := capture()) and re.search(r"^\s+1 ", s, re.M) and s, 20, "mutt's index")
        if not open_first:
            return index, ""
        subprocess.run(tmux + ["send-keys", "Enter"], check=True, timeout=30)
        pager = harness.wait_for(lambda: (s := capture()) and "i:Exit" in s and s, 20, "mutt's pager")
        return index, pager
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True, timeout=30)


def test_mutt_shows_no_carriage_returns():
    box = os.path.join(NET.run_dir, "jaku.com", "mail", "obiwan")  # the message of the first test alone
    index, pager = mutt_screen(NET.workdir, box)
    assert "Line ends" in index, index
    assert "Subject: Line ends" in pager and ".a leading dot" in pager, pager
    assert "^M" not in index and "^M" not in pager, pager
    # The same reader shows ^M on a CRLF file, so the check above can fail.
    old_box = os.path.join(NET.workdir, "oldbox")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(old_box, sub))
    with open(os.path.join(old_box, "new", "1700000000.M1P1Q1.oldcrlf"), "wb") as f:
        f.write(OLD_CRLF_MESSAGE)
    _, old_pager = mutt_screen(NET.workdir, old_box)
    assert "^M" in old_pager, old_pager


if __name__ == "__main__":
    for tool in ("file", "mutt", "tmux"):
        if not shutil.which(tool):
            raise SystemExit(f"missing {tool}: run scripts/install-deps.sh")
    TOPO = harness.relay_in_plain_text(harness.two_domain_topology(name="lineends"))
    TOPO["defaults"]["retry"] = {"first": "300ms", "max": "1s", "give_up_after": "1m"}
    with harness.Network(TOPO) as NET:
        NET.start()
        code = harness.run_tests(exit=False, tests=[
            test_delivered_mail_has_lf_line_ends_for_every_reader,
            test_an_earlier_versions_crlf_file_reads_as_its_lf_twin,
            test_bare_cr_and_bare_lf_are_stored_as_postfix_stores_them,
            test_the_relay_sends_crlf_as_before_and_bounces_are_stored_with_lf,
            test_accepted_is_logged_before_delivered,
            test_mutt_shows_no_carriage_returns,
        ])
    sys.exit(code)
