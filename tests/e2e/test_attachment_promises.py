"""Issue 17, promise 9: attachment extraction runs after the 250 and never
delays a delivery, and the MIME nesting limit sits exactly at 16 levels.

The first test holds extraction where every extraction begins: a node loads
mailnet-attachments.so from its own folder the first time a delivered message
may carry attachments. The test gives the node a folder of its own (a link to
the real mailnet-node, and a copy of the real module that the test owns) and
takes a write lease (fcntl F_SETLEASE) on that copy: the kernel then holds any
open() of it until the lease is given up, for up to fs.lease-break-time
seconds. Nothing in the product is replaced or changed; an extraction done
before the 250 would hold the 250 too, and the test would see no reply."""
import base64
import fcntl
import os
import shutil
import signal
import smtplib
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_send_and_attachments import JPEG, TEXT, node_log, read, wait_extraction  # noqa: E402

MODULE = "mailnet-attachments.so"


def lease_break_seconds():
    with open("/proc/sys/fs/lease-break-time") as f:
        return int(f.read().strip())


def gated_bin_dir(folder):
    """A bin folder where the node finds a module this test owns and may lease."""
    os.mkdir(folder, 0o700)
    node = harness.binary("mailnet-node")
    try:
        os.link(node, os.path.join(folder, "mailnet-node"))  # /proc/self/exe then names this folder
    except OSError:
        shutil.copy2(node, os.path.join(folder, "mailnet-node"))
    os.symlink(harness.binary("mailnet-resolver"), os.path.join(folder, "mailnet-resolver"))
    shutil.copyfile(harness.binary(MODULE), os.path.join(folder, MODULE))
    return folder


def attachment_message(rcpt, subject, files):
    boundary = "held-" + subject.replace(" ", "-")
    parts = [f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{subject}\r\n"]
    for name, data in files.items():
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        parts.append(f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
                     f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}")
    return (f"From: <rey@jaku.com>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n" + "".join(parts) +
            f"--{boundary}--\r\n").encode()


def lf(data):
    """Line ends aside: the Maildir copy is compared as text, whatever ends it stores."""
    return data.replace(b"\r\n", b"\n")


def extraction_lines(net, domain):
    return [line for line in node_log(net, domain).splitlines()
            if "event=attachments " in line or "event=attachment_error " in line]


def test_extraction_never_delays_a_delivery():
    hold = lease_break_seconds()
    assert hold >= 20, f"fs.lease-break-time is {hold} s: this test needs at least 20 s of hold"
    reply_deadline = min(30, hold - 10)  # well inside the hold: a 250 after it would prove nothing
    topo = harness.two_domain_topology()
    first = {"falcon.jpg": read(JPEG), "plans.txt": read(TEXT)}
    second = {"second.bin": bytes(range(256)) * 40}
    with harness.Network(topo) as net:
        bindir = gated_bin_dir(os.path.join(net.workdir, "bin"))
        module = os.path.join(bindir, MODULE)
        old_sigio = signal.signal(signal.SIGIO, signal.SIG_IGN)  # the lease's break notice; we poll instead
        fd = os.open(module, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            net.start(env={"MAILNET_BIN_DIR": bindir})
            # Started and ready without touching the module: it loads on the first attachment.
            assert fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_WRLCK, "the module was opened before any mail"
            port = harness.port_of(topo, "jaku.com")
            raw = attachment_message("obiwan@jaku.com", "held one", first)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=reply_deadline) as s:
                    refused = s.sendmail("rey@jaku.com", ["obiwan@jaku.com"], raw)
            except (socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected) as e:
                raise AssertionError(f"no 250 within {reply_deadline} s while extraction was held: "
                                     f"the delivery waits for the extraction ({e})") from e
            assert refused == {}, refused
            # The 250 came: the message is in new/ already (it is published before the 250).
            (delivered,) = net.messages("jaku.com", "obiwan")
            assert lf(delivered).endswith(lf(raw))
            # The node's extraction has begun and is held in its open() of the module.
            harness.wait_for(lambda: fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK, reply_deadline,
                             "the node's extraction to open the module (a break of the lease)")
            # While it is held, more mail is taken and delivered, with and without attachments.
            with smtplib.SMTP("127.0.0.1", port, timeout=reply_deadline) as s:
                s.sendmail("rey@jaku.com", ["obiwan@jaku.com"],
                           attachment_message("obiwan@jaku.com", "held two", second))
                s.sendmail("rey@jaku.com", ["finn@jaku.com"],
                           b"From: <rey@jaku.com>\r\nTo: <finn@jaku.com>\r\nSubject: plain\r\n\r\nplain\r\n")
            assert len(net.messages("jaku.com", "obiwan")) == 2 and len(net.messages("jaku.com", "finn")) == 1
            harness.wait_for(lambda: node_log(net, "jaku.com").count("event=delivered") >= 3, 15,
                             "three delivered events")
            # Nothing extracted yet: no event, nothing saved; read first, then
            # make sure the hold was still on (so it was on while we read).
            events = extraction_lines(net, "jaku.com")
            saved_root = os.path.join(net.domain_dir("jaku.com"), "attachments")
            saved_now = os.listdir(saved_root) if os.path.exists(saved_root) else []
            assert fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK, "the hold ended early (lease-break-time?)"
            assert events == [], events
            assert saved_now == [], saved_now
            # Let go: the two extractions finish now, after their deliveries.
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            lines = wait_extraction(net, "jaku.com", "obiwan", count=2)
            assert all("event=attachments " in line for line in lines), lines
            assert sorted(line.split("saved=")[1].split()[0] for line in lines) == ["1", "2"], lines
            saved = {}
            for folder in os.listdir(saved_root):
                for name in os.listdir(os.path.join(saved_root, folder)):
                    saved[name] = read(os.path.join(saved_root, folder, name))
            assert saved == {**first, **second}, sorted(saved)
        finally:
            try:
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)  # never leave the node held
            except OSError:
                pass
            os.close(fd)
            signal.signal(signal.SIGIO, old_sigio)


def leaf(name, text):
    return (f"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
            f"{text}\r\n")


def nested(depth, alternate, deep_name, deep_text, top_name, top_text):
    """An entity whose deepest part (an attachment) lies depth levels below
    the message's top entity: each multipart and each enclosed message
    (message/rfc822) is one level. The outermost level is a multipart that
    also holds a second attachment, one level down."""
    entity = leaf(deep_name, deep_text)
    for level in range(depth - 1):
        if alternate and level % 2:
            entity = ("Content-Type: message/rfc822\r\n\r\n"
                      f"From: <inner{level}@jaku.com>\r\nSubject: enclosed {level}\r\nMIME-Version: 1.0\r\n{entity}")
        else:
            b = f"n{level}"
            entity = f"Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n{entity}--{b}--\r\n"
    return (f"Content-Type: multipart/mixed; boundary=\"top\"\r\n\r\n--top\r\n{entity}"
            f"--top\r\n{leaf(top_name, top_text)}--top--\r\n")


def test_nesting_limit_is_exactly_16_levels():
    topo = harness.two_domain_topology()
    shapes = {(depth, alternate): f"{'a' if alternate else 'm'}{depth}" for depth in (16, 17) for alternate in (False, True)}
    topo["domains"][0]["users"] = sorted(shapes.values())
    with harness.Network(topo) as net:
        net.start()
        sent = {}
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=30) as s:
            for (depth, alternate), user in shapes.items():
                raw = (f"From: <rey@jaku.com>\r\nTo: <{user}@jaku.com>\r\nSubject: {user}\r\nMIME-Version: 1.0\r\n"
                       + nested(depth, alternate, f"deep-{user}.txt", f"deep {user}", "top.txt", f"top {user}")).encode()
                assert s.sendmail("rey@jaku.com", [f"{user}@jaku.com"], raw) == {}
                sent[user] = raw
        for (depth, alternate), user in shapes.items():
            (delivered,) = net.wait_messages("jaku.com", user, 1)
            assert lf(delivered).endswith(lf(sent[user])), user  # the .eml is whole either way
            (line,) = wait_extraction(net, "jaku.com", user)
            name = os.listdir(net.maildir_new("jaku.com", user))[0]
            folder = os.path.join(net.domain_dir("jaku.com"), "attachments", name)
            if depth == 16:  # the limit itself: every attachment, the deepest included
                assert "event=attachments " in line and "saved=2" in line, line
                assert sorted(os.listdir(folder)) == [f"deep-{user}.txt", "top.txt"], os.listdir(folder)
                assert read(os.path.join(folder, f"deep-{user}.txt")).rstrip(b"\r\n") == f"deep {user}".encode()
                assert read(os.path.join(folder, "top.txt")).rstrip(b"\r\n") == f"top {user}".encode()
            else:  # one deeper: README's attachment_error, and nothing saved from a tree cut short
                assert "event=attachment_error " in line and "saved=0" in line, line
                assert "nesting deeper than 16 levels" in line, line
                assert not os.path.exists(folder), os.listdir(folder)


if __name__ == "__main__":
    harness.run_tests([test_extraction_never_delays_a_delivery, test_nesting_limit_is_exactly_16_levels])
