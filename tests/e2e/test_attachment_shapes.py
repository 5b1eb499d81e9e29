"""Attachments are never skipped silently: a message that is a message/rfc822,
and content types carrying RFC 2045 comments, delivered through real nodes,
get their attachments saved under attachments/; a message with parts but
nothing to save gets a logged reason."""
import os
import smtplib
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_send_and_attachments import read, saved_folder, wait_extraction  # noqa: E402

HEAD = "From: <rey@jaku.com>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
GIF_PART = ("Content-Type: image/gif\r\nContent-Disposition: attachment; filename=\"bb8.gif\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nR0lGODlh\r\n")
TEXT_PART = "Content-Type: text/plain\r\n\r\nhello\r\n"


def mixed(content_type, parts, boundary="b1"):
    body = "Content-Type: " + content_type + "\r\n\r\n"
    for p in parts:
        body += "--" + boundary + "\r\n" + p
    return body + "--" + boundary + "--\r\n"


def message(rcpt, subject, entity):
    return (HEAD.format(rcpt=rcpt, subject=subject) + entity).encode()


def test_forwarded_and_commented_types_are_extracted():
    topo = harness.two_domain_topology()
    forwarded = message("finn@jaku.com", "forwarded", "Content-Type: message/rfc822\r\n\r\n" + message(
        "leia@alderaan.org", "inner", mixed("multipart/mixed; boundary=\"in\"", [TEXT_PART, GIF_PART], "in")).decode())
    commented = message("obiwan@jaku.com", "commented",
                        mixed("multipart(x)/mixed; boundary=b1 (a comment)", [TEXT_PART, GIF_PART]))
    relayed = message("vader@deathstar.com", "relayed",
                      mixed("(c) multipart/mixed (c);\r\n boundary=b1(c)", [TEXT_PART, GIF_PART]))
    alternative = message("rey@jaku.com", "alternative",
                          mixed("multipart/alternative; boundary=b1",
                                [TEXT_PART, "Content-Type: text/html\r\n\r\n<p>hello</p>\r\n"]))
    with harness.Network(topo) as net:
        net.start()
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("rey@jaku.com", ["finn@jaku.com"], forwarded)
            s.sendmail("rey@jaku.com", ["obiwan@jaku.com"], commented)
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"], relayed)
            s.sendmail("rey@jaku.com", ["rey@jaku.com"], alternative)
        for domain, user in (("jaku.com", "finn"), ("jaku.com", "obiwan"), ("deathstar.com", "vader")):
            net.wait_messages(domain, user, 1)
            (line,) = wait_extraction(net, domain, user)
            assert "event=attachments " in line and "saved=1" in line, line
            folder = saved_folder(net, domain, user)
            assert os.listdir(folder) == ["bb8.gif"], os.listdir(folder)
            assert read(os.path.join(folder, "bb8.gif")) == b"GIF89a"
        net.wait_messages("jaku.com", "rey", 1)
        (line,) = wait_extraction(net, "jaku.com", "rey")
        assert "saved=0" in line and "reason=" in line and "text/html" in line, line


if __name__ == "__main__":
    harness.run_tests([test_forwarded_and_commented_types_are_extracted])
