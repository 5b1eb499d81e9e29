"""Issue 7: `mailnet send` (MIME with attachments), attachments saved on delivery,
`mailnet inbox` and `mailnet show`, and clients nobody here wrote (swaks, smtplib)."""
import email
import email.message
import email.policy
import json
import mailbox
import os
import re
import smtplib
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

FILES = os.path.join(harness.SOURCE_DIR, "scenarios", "files")
JPEG = os.path.join(FILES, "millennium-falcon.jpg")
TEXT = os.path.join(FILES, "death-star-plans.txt")
GIF = os.path.join(FILES, "bb8.gif")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def mailnet(net, *args, stdin=None):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True,
                          input=stdin, timeout=60)


def node_log(net, domain):
    try:
        with open(os.path.join(net.domain_dir(domain), "node.log"), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_extraction(net, domain, user, count=1, timeout=15):
    """Waits until the node logged `count` extraction outcomes for user; returns those lines."""
    def lines():
        found = [line for line in node_log(net, domain).splitlines()
                 if re.search(r"event=(attachments|attachment_error) ", line) and f"mailbox={user}" in line.split()]
        return len(found) >= count and found
    return harness.wait_for(lines, timeout, f"attachment extraction for {user}@{domain}")


def maildir(net, domain, user):
    return mailbox.Maildir(os.path.join(net.domain_dir(domain), "mail", user), create=False)


def parsed(msg):
    """A mailbox.MaildirMessage or raw bytes as an email.message.EmailMessage."""
    raw = msg if isinstance(msg, bytes) else msg.as_bytes()
    return email.message_from_bytes(raw, policy=email.policy.default)


def attachments_of(message):
    return {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}


def saved_folder(net, domain, user):
    """The attachments folder of user's only message: named after its Maildir file."""
    keys = maildir(net, domain, user).keys()
    assert len(keys) == 1, keys
    return os.path.join(net.domain_dir(domain), "attachments", keys[0])


def test_classic_flow_with_three_attachments_and_a_bounce():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        out = mailnet(net, "send", "--from", "vader@deathstar.com", "--to", "obiwan@jaku.com", "--to",
                      "tarkin@deathstar.com", "--to", "luke@genshinimpact.com", "--subject", "Les plans ✓ — Étoile",
                      "--body", "Find the attached plans.\n.\nA line with a dot above.\n",
                      "--attach", JPEG, "--attach", TEXT, "--attach", GIF, "--verbose")
        assert out.returncode == 0, out
        queue_id = out.stdout.decode().strip()
        assert re.fullmatch(r"[0-9A-F]+", queue_id), out.stdout
        dialogue = out.stderr.decode()
        assert "C: MAIL FROM:<vader@deathstar.com>" in dialogue and f"queued as {queue_id}" in dialogue, dialogue
        assert "C: RCPT TO:<luke@genshinimpact.com>" in dialogue, dialogue

        originals = {"millennium-falcon.jpg": read(JPEG), "death-star-plans.txt": read(TEXT), "bb8.gif": read(GIF)}
        for domain, user in (("jaku.com", "obiwan"), ("deathstar.com", "tarkin")):
            net.wait_messages(domain, user, 1)
            lines = wait_extraction(net, domain, user)
            assert "event=attachments" in lines[0] and "saved=3" in lines[0], lines
            folder = saved_folder(net, domain, user)
            assert sorted(os.listdir(folder)) == sorted(originals), os.listdir(folder)
            for name, data in originals.items():
                assert read(os.path.join(folder, name)) == data, f"{domain}/{user}: {name} differs"
            # The .eml in the Maildir stays whole and parses as sent.
            (msg,) = [parsed(m) for m in maildir(net, domain, user)]
            assert msg["Subject"] == "Les plans ✓ — Étoile", msg["Subject"]
            assert msg.get_body(("plain",)).get_content() == "Find the attached plans.\n.\nA line with a dot above.\n"
            assert attachments_of(msg) == originals
            types = {p.get_filename(): p.get_content_type() for p in msg.iter_attachments()}
            assert types == {"millennium-falcon.jpg": "image/jpeg", "death-star-plans.txt": "text/plain",
                             "bb8.gif": "image/gif"}, types

        # vader hears that genshinimpact.com does not exist.
        (bounce,) = [parsed(m) for m in harness.wait_for(
            lambda: net.messages("deathstar.com", "vader"), 15, "the bounce to vader")]
        assert bounce.get_content_type() == "multipart/report", bounce.get_content_type()
        assert "luke@genshinimpact.com" in bounce.as_string() and "5.1.2" in bounce.as_string()

        inbox = mailnet(net, "inbox", "jaku.com", "obiwan")
        assert inbox.returncode == 0, inbox
        text = inbox.stdout.decode()
        assert "Les plans ✓ — Étoile" in text and "vader@deathstar.com" in text and "1 message" in text, text
        row = next(line for line in text.splitlines() if "vader@deathstar.com" in line)
        assert re.search(r"\s3\s+/", row) and os.path.join("jaku.com", "mail", "obiwan") in row, row

        name = maildir(net, "jaku.com", "obiwan").keys()[0]
        show = mailnet(net, "show", name.split(".mailnet")[0])  # a unique prefix of the Maildir name
        assert show.returncode == 0, show
        text = show.stdout.decode()
        assert "Subject: Les plans ✓ — Étoile" in text and "Find the attached plans." in text, text
        assert f"millennium-falcon.jpg  image/jpeg  {len(originals['millennium-falcon.jpg'])} bytes" in text, text
        assert f"bb8.gif  image/gif  {len(originals['bb8.gif'])} bytes" in text, text
        assert "Attachments: 3" in text and "Saved in:" in text, text


def test_send_failures_exit_nonzero_with_the_reason():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        unknown = mailnet(net, "send", "--from", "vader@deathstar.com", "--to", "nobody@deathstar.com",
                          "--subject", "x", "--body", "x")
        assert unknown.returncode == 1 and b"550 5.1.1" in unknown.stderr, unknown
        relay = mailnet(net, "send", "--from", "rey@jaku.com", "--to", "obiwan@jaku.com", "--via", "deathstar.com",
                        "--subject", "x", "--body", "x")
        assert relay.returncode == 1 and b"554 5.7.1" in relay.stderr, relay
        missing = mailnet(net, "send", "--from", "vader@deathstar.com", "--to", "tarkin@deathstar.com",
                          "--subject", "x", "--body", "x", "--attach", "/nonexistent/plans.pdf")
        assert missing.returncode == 2 and b"/nonexistent/plans.pdf: no such file" in missing.stderr, missing
        nowhere = mailnet(net, "send", "--from", "luke@genshinimpact.com", "--to", "tarkin@deathstar.com",
                          "--subject", "x", "--body", "x")
        assert nowhere.returncode == 1 and b"genshinimpact.com is not in this network" in nowhere.stderr, nowhere
        # The body from stdin, and nothing was delivered by the failures above.
        ok = mailnet(net, "send", "--from", "vader@deathstar.com", "--to", "tarkin@deathstar.com",
                     "--subject", "stdin", stdin="from standard input\n".encode())
        assert ok.returncode == 0, ok
        (msg,) = [parsed(m) for m in net.wait_messages("deathstar.com", "tarkin", 1)]
        assert msg.get_content().replace("\r\n", "\n") == "from standard input\n", msg.get_content()
        # A plain text/plain message is not even parsed for attachments (decided before the 250).
        log = open(os.path.join(net.domain_dir("deathstar.com"), "node.log")).read()
        assert "event=attachments" not in log and "event=attachment_error" not in log, log
        assert not os.path.exists(os.path.join(net.domain_dir("deathstar.com"), "attachments"))


def test_send_with_names_cc_bcc_body_file_and_via_host_port():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with tempfile.TemporaryDirectory() as tmp:
            body = os.path.join(tmp, "body.txt")
            with open(body, "w", encoding="utf-8") as f:
                f.write("From a file, in UTF-8: ✓\n")
            port = harness.port_of(topo, "deathstar.com")
            out = mailnet(net, "send", "--from", "Darth Vader <vader@deathstar.com>",
                          "--to", '"Kenobi, Obi-Wan" <obiwan@jaku.com>, rey@jaku.com',
                          "--cc", "Grand Moff Tarkin <tarkin@deathstar.com>", "--bcc", "<finn@jaku.com>",
                          "--subject", "names", "--body-file", body, "--via", f"localhost:{port}", "--verbose")
            assert out.returncode == 0, out
            dialogue = out.stderr.decode()
            assert f"connected to localhost:{port}" in dialogue, dialogue
            assert "C: MAIL FROM:<vader@deathstar.com>" in dialogue, dialogue
            for rcpt in ("obiwan@jaku.com", "rey@jaku.com", "tarkin@deathstar.com", "finn@jaku.com"):
                assert f"C: RCPT TO:<{rcpt}>" in dialogue, dialogue
        for domain, user in (("jaku.com", "obiwan"), ("jaku.com", "rey"), ("deathstar.com", "tarkin"),
                             ("jaku.com", "finn")):
            (msg,) = [parsed(m) for m in net.wait_messages(domain, user, 1)]
            assert msg["From"] == "Darth Vader <vader@deathstar.com>", msg["From"]
            assert [a.addr_spec for a in msg["To"].addresses] == ["obiwan@jaku.com", "rey@jaku.com"], msg["To"]
            assert msg["To"].addresses[0].display_name == "Kenobi, Obi-Wan"
            assert msg["Cc"].addresses[0].addr_spec == "tarkin@deathstar.com", msg["Cc"]
            assert msg["Bcc"] is None and b"finn@jaku.com" not in msg.as_bytes().split(b"\n\n")[0]
            assert msg.get_content().replace("\r\n", "\n") == "From a file, in UTF-8: ✓\n"
        bad = mailnet(net, "send", "--from", "Vader <vader@deathstar.com", "--to", "rey@jaku.com",
                      "--subject", "x", "--body", "x")
        assert bad.returncode == 2 and b"--from: not a mail address" in bad.stderr, bad


def test_inbox_and_show_read_a_network_that_is_down():
    """In the default layout (run/<name> under the current folder), inbox and
    show need no flag after `mailnet down`: the mail is still there to read."""
    topo = harness.two_domain_topology(name="readlater")
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "readlater.json"), "w") as f:
            json.dump(topo, f)

        def cli(*args):
            return subprocess.run([harness.binary("mailnet"), *args], cwd=tmp, capture_output=True, text=True,
                                  timeout=60)
        up = cli("up", "-d", "readlater.json")
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            sent = cli("send", "--from", "rey@jaku.com", "--to", "finn@jaku.com", "--subject", "read me later",
                       "--body", "kept")
            assert sent.returncode == 0, sent.stderr
            new = os.path.join(tmp, "run", "readlater", "jaku.com", "mail", "finn", "new")
            harness.wait_for(lambda: os.path.isdir(new) and os.listdir(new), 10, "finn's message")
        finally:
            down = cli("down")
            harness.stop_network(os.path.join(tmp, "run", "readlater"))  # by pid, if down failed
        assert down.returncode == 0, down.stdout + down.stderr
        inbox = cli("inbox", "jaku.com", "finn")
        assert inbox.returncode == 0 and "read me later" in inbox.stdout, inbox.stdout + inbox.stderr
        name = os.listdir(new)[0]
        show = cli("show", name)
        assert show.returncode == 0 and "read me later" in show.stdout and "kept" in show.stdout, show.stderr


def test_malformed_mime_is_delivered_and_the_failure_logged():
    topo = harness.two_domain_topology()
    raw = ("From: <rey@jaku.com>\r\nTo: <finn@jaku.com>\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           "--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"x.bin\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nnot*base64*at*all\r\n--b1--\r\n").encode()
    with harness.Network(topo) as net:
        net.start()
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("rey@jaku.com", ["finn@jaku.com"], raw)
        (delivered,) = net.wait_messages("jaku.com", "finn", 1)
        # The Maildir copy is whole (after the trace header), with LF line ends (maildir(5)).
        assert delivered.endswith(raw.replace(b"\r\n", b"\n")), delivered
        lines = wait_extraction(net, "jaku.com", "finn")
        assert "event=attachment_error" in lines[0] and "invalid base64" in lines[0], lines

        # A closing boundary that never comes: the whole part is saved and the cut logged.
        unterminated = ("From: <rey@jaku.com>\r\nTo: <obiwan@jaku.com>\r\nSubject: unterminated\r\n"
                        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"u1\"\r\n\r\n"
                        "--u1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--u1\r\n"
                        "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"kept.txt\"\r\n"
                        "Content-Transfer-Encoding: base64\r\n\r\na2VwdA\r\n").encode()  # "kept", no padding
        # Nesting far beyond any mail reader's: delivered, and the extraction refused.
        deep = "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"deep.txt\"\r\n\r\nx\r\n"
        for i in range(300):
            deep = f"Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n{deep}--n{i}--\r\n"
        deep = ("From: <rey@jaku.com>\r\nTo: <rey@jaku.com>\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
                + deep).encode()
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("rey@jaku.com", ["obiwan@jaku.com"], unterminated)
            s.sendmail("rey@jaku.com", ["rey@jaku.com"], deep)
        (delivered,) = net.wait_messages("jaku.com", "obiwan", 1)
        assert delivered.endswith(unterminated.replace(b"\r\n", b"\n"))
        (line,) = wait_extraction(net, "jaku.com", "obiwan")
        assert "saved=1" in line and "truncated message" in line, line
        folder = saved_folder(net, "jaku.com", "obiwan")
        assert os.listdir(folder) == ["kept.txt"] and read(os.path.join(folder, "kept.txt")) == b"kept"
        (delivered,) = net.wait_messages("jaku.com", "rey", 1)
        assert delivered.endswith(deep.replace(b"\r\n", b"\n"))
        (line,) = wait_extraction(net, "jaku.com", "rey")
        assert "event=attachment_error" in line and "nesting" in line, line


def test_swaks_attachments_are_extracted_and_readable_with_mailbox():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        port = harness.port_of(topo, "deathstar.com")
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "vader@deathstar.com",
                              "--to", "tarkin@deathstar.com", "--header", "Subject: from swaks",
                              "--body", "swaks body", "--attach-type", "image/jpeg", "--attach", f"@{JPEG}",
                              "--attach-type", "image/gif", "--attach", f"@{GIF}"],
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out
        net.wait_messages("deathstar.com", "tarkin", 1)
        lines = wait_extraction(net, "deathstar.com", "tarkin")
        assert "saved=2" in lines[0], lines
        folder = saved_folder(net, "deathstar.com", "tarkin")
        assert read(os.path.join(folder, "millennium-falcon.jpg")) == read(JPEG)
        assert read(os.path.join(folder, "bb8.gif")) == read(GIF)
        (msg,) = [parsed(m) for m in maildir(net, "deathstar.com", "tarkin")]
        assert msg["Subject"] == "from swaks"
        assert msg.get_body(("plain",)).get_content().strip() == "swaks body"
        assert attachments_of(msg) == {"millennium-falcon.jpg": read(JPEG), "bb8.gif": read(GIF)}


def test_smtplib_with_the_email_package():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        msg = email.message.EmailMessage()
        msg["From"] = "rey@jaku.com"
        msg["To"] = "obiwan@jaku.com, finn@jaku.com"
        msg["Subject"] = "Сообщение с вложениями ✓"
        msg.set_content("Body with ünïcode.\n")
        msg.add_attachment(read(JPEG), maintype="image", subtype="jpeg", filename="falcon ✈.jpg")
        msg.add_attachment(read(TEXT), maintype="text", subtype="plain", filename="plans.txt")
        msg.add_attachment(b"second copy", maintype="text", subtype="plain", filename="plans.txt")
        msg.add_attachment(b"cyrillic", maintype="text", subtype="plain", filename="../../плани\u202e.txt")
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.send_message(msg)
        for user in ("obiwan", "finn"):
            net.wait_messages("jaku.com", user, 1)
            lines = wait_extraction(net, "jaku.com", user)
            assert "saved=4" in lines[0], lines
            folder = saved_folder(net, "jaku.com", user)
            # Names sanitised (letters of any script and inner spaces stay; a path
            # and a direction override do not), and the second plans.txt does
            # not overwrite the first.
            assert sorted(os.listdir(folder)) == ["falcon ✈.jpg", "plans-1.txt", "plans.txt", "плани_.txt"], \
                os.listdir(folder)
            assert read(os.path.join(folder, "falcon ✈.jpg")) == read(JPEG)
            assert read(os.path.join(folder, "плани_.txt")) == b"cyrillic"
            assert read(os.path.join(folder, "plans.txt")) == read(TEXT)
            assert read(os.path.join(folder, "plans-1.txt")) == b"second copy"
            (got,) = [parsed(m) for m in maildir(net, "jaku.com", user)]
            assert got["Subject"] == "Сообщение с вложениями ✓"
            assert got.get_body(("plain",)).get_content() == "Body with ünïcode.\n"
            names = [p.get_filename() for p in got.iter_attachments()]
            assert names == ["falcon ✈.jpg", "plans.txt", "plans.txt", "../../плани\u202e.txt"], names


if __name__ == "__main__":
    harness.run_tests([
        test_classic_flow_with_three_attachments_and_a_bounce,
        test_send_failures_exit_nonzero_with_the_reason, test_send_with_names_cc_bcc_body_file_and_via_host_port,
        test_malformed_mime_is_delivered_and_the_failure_logged, test_inbox_and_show_read_a_network_that_is_down,
        test_swaks_attachments_are_extracted_and_readable_with_mailbox,
        test_smtplib_with_the_email_package,
    ])
