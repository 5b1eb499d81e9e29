"""Issue 19, the Mail page and the message view in a real headless Chromium:
mail sent with swaks shows up in the list without a reload (unread, bounces
marked, searched, filtered by mailbox); the message view draws its path
across both nodes; an attachment downloaded from the page is the exact bytes
sent; a mail's HTML runs no script and loads nothing."""
import email.message
import http.client
import json
import http.server
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
import browser  # noqa: E402
import harness  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402

By = browser.By


def get(topo, path):
    host, port = topo["web"]["listen"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def swaks(topo, domain, *args):
    port = harness.port_of(topo, domain)
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out


def main_text(b):
    return b.find("main").text


def rows(b):
    """The list's rows as {text, class, bounce_badge}, read at once (the list is redrawn live)."""
    return b.driver.execute_script(
        "return [...document.querySelectorAll('table.mail-list tbody tr')].map((r) => ({text: r.innerText, "
        "cls: r.className, badge: !!r.querySelector('.badge.bounce')}))")


def row_with(b, text):
    for row in rows(b):
        if text in row["text"]:
            return row
    return None


def trace_events(b):
    """The timeline's events as (node, event), in their order, read at once."""
    return [tuple(e) for e in b.driver.execute_script(
        "return [...document.querySelectorAll('svg.timeline g.event')].map((g) => [g.dataset.node, g.dataset.event])")]


def lanes(b):
    return b.driver.execute_script(
        "return [...document.querySelectorAll('svg.timeline g.lane')].map((g) => g.dataset.node)")


def open_message(b, subject):
    """Clicks the subject's link in the list and waits for the message view."""
    b.wait(lambda d: row_with(b, subject) is not None, 30, f"'{subject}' in the list")

    def click():  # the list may be redrawn between finding the link and clicking it: then again
        try:
            link = [a for a in b.find_all("table.mail-list td.subject a") if a.text == subject]
            link[0].click()
            return True
        except (IndexError, StaleElementReferenceException):
            return False
    b.wait(lambda d: click(), 30, f"a click on '{subject}'")
    b.wait(lambda d: d.execute_script("return location.pathname") == "/message.html", 30, "the message view")
    b.wait(lambda d: subject in d.find_element(By.ID, "message").text, 30, f"'{subject}' in the message view")


def test_swaks_mail_appears_live_with_unread_bounce_and_search_and_its_trace_crosses_both_nodes():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium() as b:
            b.open(harness.web_url(topo) + "/mail.html")
            b.wait(lambda d: "No mail here yet." in main_text(b), 30, "the empty list")
            for domain, users in (("jaku.com", ["rey", "finn", "obiwan"]), ("deathstar.com", ["vader", "tarkin"])):
                for user in users:
                    assert b.find_all(f'.mailboxes .box[data-domain="{domain}"][data-user="{user}"]'), (domain, user)
            b.wait(lambda d: d.find_element(By.ID, "live").text == "live", 30, "the event stream to be live")
            # A mark that a reload would wipe out.
            b.driver.execute_script("window.mailnetNoReload = 'still here'")

            swaks(topo, "jaku.com", "--from", "rey@jaku.com", "--to", "vader@deathstar.com",
                  "--header", "Subject: The plans are in the droid", "--body", "Help me, Obi-Wan Kenobi.")
            b.wait(lambda d: row_with(b, "The plans are in the droid") is not None, 30,
                   "the relayed message in the list")
            row = row_with(b, "The plans are in the droid")
            assert "unread" in row["cls"].split(), row
            assert "vader@deathstar.com" in row["text"], row
            assert b.driver.execute_script("return window.mailnetNoReload") == "still here", "the page reloaded"
            b.wait(lambda d: d.execute_script(
                "const c = document.querySelector('.box[data-domain=\"deathstar.com\"][data-user=\"vader\"] "
                ".unread-count'); return c && c.textContent") == "1", 30, "vader's unread count 1")

            # A recipient deathstar.com does not know: jaku.com bounces it to rey.
            swaks(topo, "jaku.com", "--from", "rey@jaku.com", "--to", "nobody@deathstar.com",
                  "--header", "Subject: To nobody", "--body", "Is anybody there?")
            b.wait(lambda d: any("bounce" in r["cls"].split() and "rey@jaku.com" in r["text"] for r in rows(b)), 60,
                   "the bounce, marked, in rey's mail")
            bounce = [r for r in rows(b) if "bounce" in r["cls"].split()]
            assert len(bounce) == 1 and bounce[0]["badge"], bounce
            assert "bounce" not in row_with(b, "The plans are in the droid")["cls"].split()
            b.screenshot("mail-list")

            # The search box asks the API with q; a mailbox button filters by domain and user.
            b.find("#search").send_keys("obi-wan")
            b.wait(lambda d: len(rows(b)) == 1
                   and row_with(b, "The plans are in the droid") is not None, 30, "the search to keep one message")
            b.find("#search").clear()
            b.find("#search").send_keys("x")  # clear() sends no input event
            b.find("#search").send_keys("\b")
            b.wait(lambda d: len(rows(b)) == 2, 30, "both messages again")
            b.find('.mailboxes .box[data-domain="jaku.com"][data-user="rey"]').click()
            b.wait(lambda d: len(rows(b)) == 1
                   and row_with(b, "The plans are in the droid") is None, 30, "rey's mailbox: the bounce only")
            b.find('.mailboxes .box[data-domain=""][data-user=""]').click()
            b.wait(lambda d: len(rows(b)) == 2, 30, "every mailbox again")
            assert b.driver.execute_script("return window.mailnetNoReload") == "still here", "the page reloaded"

            open_message(b, "The plans are in the droid")
            b.wait(lambda d: {g.get_attribute("data-node") for g in b.find_all("svg.timeline g.lane")}
                   == {"jaku.com", "deathstar.com"}, 30, "a lane for each of both nodes")
            # delivered at deathstar.com may be logged before relayed at jaku.com: both, in either order.
            b.wait(lambda d: {("deathstar.com", "delivered"), ("jaku.com", "relayed")}
                   <= {(g.get_attribute("data-node"), g.get_attribute("data-event"))
                       for g in b.find_all("svg.timeline g.event")}, 30, "delivered at deathstar.com, relayed at jaku.com")
            events = [(g.get_attribute("data-node"), g.get_attribute("data-event"))
                      for g in b.find_all("svg.timeline g.event")]
            assert ("jaku.com", "accepted") in events and ("jaku.com", "relayed") in events, events
            assert events.index(("jaku.com", "accepted")) < events.index(("deathstar.com", "delivered")), events
            assert "Help me, Obi-Wan Kenobi." in b.find("#text-body").text
            # How it arrived: jaku.com relayed it over verified TLS (the newest Received: says ESMTPS).
            arrived = b.driver.find_element(By.XPATH, "//dl[@class='fields']/dt[text()='Arrived']"
                                                      "/following-sibling::dd[1]").text
            assert re.fullmatch(r"over TLS \(TLSv1\.[23], \S+\), with ESMTPS, from jaku\.com", arrived), arrived
            b.screenshot("mail-message")
            b.assert_no_console_errors()


def test_attachment_downloaded_from_the_message_view_is_byte_identical():
    topo = harness.two_domain_topology()
    downloads = tempfile.mkdtemp(prefix="mailnet-downloads-")
    try:
        payload = bytes(range(256)) * 40 + os.urandom(3000) + b"\r\n.\r\n\x00end"
        attachment = os.path.join(downloads, "source-plans.bin")
        with open(attachment, "wb") as f:
            f.write(payload)
        with harness.Network(topo) as net:
            net.start()
            swaks(topo, "jaku.com", "--from", "rey@jaku.com", "--to", "tarkin@deathstar.com",
                  "--header", "Subject: Blueprints", "--body", "attached",
                  "--attach-type", "application/octet-stream", "--attach-name", "death star plans.bin",
                  "--attach", f"@{attachment}")
            os.remove(attachment)
            with browser.Chromium(downloads=downloads) as b:
                b.open(harness.web_url(topo) + "/mail.html")
                open_message(b, "Blueprints")
                link = b.find("ul.attachments a")
                assert link.text == "death star plans.bin", link.text
                link.click()
                saved = os.path.join(downloads, "death_star_plans.bin")
                b.wait(lambda d: os.path.exists(saved) and
                       not any(n.endswith(".crdownload") for n in os.listdir(downloads)), 60,
                       f"the download in {downloads} (there: {os.listdir(downloads)})")
                with open(saved, "rb") as f:
                    assert f.read() == payload, "the downloaded attachment differs from what was sent"
                assert os.listdir(downloads) == ["death_star_plans.bin"], os.listdir(downloads)
                b.assert_no_console_errors()
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


class CountingServer:
    """A local HTTP server on a free port that counts every request made to it."""

    def __init__(self, page=b""):
        self.requests = []
        self.page = page  # served as text/html at /page.html
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.requests.append(self.path)
                body = owner.page if self.path == "/page.html" else b""
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if body else "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", harness.free_tcp_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_html_mail_runs_no_script_and_loads_nothing():
    topo = harness.two_domain_topology()
    remote = CountingServer()
    try:
        with harness.Network(topo) as net:
            net.start()
            base = f"http://127.0.0.1:{remote.port}"
            html = (f"<html><head><title>mail title</title><style>p.hello {{ color: #1a5fb4 }}</style></head><body>"
                    f"<p class=hello id=hello>Hello from the HTML part</p>"
                    f"<img id=remote src=\"{base}/x.png\" alt=remote>"
                    f"<img id=handler src=\"data:,\" onerror=\"document.body.append('HANDLER RAN')\" alt=h>"
                    f"<script>document.title = 'SCRIPT RAN'; document.body.append('SCRIPT RAN');"
                    f"try {{ parent.document.title = 'SCRIPT RAN' }} catch (e) {{}}"
                    f"fetch('{base}/from-script').catch(() => {{}});"
                    f"new Image().src = '{base}/from-script.png';</script>"
                    f"</body></html>")
            msg = email.message.EmailMessage()
            msg["From"] = "rey@jaku.com"
            msg["To"] = "finn@jaku.com"
            msg["Subject"] = "A page with a script"
            msg.set_content("The text part.\n")
            msg.add_alternative(html, subtype="html")
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=60) as smtp:
                smtp.send_message(msg)
            net.wait_messages("jaku.com", "finn", 1)

            with browser.Chromium() as b:
                b.open(harness.web_url(topo) + "/mail.html")
                open_message(b, "A page with a script")
                frame = b.find("iframe#html-body")
                sandbox, src = frame.get_attribute("sandbox"), frame.get_attribute("src")
                assert src.endswith("/html"), src
                b.driver.switch_to.frame(frame)
                b.wait(lambda d: "Hello from the HTML part" in d.find_element(By.TAG_NAME, "body").text, 30,
                       "the HTML part in its frame")
                # The frame is loaded once its images have loaded or failed.
                b.wait(lambda d: d.execute_script("return document.readyState") == "complete", 30,
                       "the frame to finish loading")
                text = b.driver.find_element(By.TAG_NAME, "body").text
                colour = b.driver.find_element(By.ID, "hello").value_of_css_property("color")
                b.driver.switch_to.default_content()
                assert "SCRIPT RAN" not in text and "HANDLER RAN" not in text, text
                assert colour == "rgba(26, 95, 180, 1)", f"the mail's own style was not applied: {colour}"
                assert "SCRIPT RAN" not in b.driver.title, b.driver.title
                assert remote.requests == [], f"the mail fetched: {remote.requests}"
                b.screenshot("mail-message-html")
                # The frame: sandboxed with no permission at all; its answer: its own
                # sandbox and a policy that fetches nothing, framed by the dashboard only.
                assert sandbox == "", f"the frame's sandbox allows: {sandbox}"
                # The frame's answer: its own sandbox and a policy that fetches nothing.
                status, headers, body = get(topo, src[src.index("/api/"):])
                assert status == 200 and headers["content-type"] == "text/html; charset=utf-8", (status, headers)
                assert headers["content-security-policy"] == (
                    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                    "frame-ancestors 'self'"), headers
                assert headers["x-content-type-options"] == "nosniff", headers
                assert b"<script>" in body
                # Not even the refusal of the frame's remote image reaches the console
                # (Chromium logs none for a sandboxed frame here): no error at all is allowed.
                b.assert_no_console_errors()
            assert remote.requests == [], f"the mail fetched: {remote.requests}"
    finally:
        remote.close()


def test_mailboxes_unread_and_the_html_endpoint_over_http():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        status, _, body = get(topo, "/api/v1/mailboxes")
        assert status == 200, (status, body)
        doc = json.loads(body)
        assert [(d["domain"], [u["user"] for u in d["users"]]) for d in doc["domains"]] == \
            [("jaku.com", ["rey", "finn", "obiwan"]), ("deathstar.com", ["vader", "tarkin"])], doc
        assert all(d["total"] == 0 and d["unread"] == 0 for d in doc["domains"]), doc

        swaks(topo, "deathstar.com", "--from", "tarkin@deathstar.com", "--to", "vader@deathstar.com",
              "--header", "Subject: plain", "--body", "no html here")
        net.wait_messages("deathstar.com", "vader", 1)
        (name,) = os.listdir(net.maildir_new("deathstar.com", "vader"))
        status, _, body = get(topo, "/api/v1/mailboxes")
        vader = [u for d in json.loads(body)["domains"] for u in d["users"] if u["user"] == "vader"][0]
        assert vader == {"user": "vader", "total": 1, "unread": 1}, vader
        (listed,) = json.loads(get(topo, "/api/v1/messages")[2])["messages"]
        assert listed["unread"] is True and listed["bounce"] is False, listed

        # Read by a mail client: moved to cur/ with the S flag.
        cur = os.path.join(os.path.dirname(net.maildir_new("deathstar.com", "vader")), "cur")
        os.rename(os.path.join(net.maildir_new("deathstar.com", "vader"), name), os.path.join(cur, name + ":2,S"))
        status, _, body = get(topo, "/api/v1/mailboxes")
        domain = [d for d in json.loads(body)["domains"] if d["domain"] == "deathstar.com"][0]
        assert domain["total"] == 1 and domain["unread"] == 0, domain
        (listed,) = json.loads(get(topo, "/api/v1/messages")[2])["messages"]
        assert listed["unread"] is False, listed

        status, headers, body = get(topo, f"/api/v1/messages/{listed['id']}/html")
        assert status == 404 and headers["content-type"] == "application/json", (status, headers)
        assert json.loads(body)["error"] == f"message '{listed['id']}' has no HTML part", body
        status, _, body = get(topo, "/api/v1/messages/nope/html")
        assert status == 404 and "no message with id 'nope'" in json.loads(body)["error"], body
        status, _, body = get(topo, "/api/v1/mailboxes?domain=jaku.com")
        assert status == 400 and json.loads(body)["error"] == "/api/v1/mailboxes takes no query parameters", body
        host, port = topo["web"]["listen"].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("POST", "/api/v1/mailboxes", body="{}", headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 405 and r.getheader("Allow") == "GET", (r.status, r.read())
        finally:
            conn.close()


def post(topo, path):
    host, port = topo["web"]["listen"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("POST", path, body="{}", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_trace_in_the_message_view_grows_live_when_a_deferred_relay_gets_through():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        status, reply = post(topo, "/api/v1/nodes/deathstar.com/stop")
        assert status == 200, reply
        # finn's copy is delivered at once; vader's waits in jaku.com's queue.
        swaks(topo, "jaku.com", "--from", "rey@jaku.com", "--to", "finn@jaku.com,vader@deathstar.com",
              "--header", "Subject: Wait for it", "--body", "patience")
        net.wait_messages("jaku.com", "finn", 1)
        with browser.Chromium() as b:
            b.open(harness.web_url(topo) + "/mail.html")
            open_message(b, "Wait for it")
            b.wait(lambda d: d.find_element(By.ID, "live").text == "live", 30, "the event stream to be live")
            b.wait(lambda d: ("jaku.com", "deferred") in trace_events(b), 60, "the deferred relay in the trace")
            assert "deathstar.com" not in lanes(b), lanes(b)
            b.driver.execute_script("window.mailnetNoReload = 'still here'")
            status, reply = post(topo, "/api/v1/nodes/deathstar.com/start")
            assert status == 200, reply
            b.wait(lambda d: ("deathstar.com", "delivered") in trace_events(b), 60,
                   "deathstar.com's delivery drawn in the trace")
            assert lanes(b) == ["jaku.com", "deathstar.com"], lanes(b)
            assert b.driver.execute_script("return window.mailnetNoReload") == "still here", "the page reloaded"
            b.screenshot("mail-message-deferred")
            b.assert_no_console_errors()


def test_another_site_cannot_frame_a_mails_html():
    topo = harness.two_domain_topology()
    foreign = CountingServer()
    try:
        with harness.Network(topo) as net:
            net.start()
            msg = email.message.EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "rey@jaku.com", "finn@jaku.com", "Framed?"
            msg.set_content("text\n")
            msg.add_alternative("<p>Only the dashboard shows this</p>", subtype="html")
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=60) as smtp:
                smtp.send_message(msg)
            net.wait_messages("jaku.com", "finn", 1)
            (listed,) = json.loads(get(topo, "/api/v1/messages")[2])["messages"]
            html_url = f"{harness.web_url(topo)}/api/v1/messages/{listed['id']}/html"
            foreign.page = f'<iframe id=f src="{html_url}"></iframe>'.encode()
            with browser.Chromium() as b:
                # The dashboard's own page may frame it (the other tests); another origin may not.
                b.open(f"http://127.0.0.1:{foreign.port}/page.html")
                refusal = f"Framing '{harness.web_url(topo)}/' violates the following Content Security Policy " \
                          f"directive: \"frame-ancestors 'self'\". The request has been blocked."
                b.wait(lambda d: any(refusal in e.get("message", "") for e in b.console_errors()), 30,
                       "Chromium's refusal to frame the mail's HTML in another site's page")
                b.driver.switch_to.frame(b.find("iframe#f"))
                text = b.driver.find_element(By.TAG_NAME, "body").text
                where = b.driver.execute_script("return location.href")
                b.driver.switch_to.default_content()
                assert "Only the dashboard shows this" not in text and where.startswith("chrome-error:"), (where, text)
                unexpected = [e["message"] for e in b.console_errors() if refusal not in e["message"]]
                assert not unexpected, unexpected
    finally:
        foreign.close()


def test_a_junk_folder_message_is_marked_in_the_list():
    """A message in rey's Junk folder (mail/rey/.Junk/new, where a node files
    DMARC quarantine; put there by hand here) is listed with a Junk badge and
    its row marked; one in the inbox is not."""
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        rey = os.path.join(net.run_dir, "jaku.com", "mail", "rey")
        for folder, name, subject in ((".Junk", "1796000001.M1P1Q1.mailnet", "Forged plans"),
                                      ("", "1796000002.M1P1Q2.mailnet", "Real plans")):
            new = os.path.join(rey, folder, "new")
            os.makedirs(new, mode=0o700, exist_ok=True)
            with open(os.path.join(new, name), "w", encoding="utf-8") as f:
                f.write(f"From: x@q.deathstar.com\nTo: rey@jaku.com\nSubject: {subject}\n\nhi\n")
        with browser.Chromium() as b:
            b.open(harness.web_url(topo) + "/mail.html")
            b.wait(lambda d: row_with(b, "Forged plans") is not None and row_with(b, "Real plans") is not None, 30,
                   "both messages in the list")
            marks = b.driver.execute_script(
                "return [...document.querySelectorAll('table.mail-list tbody tr')].map((r) => [r.innerText, "
                "r.classList.contains('junk'), !!r.querySelector('.badge.junk')])")
            by_subject = {("Forged plans" if "Forged plans" in t else "Real plans"): (cls, badge)
                          for t, cls, badge in marks}
            assert by_subject == {"Forged plans": (True, True), "Real plans": (False, False)}, marks
            b.screenshot("mail-list-junk")


if __name__ == "__main__":
    harness.run_tests([
        test_swaks_mail_appears_live_with_unread_bounce_and_search_and_its_trace_crosses_both_nodes,
        test_attachment_downloaded_from_the_message_view_is_byte_identical,
        test_html_mail_runs_no_script_and_loads_nothing,
        test_mailboxes_unread_and_the_html_endpoint_over_http,
        test_a_junk_folder_message_is_marked_in_the_list,
        test_trace_in_the_message_view_grows_live_when_a_deferred_relay_gets_through,
        test_another_site_cannot_frame_a_mails_html,
    ])
