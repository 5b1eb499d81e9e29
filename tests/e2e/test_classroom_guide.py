"""Issue 8: the README's classroom guide, played as written. Every command run
here and every output checked must appear in the guide's text, so the guide
and this test cannot drift apart. It uses starwars.json's fixed ports, like
the scenario tests (ctest runs them one at a time: RESOURCE_LOCK)."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
import browser  # noqa: E402
import harness  # noqa: E402
from browser import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402

README = open(os.path.join(harness.SOURCE_DIR, "README.md"), encoding="utf-8").read()
GUIDE = README.split("## Classroom guide", 1)[1].split("\n## ", 1)[0]


def said(text):
    """The guide says this, word for word (line breaks aside)."""
    assert " ".join(text.split()) in " ".join(GUIDE.split()), f"the classroom guide no longer says {text!r}"
    return text


class Terminal:
    def __init__(self, folder):
        self.folder = folder

    def run(self, command):
        argv = shlex.split(said(command))
        if argv[0] == "./build/bin/mailnet":
            argv[0] = harness.binary("mailnet")
        return subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, timeout=60)


class Foreground(harness.Network):
    """Terminal 1: `mailnet up` as the guide types it, in the guide's folder
    (the harness's Network starts it with --dir). The harness reads its output
    and, at the end, stops it and every process it started, by pid if need be,
    and fails the test on a sanitizer report from any of them."""

    def __init__(self, folder, command):
        self.lines, self.lock = [], threading.Lock()
        self.tmp = None  # the test's own folder, removed by the test
        self.run_dir = os.path.join(folder, "run", "starwars")
        argv = shlex.split(command)
        self.proc = subprocess.Popen([harness.binary("mailnet")] + argv[1:], cwd=folder, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()


def test_the_classroom_guide_as_written():
    with tempfile.TemporaryDirectory(prefix="mailnet-guide-") as tmp:
        shutil.copytree(os.path.join(harness.SOURCE_DIR, "scenarios"), os.path.join(tmp, "scenarios"))
        network = Foreground(tmp, said("./build/bin/mailnet up scenarios/starwars.json"))
        t2 = Terminal(tmp)
        with network, browser.Chromium() as b:
            dash = Dashboard(b, said("http://127.0.0.1:8025/"))
            # 1. Start the network.
            network.wait_output(said("mailnet: network starwars is up (run/starwars)"), 30)
            # The node table follows that line: the reader may not have it yet.
            harness.wait_for(lambda: re.search(r"jaku\.com\s+ready\s+127\.0\.0\.1:1025\s+pid \d+", network.output()),
                             10, "the node table after 'is up'")
            said("jaku.com  ready  127.0.0.1:1025  pid")
            network.wait_output(said("mailnet: dashboard and API at http://127.0.0.1:8025/"), 10)
            said("jaku.com and deathstar.com as green circles (green is ready)")
            dash.network()
            dash.wait_states({"jaku.com": "ready", "deathstar.com": "ready"})
            said("resolver as a diamond")
            assert "resolver" in dash.graph(), dash.graph()
            # 2. Send a mail.
            dash.mail()
            out = t2.run('swaks --server 127.0.0.1:1025 --from rey@jaku.com --to finn@jaku.com '
                         '--header "Subject: Hello Finn"')
            assert out.returncode == 0 and said("<-  250 2.0.0 Ok: queued as") in out.stdout, out.stdout
            said("event=delivered mailbox=finn")
            harness.wait_for(lambda: re.search(r"^jaku\.com\s*\|.*event=delivered .*mailbox=finn", network.output(),
                                               re.M), 10, "the delivery line in terminal 1")
            # (The Mail page was opened before the mail came: it appears live.)
            row = dash.mail_row(said("Hello Finn"))
            assert "unread" in row["cls"] and said("in bold (unread)"), row
            dash.screenshot("guide-mail")
            # 3. Read the transcript.
            log = t2.run("cat run/starwars/jaku.com/smtp.log").stdout
            assert re.search(r" C: MAIL FROM:<rey@jaku\.com>", log) and said("C: MAIL FROM:<rey@jaku.com>")
            assert said("S: 250 2.0.0 Ok: queued as") in log, log
            said("run/starwars/jaku.com/mail/finn/new/")
            assert len(os.listdir(os.path.join(tmp, "run/starwars/jaku.com/mail/finn/new"))) == 1
            said("**SMTP transcript** lists the session")
            dash.node("jaku.com")
            b.wait(lambda d: b.find_all("#sessions button[data-session]"), 30, "the transcript's sessions")
            b.find("#sessions button[data-session]").click()
            b.wait(lambda d: "C: MAIL FROM:<rey@jaku.com>" in b.find("#session").text, 30, "the session's lines")
            dash.network()
            # 4. Kill a node.
            out = t2.run("./build/bin/mailnet kill deathstar.com")
            assert said("deathstar.com: killed") in out.stdout, out.stdout + out.stderr
            out = t2.run("./build/bin/mailnet status")
            assert said("killed (signal 9)") in out.stdout, out.stdout
            said("deathstar.com turns red on the Network page at once")
            dash.wait_states({"deathstar.com": "killed"}, timeout=5)
            r, g, bl = dash.rgb("deathstar.com")
            assert r > 2 * g and r > 2 * bl, ("not red", r, g, bl)
            r, g, bl = dash.rgb("jaku.com")
            assert g > r and g > bl, ("jaku.com not green", r, g, bl)
            dash.screenshot("guide-killed")
            # 5. Watch the queue.
            out = t2.run('swaks --server 127.0.0.1:1025 --from rey@jaku.com --to vader@deathstar.com '
                         '--header "Subject: We have the plans"')
            assert out.returncode == 0, out.stdout

            def queued():
                text = t2.run("./build/bin/mailnet queue").stdout
                return "last error" in text and text
            text = harness.wait_for(queued, 10, "the queued message")
            assert re.search(r"jaku\.com  \w+  from <rey@jaku\.com>  to vader@deathstar\.com", text), text
            said("from <rey@jaku.com>  to vader@deathstar.com")
            assert re.search(r"attempts \d+, next try \d\d:\d\d:\d\d", text) and said("attempts 1, next try"), text
            assert said("last error: 4.4.1 No answer from deathstar.com at 127.0.0.1:1030") in text, text
            b.wait(lambda d: said("queue 1") in dash.graph()["jaku.com"]["label"], 30, "jaku.com's label: queue 1")
            dash.node("jaku.com")
            b.wait(lambda d: "vader@deathstar.com" in b.find("#queue").text, 30, "the queued message on the node page")
            b.wait(lambda d: said("4.4.1 No answer from deathstar.com") in b.find("#queue").text, 30, "its last error")
            dash.screenshot("guide-queue")
            dash.network()
            # 6. Restart it.
            out = t2.run("./build/bin/mailnet start deathstar.com")
            assert said("deathstar.com: ready") in out.stdout, out.stdout + out.stderr
            harness.wait_for(lambda: said("0 messages waiting") in t2.run("./build/bin/mailnet queue").stdout, 5,
                             "the queue to drain")
            said("deathstar.com is green again")
            dash.wait_states({"deathstar.com": "ready"})
            said("the line stays")
            b.wait(lambda d: any({e["source"], e["target"]} == {"jaku.com", "deathstar.com"} for e in dash.edges()), 30,
                   "the line between jaku.com and deathstar.com")
            b.wait(lambda d: "queue" not in dash.graph()["jaku.com"]["label"], 30, "jaku.com's queue label gone")
            dash.screenshot("guide-network")
            # 7. See the delivery.
            assert len(t2.run("ls run/starwars/deathstar.com/mail/vader/new/").stdout.split()) == 1
            out = t2.run("./build/bin/mailnet logs jaku.com")
            assert said("event=relayed rcpt=vader@deathstar.com") in out.stdout, out.stdout
            dash.mail()
            dash.open_message(said("We have the plans"))
            said("**Path across the network** draws its life on two lanes")
            b.wait(lambda d: dash.lanes() == ["jaku.com", "deathstar.com"], 30, "the two lanes of the trace")
            # delivered at deathstar.com may be logged before relayed at jaku.com: both, in either order.
            b.wait(lambda d: {("deathstar.com", "delivered"), ("jaku.com", "relayed")} <= set(dash.trace()), 30,
                   "delivered at deathstar.com and relayed at jaku.com")
            events = dash.trace()
            # jaku.com's own path, its SPF, DKIM and DMARC verdicts aside (they come before accepted).
            jaku = [e for n, e in events if n == "jaku.com" and e not in ("spf", "dkim", "dmarc")]
            assert jaku[0] == "accepted" and "relayed" in jaku, events
            # The attempts that failed while deathstar.com was down come before the relay.
            said("then `deferred` for each attempt that failed")
            assert "deferred" in jaku and jaku.index("deferred") < jaku.index("relayed"), events
            dash.screenshot("guide-trace")
            # 8. Read a bounce.
            out = t2.run("swaks --server 127.0.0.1:1025 --from rey@jaku.com --to luke@genshinimpact.com")
            assert out.returncode == 0, out.stdout
            bounces = harness.wait_for(
                lambda: [m for m in network_messages(tmp, "jaku.com", "rey") if b"Undelivered Mail" in m], 10,
                "the bounce")
            report = bounces[0].decode()
            said("Undelivered Mail Returned to Sender")
            assert said("<luke@genshinimpact.com>: 5.1.2 Domain genshinimpact.com not found") in report, report
            assert said("Status: 5.1.2") in report, report
            dash.mail()
            row = dash.mail_row("Undelivered Mail Returned to Sender")
            assert row["badge"] and said("red `bounce` badge"), row
            b.assert_no_console_errors()
            # 9. Stop.
            out = t2.run("./build/bin/mailnet down")
            assert out.returncode == 0, out.stdout + out.stderr
            assert network.proc.wait(timeout=30) == 0


class Dashboard:
    """The browser on the projector: the pages the guide names, read as the
    class sees them."""

    def __init__(self, b, url):
        self.b, self.url = b, url.rstrip("/")

    def network(self):
        self.b.open(self.url + "/")
        self.b.wait(lambda d: d.execute_script("return !!window.mailnetGraph && window.mailnetGraph.available()"), 30,
                    "the network graph")

    def graph(self):
        return {n["id"]: n for n in self.b.driver.execute_script("return window.mailnetGraph.nodes()")}

    def edges(self):
        return self.b.driver.execute_script("return window.mailnetGraph.edges()")

    def colour(self, node):
        return self.graph()[node]["colour"]

    def rgb(self, node):
        """The node's colour on the graph, as (red, green, blue)."""
        return tuple(int(v) for v in re.findall(r"\d+", self.colour(node))[:3])

    def wait_states(self, states, timeout=30):
        self.b.wait(lambda d: all(self.graph().get(n, {}).get("state") == s for n, s in states.items()), timeout,
                    f"the graph's states {states}")

    def node(self, name):
        self.b.open(f"{self.url}/node.html?name={name}")
        self.b.wait(lambda d: d.find_element(By.ID, "title").text.endswith(name), 30, f"{name}'s page")

    def mail(self):
        self.b.open(self.url + "/mail.html")

    def mail_row(self, text):
        def find():
            for row in self.b.driver.execute_script(
                    "return [...document.querySelectorAll('table.mail-list tbody tr')].map((r) => ({text: r.innerText,"
                    " cls: r.className, badge: !!r.querySelector('.badge.bounce')}))"):
                if text in row["text"]:
                    return row
            return None
        return self.b.wait(lambda d: find(), 30, f"'{text}' in the mail list")

    def open_message(self, subject):
        self.mail_row(subject)

        def click():  # the list may be redrawn between finding the link and clicking it
            try:
                [a for a in self.b.find_all("table.mail-list td.subject a") if a.text == subject][0].click()
                return True
            except (IndexError, StaleElementReferenceException):
                return False
        self.b.wait(lambda d: click(), 30, f"a click on '{subject}'")
        self.b.wait(lambda d: d.execute_script("return location.pathname") == "/message.html", 30, "the message")

    def lanes(self):
        return self.b.driver.execute_script(
            "return [...document.querySelectorAll('svg.timeline g.lane')].map((g) => g.dataset.node)")

    def trace(self):
        return [tuple(e) for e in self.b.driver.execute_script(
            "return [...document.querySelectorAll('svg.timeline g.event')]"
            ".map((g) => [g.dataset.node, g.dataset.event])")]

    def screenshot(self, name):
        self.b.screenshot(name)


def network_messages(folder, domain, user):
    new = os.path.join(folder, "run", "starwars", domain, "mail", user, "new")
    out = []
    for name in sorted(os.listdir(new)) if os.path.isdir(new) else []:
        with open(os.path.join(new, name), "rb") as f:
            out.append(f.read())
    return out


if __name__ == "__main__":
    harness.run_tests([test_the_classroom_guide_as_written])
