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
import harness  # noqa: E402

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
        with network:
            # 1. Start the network.
            network.wait_output(said("mailnet: network starwars is up (run/starwars)"), 30)
            # The node table follows that line: the reader may not have it yet.
            harness.wait_for(lambda: re.search(r"jaku\.com\s+ready\s+127\.0\.0\.1:1025\s+pid \d+", network.output()),
                             10, "the node table after 'is up'")
            said("jaku.com  ready  127.0.0.1:1025  pid")
            network.wait_output(said("mailnet: dashboard and API at http://127.0.0.1:8025/"), 10)
            # 2. Send a mail.
            out = t2.run('swaks --server 127.0.0.1:1025 --from rey@jaku.com --to finn@jaku.com '
                         '--header "Subject: Hello Finn"')
            assert out.returncode == 0 and said("<-  250 2.0.0 Ok: queued as") in out.stdout, out.stdout
            said("event=delivered mailbox=finn")
            harness.wait_for(lambda: re.search(r"^jaku\.com\s*\|.*event=delivered .*mailbox=finn", network.output(),
                                               re.M), 10, "the delivery line in terminal 1")
            # 3. Read the transcript.
            log = t2.run("cat run/starwars/jaku.com/smtp.log").stdout
            assert re.search(r" C: MAIL FROM:<rey@jaku\.com>", log) and said("C: MAIL FROM:<rey@jaku.com>")
            assert said("S: 250 2.0.0 Ok: queued as") in log, log
            said("run/starwars/jaku.com/mail/finn/new/")
            assert len(os.listdir(os.path.join(tmp, "run/starwars/jaku.com/mail/finn/new"))) == 1
            # 4. Kill a node.
            out = t2.run("./build/bin/mailnet kill deathstar.com")
            assert said("deathstar.com: killed") in out.stdout, out.stdout + out.stderr
            out = t2.run("./build/bin/mailnet status")
            assert said("killed (signal 9)") in out.stdout, out.stdout
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
            # 6. Restart it.
            out = t2.run("./build/bin/mailnet start deathstar.com")
            assert said("deathstar.com: ready") in out.stdout, out.stdout + out.stderr
            harness.wait_for(lambda: said("0 messages waiting") in t2.run("./build/bin/mailnet queue").stdout, 5,
                             "the queue to drain")
            # 7. See the delivery.
            assert len(t2.run("ls run/starwars/deathstar.com/mail/vader/new/").stdout.split()) == 1
            out = t2.run("./build/bin/mailnet logs jaku.com")
            assert said("event=relayed rcpt=vader@deathstar.com") in out.stdout, out.stdout
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
            # 9. Stop.
            out = t2.run("./build/bin/mailnet down")
            assert out.returncode == 0, out.stdout + out.stderr
            assert network.proc.wait(timeout=30) == 0


def network_messages(folder, domain, user):
    new = os.path.join(folder, "run", "starwars", domain, "mail", user, "new")
    out = []
    for name in sorted(os.listdir(new)) if os.path.isdir(new) else []:
        with open(os.path.join(new, name), "rb") as f:
            out.append(f.read())
    return out


if __name__ == "__main__":
    harness.run_tests([test_the_classroom_guide_as_written])
