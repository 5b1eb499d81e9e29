"""Issue 19, the Send and DNS pages in a real headless Chromium, against a
real network: a message written in the send form, with a file attached
through the file input, is delivered into the recipient's Maildir with the
attachment's bytes unchanged; the server's refusal of a bad request is shown
on the page as the server words it; the DNS page lists the zone of both
domains and shows a query that dig makes at the resolver while the page is
open. Every page loads without console errors; screenshots are written."""
import email
import email.policy
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import browser  # noqa: E402
import harness  # noqa: E402

from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

By = browser.By

# Generous for a loaded 2-core machine under ASan: waits end as soon as the
# condition holds.
PAGE_WAIT = 30
DELIVERY_WAIT = 60


def post_json(listen, path, body):
    host, port = listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def text_of(b, css):
    found = b.find_all(css)
    return found[0].text if found else ""


def open_send_page(b, topo):
    b.open(harness.web_url(topo) + "/send.html")
    # The From choices are loaded from the API: "Another address…" comes last.
    b.wait(lambda d: "*other" in from_choices(b), PAGE_WAIT, "the From choices")


def from_choices(b):
    # Read in one script: the list is rebuilt when a mailbox gets its first mail.
    return b.driver.execute_script("return [...document.querySelectorAll('#from-select option')].map(o => o.value)")


def choose_from(b, address):
    """The sender: a user of the select when listed, else typed as another address."""
    select = Select(b.find("#from-select"))
    if address in from_choices(b):
        select.select_by_value(address)
    else:
        select.select_by_value("*other")
        b.wait(lambda d: d.find_element(By.ID, "from-other").is_displayed(), PAGE_WAIT, "the address field")
        b.find("#from-other").send_keys(address)


def attachment_of(raw, name):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.iter_attachments():
        if part.get_filename() == name:
            return part.get_payload(decode=True)
    return None


def test_send_form_delivers_an_attachment_byte_identical():
    topo = harness.two_domain_topology()
    # Every byte value, and runs that base64 and line ends could mangle.
    data = bytes(range(256)) * 8 + b"\r\n.\r\n\n\r\x00" * 50 + os.urandom(3001)
    with tempfile.TemporaryDirectory(prefix="mailnet-send-page-") as folder, harness.Network(topo) as net:
        path = os.path.join(folder, "death-star-plans.bin")
        with open(path, "wb") as f:
            f.write(data)
        net.start()
        with browser.Chromium() as b:
            open_send_page(b, topo)
            # Every user of the topology is a From choice, mail or not (tarkin never has any here).
            b.wait(lambda d: {"rey@jaku.com", "obiwan@jaku.com", "tarkin@deathstar.com"} <= set(from_choices(b)),
                   PAGE_WAIT, "the topology's users among the From choices")
            # Every field has its label (the form is usable by keyboard and screen reader).
            for field in ("from-select", "to", "cc", "bcc", "subject", "body", "attachments"):
                assert b.find_all(f"label[for='{field}']"), f"no label for #{field}"
            choose_from(b, "Rey <rey@jaku.com>")
            b.find("#to").send_keys("vader@deathstar.com")
            b.find("#cc").send_keys("finn@jaku.com")
            b.find("#subject").send_keys("The plans")
            b.find("#body").send_keys("They are in the R2 unit.")
            b.find("#attachments").send_keys(path)
            b.wait(lambda d: "death-star-plans.bin" in text_of(b, "#attachment-list"), PAGE_WAIT,
                   "the chosen file listed")
            # Sent from the keyboard: Ctrl+Enter in the body.
            b.find("#body").send_keys(Keys.CONTROL, Keys.ENTER)
            b.wait(lambda d: text_of(b, "#result .sent") or text_of(b, "#result .failed"), DELIVERY_WAIT,
                   "the send's result")
            result = text_of(b, "#result")
            assert b.find_all("#result .sent"), "the page shows a failure:\n" + result
            queue_id = text_of(b, "#queue-id")
            assert queue_id and queue_id in result, result
            assert "jaku.com" in text_of(b, "#sent-node"), result
            link = b.find("#mail-link").get_attribute("href")
            assert "/mail.html" in link and "deathstar.com" in link, link
            b.screenshot("send")

            for domain, user in (("deathstar.com", "vader"), ("jaku.com", "finn")):
                raw = net.wait_messages(domain, user, 1, timeout=DELIVERY_WAIT)[0]
                got = attachment_of(raw, "death-star-plans.bin")
                assert got is not None, f"no attachment in {domain}/{user}:\n{raw[:2000]!r}"
                assert got == data, f"{domain}/{user}: {len(got)} bytes differ from the {len(data)} sent"
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                assert msg["Subject"] == "The plans" and "rey@jaku.com" in msg["From"], (msg["Subject"], msg["From"])
            b.assert_no_console_errors()


def test_send_form_shows_the_servers_refusal():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        listen = topo["web"]["listen"]
        cases = [
            # A recipient that is not a mail address.
            ("rey@jaku.com", "vader@@deathstar", "vader@@deathstar"),
            # A sender's domain that the network does not have: no node takes it.
            ("han@falcon.org", "vader@deathstar.com", "falcon.org"),
        ]
        with browser.Chromium() as b:
            for sender, to, named in cases:
                # What the API says to the same request, word for word.
                status, reply = post_json(listen, "/api/v1/send", {
                    "from": sender, "to": [to], "cc": [], "bcc": [], "subject": "x", "body": "x", "attachments": []})
                assert 400 <= status < 600 and reply and reply.get("error"), (status, reply)
                assert named in reply["error"], reply
                open_send_page(b, topo)
                choose_from(b, sender)
                b.find("#to").send_keys(to)
                b.find("#subject").send_keys("x")
                b.find("#body").send_keys("x")
                b.find("#send").click()
                b.wait(lambda d: text_of(b, "#result .sent") or text_of(b, "#send-error"), DELIVERY_WAIT,
                       "the send's result")
                shown = text_of(b, "#send-error")
                assert shown == reply["error"], f"page shows {shown!r}, the server said {reply['error']!r}"
                assert b.find("#result [role='alert']").is_displayed()
                if named == "falcon.org":
                    b.screenshot("send-error")
            # The browser itself logs each refused request ("Failed to load
            # resource: ... status of 400"): those of /api/v1/send are expected.
            errors = [e for e in b.console_errors()
                      if not (e.get("source") == "network" and "/api/v1/send" in e.get("message", ""))]
            assert not errors, "console errors:\n" + "\n".join(e.get("message", "") for e in errors)
        # Nothing was delivered anywhere, and the launcher still serves.
        for domain, users in (("jaku.com", ("rey", "finn", "obiwan")), ("deathstar.com", ("vader", "tarkin"))):
            for user in users:
                assert net.messages(domain, user) == [], (domain, user)
        status, _ = post_json(listen, "/api/v1/send", {"from": "rey@jaku.com", "to": ["vader@deathstar.com"],
                                                         "subject": "still", "body": "serving"})
        assert status == 200, status
        net.wait_messages("deathstar.com", "vader", 1, timeout=DELIVERY_WAIT)


def test_dns_page_shows_the_zone_and_a_query_live():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium(height=1300) as b:  # the whole page in its screenshot
            b.open(harness.web_url(topo) + "/dns.html")
            for domain in ("jaku.com", "deathstar.com"):
                b.wait(lambda d, domain=domain: d.find_elements(By.CSS_SELECTOR, f"#zone-table tr[data-domain='{domain}']"),
                       PAGE_WAIT, f"{domain} in the zone table")
            zone = text_of(b, "#zone-table")
            for domain in ("jaku.com", "deathstar.com"):
                port = harness.port_of(topo, domain)
                # SRV to the node's port, and its host's A record.
                assert f"_smtp._tcp.{domain}." in zone and f"{port} mx.{domain}." in zone, zone
            for rtype in ("SRV", "MX", "A"):
                assert f" {rtype} " in f" {zone} ".replace("\n", " "), (rtype, zone)
            b.wait(lambda d: text_of(b, "#resolver-state") == "ready", PAGE_WAIT, "the resolver shown ready")
            assert topo["resolver"]["listen"] in text_of(b, "#resolver")

            # A query made now, by dig, at the resolver's port; its name is new to the page.
            name = f"probe{os.getpid()}.jaku.com"
            assert name not in text_of(b, "#queries")
            host, port = topo["resolver"]["listen"].rsplit(":", 1)
            dig = subprocess.run(["dig", "+time=5", "+tries=2", "-p", port, f"@{host}", name, "A"],
                                 capture_output=True, text=True, timeout=60)
            assert "status: NXDOMAIN" in dig.stdout, dig.stdout + dig.stderr
            b.wait(lambda d: name in text_of(b, "#queries-table"), PAGE_WAIT, f"dig's query of {name} on the page")
            row = next(r.text for r in b.find_all("#queries-table tbody tr") if name in r.text)
            assert "NXDOMAIN" in row and " A " in f" {row} ", row
            # Its counters too (from /metrics), within a refresh.
            b.wait(lambda d: "A NXDOMAIN 1" in text_of(b, "#resolver-metrics"), PAGE_WAIT, "the query counted")
            main = text_of(b, "main")
            assert not re.search(r"\b(null|undefined|NaN|\[object Object\])\b", main), main
            b.screenshot("dns")
            b.assert_no_console_errors()


if __name__ == "__main__":
    harness.run_tests([test_send_form_delivers_an_attachment_byte_identical, test_send_form_shows_the_servers_refusal,
                       test_dns_page_shows_the_zone_and_a_query_live])
