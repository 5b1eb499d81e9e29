"""Issue 18, the CLI: what a newcomer trips on. Each test drives the real
`mailnet` binary against real nodes and resolvers on free loopback ports."""
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(*args, cwd=None, stdin=None, timeout=120):
    return subprocess.run([harness.binary("mailnet"), *args], capture_output=True, text=True, cwd=cwd, input=stdin,
                          timeout=timeout)


def ok(out):
    assert out.returncode == 0, f"{out.args} -> {out.returncode}:\n{out.stdout}{out.stderr}"
    return out


class Detached:
    """`mailnet up -d` of a topology in a temporary folder, as a user runs it
    (./run/<name>); brought down, and its processes killed by pid, at the end."""

    def __init__(self, topo):
        self.tmp = tempfile.TemporaryDirectory(prefix="mailnet-cli18-")
        self.cwd = self.tmp.name
        self.topo = topo
        self.file = os.path.join(self.cwd, f"{topo['name']}.json")
        self.write()
        self.run_dir = os.path.join(self.cwd, "run", topo["name"])
        self.seen_pids = set()

    def write(self):
        with open(self.file, "w") as f:
            json.dump(self.topo, f)

    def cli(self, *args, stdin=None):
        out = mailnet(*args, cwd=self.cwd, stdin=stdin)
        self.seen_pids.update(harness.network_pids(self.run_dir))
        return out

    def up(self, *extra):
        return ok(self.cli("up", "-d", self.file, *extra))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.seen_pids.update(harness.network_pids(self.run_dir))
        mailnet("down", "--dir", self.run_dir, timeout=30)
        for pid in self.seen_pids:
            if harness.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.tmp.cleanup()
        return False


def width(text):
    """Terminal columns, as wcwidth counts them: wide and fullwidth take 2, marks 0."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def smtp_log(run_dir, domain):
    with open(os.path.join(run_dir, domain, "smtp.log"), encoding="utf-8", errors="replace") as f:
        return f.read()


# ---------------------------------------------------------------- send


def test_send_more_recipients_than_a_transaction_takes():
    """jaku.com takes the RFC's 100 recipients per message (any local part is
    a mailbox); deathstar.com takes 2 and knows its users. send splits the
    list into transactions, reports each recipient, and exits 1 naming the
    refused one while the others still get the message."""
    topo = harness.two_domain_topology(name="many")
    topo["domains"][0]["policy"] = {"mailbox_by_local_part": True, "require_known_users": False}
    topo["domains"][1]["users"] = ["vader", "tarkin", "piett", "veers"]
    topo["domains"][1]["limits"] = {"recipients": 2}
    with Detached(topo) as net:
        net.up()
        rcpts = [f"trooper{i}@jaku.com" for i in range(150)]
        out = net.cli("send", "--from", "rey@jaku.com", "--to", ",".join(rcpts), "--subject", "roll call",
                      "--body", "all of you")
        ok(out)
        lines = out.stdout.splitlines()
        assert len(lines) == 150 and all(re.fullmatch(r"trooper\d+@jaku\.com: queued as \w+", l) for l in lines), \
            out.stdout
        assert len({l.rsplit(" ", 1)[1] for l in lines}) == 2, "150 recipients: two transactions of 100 and 50"
        for i in (0, 99, 100, 149):
            harness.wait_for(lambda: os.listdir(os.path.join(net.run_dir, "jaku.com", "mail", f"trooper{i}", "new")),
                             30, f"trooper{i}'s message")
        assert smtp_log(net.run_dir, "jaku.com").count("452 4.5.3") == 1

        # Two per transaction, and nobody@ refused with 550 in the middle.
        out = net.cli("send", "--from", "tarkin@deathstar.com", "--to", "vader@deathstar.com, tarkin@deathstar.com",
                      "--to", "nobody@deathstar.com", "--cc", "piett@deathstar.com", "--bcc", "veers@deathstar.com",
                      "--subject", "inspection", "--body", "tomorrow")
        assert out.returncode == 1, out
        for user in ("vader", "tarkin", "piett", "veers"):
            assert re.search(rf"^{user}@deathstar\.com: queued as \w+$", out.stdout, re.M), out.stdout
            harness.wait_for(lambda: os.path.isdir(os.path.join(net.run_dir, "deathstar.com", "mail", user, "new"))
                             and os.listdir(os.path.join(net.run_dir, "deathstar.com", "mail", user, "new")),
                             30, f"{user}'s message")
        assert "nobody@deathstar.com: refused by" in out.stderr and "550 5.1.1" in out.stderr, out.stderr
        assert "1 of 5 recipients refused" in out.stderr, out.stderr
        assert "nobody" not in out.stdout


def test_send_stops_at_a_421_and_reports_every_recipient():
    """A server that says 421 at the third RCPT closes the session: the two it
    had accepted get no DATA, and every recipient is reported refused with it."""
    port = harness.free_tcp_port()
    replies = {"RCPT": lambda line, session: "421 4.3.2 going away" if len(session["transaction"]["rcpts"]) == 3
               else None}
    with harness.FakeSmtpPeer(port, replies=replies) as peer, tempfile.TemporaryDirectory() as tmp:
        out = mailnet("send", "--from", "rey@jaku.com", "--to", "a@x.example, b@x.example, c@x.example, d@x.example",
                      "--subject", "x", "--body", "x", "--via", f"127.0.0.1:{port}", cwd=tmp)
        assert out.returncode == 1, out
        for who in "abcd":
            assert f"{who}@x.example: refused by 127.0.0.1:{port}: 421 4.3.2 going away" in out.stderr, out.stderr
        assert "4 of 4 recipients refused" in out.stderr and out.stdout == "", out
        with peer.lock:
            assert peer.messages == [] and not any(l.startswith(b"DATA") for s in peer.sessions for l in s["lines"])



def test_send_stops_at_a_421_after_the_data():
    """A 421 to the end of the data closes the session too: the recipients of
    that transaction and those still waiting for the next (after a 452) all
    get the 421, and nothing more is sent (no RSET, no second MAIL)."""
    port = harness.free_tcp_port()
    replies = {"RCPT": lambda line, session: "452 4.5.3 too many recipients"
               if len(session["transaction"]["rcpts"]) == 3 else None,
               "DOT": "421 4.3.2 going away"}
    with harness.FakeSmtpPeer(port, replies=replies) as peer, tempfile.TemporaryDirectory() as tmp:
        out = mailnet("send", "--from", "rey@jaku.com", "--to", "a@x.example, b@x.example, c@x.example, d@x.example",
                      "--subject", "x", "--body", "x", "--via", f"127.0.0.1:{port}", cwd=tmp)
        assert out.returncode == 1, out
        for who in "abcd":
            assert f"{who}@x.example: refused by 127.0.0.1:{port}: 421 4.3.2 going away" in out.stderr, out.stderr
        assert "4 of 4 recipients refused" in out.stderr and out.stdout == "", out
        with peer.lock:
            lines = [l for s in peer.sessions for l in s["lines"]]
            assert sum(l.startswith(b"MAIL") for l in lines) == 1, lines
            assert not any(l.startswith(b"RSET") for l in lines), lines


# ---------------------------------------------------------------- inbox


def test_inbox_any_case_user_column_and_wide_characters():
    topo = harness.two_domain_topology(name="wide")
    with Detached(topo) as net:
        net.up()
        subjects = ["plain subject", "日本語の件名です", "🚀🚀 launch 🛸", "Ｆｕｌｌｗｉｄｔｈ ok", "e\u0301te\u0301 accents"]
        for s in subjects:
            ok(net.cli("send", "--from", "vader@deathstar.com", "--to", "obiwan@jaku.com", "--subject", s, "--body", "x"))
        ok(net.cli("send", "--from", "vader@deathstar.com", "--to", "rey@jaku.com", "--subject", "for rey",
                   "--body", "x"))
        harness.wait_for(lambda: len(os.listdir(os.path.join(net.run_dir, "jaku.com", "mail", "obiwan", "new")))
                         == len(subjects), 30, "obiwan's messages")
        rey_new = os.path.join(net.run_dir, "jaku.com", "mail", "rey", "new")
        harness.wait_for(lambda: os.path.isdir(rey_new) and os.listdir(rey_new), 30, "rey's message")

        both = ok(net.cli("inbox", "JAKU.COM")).stdout
        assert "for rey" in both and "plain subject" in both and f"{len(subjects) + 1} messages" in both, both
        only = ok(net.cli("inbox", "jaku.com.", "OBIWAN")).stdout
        assert "for rey" not in only and f"{len(subjects)} messages" in only, only
        lines = only.splitlines()[:-1]
        assert lines[0].split()[:2] == ["USER", "DATE"], lines[0]
        assert all(l.startswith("obiwan ") for l in lines[1:]), lines
        # Every row's path starts in the column of the PATH heading, counted in
        # terminal columns: wide characters take two.
        columns = {width(lines[0][:lines[0].index("PATH")])}
        for l in lines[1:]:
            columns.add(width(l[:l.index("run/wide/jaku.com/mail/obiwan/")]))
        assert len(columns) == 1, (columns, only)
        for s in subjects:
            assert s in only, (s, only)
        # show takes a Maildir name's prefix in any case too.
        name = sorted(os.listdir(os.path.join(net.run_dir, "jaku.com", "mail", "rey", "new")))[0]
        shown = ok(net.cli("show", name.split(".mailnet")[0].lower()))
        assert "Subject: for rey" in shown.stdout, shown.stdout
        bad = net.cli("inbox", "tatooine.example")
        assert bad.returncode == 1 and "no domain tatooine.example in network wide" in bad.stderr, bad.stderr


# ---------------------------------------------------------------- init


def says_taken(text, kind):
    """The port was found taken for `kind` (UDP or TCP). The kernel may have
    given the same number to a socket of the other kind meanwhile (another
    test's connection takes ephemeral ports too): then both are named."""
    return (f"({kind}): the resolver needs both" in text
            or "(UDP and TCP): the resolver needs both" in text)


def test_init_checks_each_answer_where_it_is_given():
    with tempfile.TemporaryDirectory() as tmp:
        udp_busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp_busy.bind(("127.0.0.1", 0))
        tcp_busy = socket.socket()
        tcp_busy.bind(("127.0.0.1", 0))
        tcp_busy.listen(1)
        resolver_port = harness.free_udp_port()
        p1, p2 = harness.free_tcp_ports(2)
        open(os.path.join(tmp, "taken.json"), "w").close()
        answers = "\n".join([
            "my network", "taken", "school",                                   # bad name, file exists, good
            "127.0.0.1", "10.0.0.1:53",                                        # no port, not loopback
            f"127.0.0.1:{udp_busy.getsockname()[1]}",                          # UDP taken
            f"127.0.0.1:{tcp_busy.getsockname()[1]}",                          # TCP taken
            f"127.0.0.1:{resolver_port}",
            "maybe", "n",                                                      # own addresses? not y/n, then no
            "2",
            "alpha.example", str(resolver_port), str(p1), "ann",                # the resolver's port first
            "ALPHA.example", "Resolver", "beta.example", str(p2), "Bob, bob", "bob",
        ]) + "\n"
        try:
            out = mailnet("init", cwd=tmp, stdin=answers)
        finally:
            udp_busy.close()
            tcp_busy.close()
        assert out.returncode == 0, out.stdout + out.stderr
        for complaint in ("expected letters, digits", "taken.json exists; choose another name",
                          'with a loopback host (127.0.0.0/8 or [::1]), found "127.0.0.1"',
                          'found "10.0.0.1:53"',
                          f"port {resolver_port} is the resolver's", "domain alpha.example is already in the network",
                          "'Resolver' is reserved", "user bob is listed twice", "answer y or n"):
            assert complaint in out.stdout, (complaint, out.stdout)
        assert out.stdout.count("the resolver needs both") >= 2, out.stdout
        assert says_taken(out.stdout, "UDP") and says_taken(out.stdout, "TCP"), out.stdout
        assert "Resolver address [127.0.0.1:5353]: " in out.stdout, out.stdout
        doc = json.load(open(os.path.join(tmp, "school.json")))
        assert doc["resolver"]["listen"] == f"127.0.0.1:{resolver_port}", doc
        assert [(d["name"], d["listen"], d["users"]) for d in doc["domains"]] == [
            ("alpha.example", f"127.0.0.1:{p1}", ["ann"]), ("beta.example", f"127.0.0.1:{p2}", ["bob"])], doc
        ok(mailnet("validate", "school.json", cwd=tmp))

        # The default address is taken when the answer is empty.
        out = mailnet("init", "--name", "quick", "--no-port-check", cwd=tmp, stdin=f"\n\n1\nq.example\n{p1}\nq\n")
        assert json.load(open(os.path.join(tmp, "quick.json")))["resolver"]["listen"] == "127.0.0.1:5353", out

        # --resolver is checked like --server ports.
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        try:
            out = mailnet("init", "--name", "flags", "--resolver", f"127.0.0.1:{busy.getsockname()[1]}",
                          "--server", f"a.example:{p1}:x", cwd=tmp)
        finally:
            busy.close()
        assert out.returncode == 2 and says_taken(out.stderr, "UDP"), out.stderr
        assert not os.path.exists(os.path.join(tmp, "flags.json"))


# ---------------------------------------------------------------- status


def test_status_columns_fit_their_content():
    topo = harness.two_domain_topology(name="columns")
    topo["domains"][0]["name"] = "tatooine-outer-rim-trading-post.example"
    with Detached(topo) as net:
        net.up()
        ok(net.cli("kill", "deathstar.com"))
        out = ok(net.cli("status")).stdout
        lines = out.splitlines()[1:]
        header = lines[0]
        rows = {l.split()[0]: l for l in lines[1:]}
        assert set(rows) == {"resolver", "tatooine-outer-rim-trading-post.example", "deathstar.com"}, out
        for name, row in rows.items():
            state = row[header.index("STATE"):].split("  ")[0]
            assert state in ("ready", "killed (signal 9)"), (name, state, out)
            assert row[header.index("ADDRESS"):].split()[0].startswith("127.0.0.1:"), (name, out)


# ---------------------------------------------------------------- run


def test_run_never_empties_a_network_the_user_brought_up():
    topo = harness.two_domain_topology(name="mine")
    with Detached(topo) as net:
        net.up()
        ok(net.cli("send", "--from", "rey@jaku.com", "--to", "finn@jaku.com", "--subject", "my own", "--body", "x"))
        finn = os.path.join(net.run_dir, "jaku.com", "mail", "finn", "new")
        harness.wait_for(lambda: os.path.isdir(finn) and os.listdir(finn), 30, "finn's message")
        ok(net.cli("down"))
        net.topo["steps"] = [{"expect": {"mailbox": "jaku.com/rey", "count": 0}}]
        net.write()
        out = net.cli("run", net.file)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "--fresh" in out.stderr and "--dir" in out.stderr and "run/mine" in out.stderr, out.stderr
        assert len(os.listdir(finn)) == 1, "the user's mail must stay"
        # Played elsewhere, or with --fresh; then again (the folder is the scenario's now).
        ok(net.cli("run", net.file, "--dir", os.path.join(net.cwd, "elsewhere")))
        assert len(os.listdir(finn)) == 1
        ok(net.cli("run", net.file, "--fresh"))
        assert not os.listdir(finn), "--fresh empties it"
        ok(net.cli("run", net.file))
        # Brought up by the user again: the mail is theirs again.
        net.up()
        ok(net.cli("down"))
        assert net.cli("run", net.file).returncode == 2
        # A run whose network did not come up (a port taken) still made the
        # folder the scenario's: the next run there needs no --fresh.
        failed_dir = os.path.join(net.cwd, "failed")
        port = harness.port_of(net.topo, "jaku.com")
        with socket.create_server(("127.0.0.1", port)):
            out = net.cli("run", net.file, "--dir", failed_dir)
            assert out.returncode == 1 and "did not come up" in out.stdout, out.stdout + out.stderr
        ok(net.cli("run", net.file, "--dir", failed_dir))


# ---------------------------------------------------------------- small things


def test_help_usage_errors_flush_counts_and_logs_after_down():
    out = mailnet()
    assert out.returncode == 0 and "Subcommands:" in out.stdout and "send" in out.stdout, out
    for args in (("frobnicate",), ("send", "--to", "x@y.z"), ("inbox",), ("status", "--bogus")):
        out = mailnet(*args)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
    topo = harness.two_domain_topology(name="small")
    del topo["domains"][1]
    with Detached(topo) as net:
        out = ok(net.cli("validate", net.file))
        assert "with 1 domain and 0 steps" in out.stdout, out.stdout
        net.up()
        out = ok(net.cli("flush"))
        assert "jaku.com: retrying waiting mail now" in out.stdout, out.stdout
        ok(net.cli("down"))
        out = ok(net.cli("logs", "jaku.com"))
        assert "event=ready" in out.stdout, out.stdout
        out = ok(net.cli("logs", "RESOLVER"))
        assert "event=ready" in out.stdout, out.stdout


def test_send_names_the_sender_node_that_is_down():
    topo = harness.two_domain_topology(name="downnode")
    with Detached(topo) as net:
        net.up()
        ok(net.cli("stop", "deathstar.com"))
        out = net.cli("send", "--from", "vader@deathstar.com", "--to", "rey@jaku.com", "--subject", "x", "--body", "x")
        assert out.returncode == 1, out
        port = harness.port_of(topo, "deathstar.com")
        assert f"the node of deathstar.com (127.0.0.1:{port}) does not answer" in out.stderr, out.stderr
        assert "mailnet start deathstar.com" in out.stderr, out.stderr


def test_send_on_a_terminal_says_it_reads_the_body():
    topo = harness.two_domain_topology(name="tty")
    with Detached(topo) as net:
        net.up()
        master, slave = pty.openpty()
        proc = subprocess.Popen([harness.binary("mailnet"), "send", "--from", "rey@jaku.com", "--to", "finn@jaku.com",
                                 "--subject", "typed"], cwd=net.cwd, stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True)
        os.close(slave)
        try:
            err = b""
            deadline = time.monotonic() + 30
            while b"reading the body from standard input" not in err and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stderr], [], [], 1)
                if ready:
                    chunk = os.read(proc.stderr.fileno(), 4096)
                    if not chunk:
                        break
                    err += chunk
            assert b"reading the body from standard input" in err and b"Ctrl-D" in err, err
            os.write(master, b"typed at a terminal\n\x04")  # the line, then end of input
            out, rest = proc.communicate(timeout=60)
            assert proc.returncode == 0, (out, err + rest)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        new = os.path.join(net.run_dir, "jaku.com", "mail", "finn", "new")
        (name,) = harness.wait_for(lambda: os.path.isdir(new) and os.listdir(new), 30, "finn's message")
        assert b"typed at a terminal" in open(os.path.join(new, name), "rb").read()
        # Not on a terminal: no such line (the body comes from a pipe or file).
        out = net.cli("send", "--from", "rey@jaku.com", "--to", "finn@jaku.com", "--subject", "piped", stdin="piped\n")
        assert out.returncode == 0 and "standard input" not in out.stderr, out.stderr


def test_up_port_error_names_the_domain_once():
    topo = harness.two_domain_topology(name="busy")
    busy = socket.socket()
    busy.bind(("127.0.0.1", harness.port_of(topo, "deathstar.com")))
    busy.listen(1)
    try:
        with Detached(topo) as net:
            out = net.cli("up", "-d", net.file)
            assert out.returncode != 0, out
            line = next((l for l in (out.stdout + out.stderr).splitlines() if "failed to start" in l), "")
            assert line.count("deathstar.com") == 1 and "cannot listen on" in line, out.stdout + out.stderr
    finally:
        busy.close()


# ---------------------------------------------------------------- resolver.ttl


def dig_ttl(resolver, name, rtype):
    host, port = resolver.rsplit(":", 1)
    out = subprocess.run(["dig", f"@{host}", "-p", port, name, rtype, "+norecurse", "+noall", "+answer", "+time=5"],
                         capture_output=True, text=True, timeout=30)
    fields = out.stdout.split()
    assert out.returncode == 0 and len(fields) > 1, out
    return int(fields[1])


def test_resolver_ttl_is_a_topology_setting():
    with tempfile.TemporaryDirectory() as tmp:
        for bad, found in ((-1, "found number"), (86401, "found 86401"), ("5s", "found string")):
            topo = harness.two_domain_topology()
            topo["resolver"]["ttl"] = bad
            file = os.path.join(tmp, "bad.json")
            json.dump(topo, open(file, "w"))
            out = mailnet("validate", file)
            assert out.returncode == 2 and f"{file}: $.resolver.ttl: expected a whole number from 0 to 86400" \
                in out.stderr and found in out.stderr, out.stderr

    topo = harness.two_domain_topology(name="ttl")
    with Detached(topo) as net:
        net.up()
        # The default, in the records the nodes receive.
        assert dig_ttl(topo["resolver"]["listen"], "_smtp._tcp.deathstar.com", "SRV") == 5
        ok(net.cli("down"))
        # ttl 0: nothing is cached, so a killed resolver is felt at the next message.
        net.topo["resolver"]["ttl"] = 0
        net.write()
        net.up()
        assert dig_ttl(topo["resolver"]["listen"], "_smtp._tcp.deathstar.com", "SRV") == 0
        ok(net.cli("send", "--from", "rey@jaku.com", "--to", "vader@deathstar.com", "--subject", "first",
                   "--body", "x"))
        vader = os.path.join(net.run_dir, "deathstar.com", "mail", "vader", "new")
        harness.wait_for(lambda: os.path.isdir(vader) and os.listdir(vader), 30, "the first message")
        ok(net.cli("kill", "resolver"))
        ok(net.cli("send", "--from", "rey@jaku.com", "--to", "tarkin@deathstar.com", "--subject", "second",
                   "--body", "x", "--via", f"127.0.0.1:{harness.port_of(topo, 'jaku.com')}"))
        harness.wait_for(lambda: "last error" in ok(net.cli("queue", "jaku.com")).stdout, 30,
                         "the second message queued with an error")
        queue = ok(net.cli("queue", "jaku.com")).stdout
        assert "tarkin@deathstar.com" in queue and "4.4.3 Cannot resolve deathstar.com" in queue, queue
        assert not os.listdir(os.path.join(net.run_dir, "deathstar.com", "mail", "tarkin", "new"))
        ok(net.cli("start", "resolver"))
        tarkin = os.path.join(net.run_dir, "deathstar.com", "mail", "tarkin", "new")
        harness.wait_for(lambda: os.path.isdir(tarkin) and os.listdir(tarkin), 30, "the second message, delivered")


if __name__ == "__main__":
    harness.run_tests([test_send_more_recipients_than_a_transaction_takes,
                       test_send_stops_at_a_421_and_reports_every_recipient, test_send_stops_at_a_421_after_the_data,
                       test_inbox_any_case_user_column_and_wide_characters,
                       test_init_checks_each_answer_where_it_is_given,
                       test_status_columns_fit_their_content,
                       test_run_never_empties_a_network_the_user_brought_up,
                       test_help_usage_errors_flush_counts_and_logs_after_down,
                       test_send_names_the_sender_node_that_is_down,
                       test_send_on_a_terminal_says_it_reads_the_body,
                       test_up_port_error_names_the_domain_once,
                       test_resolver_ttl_is_a_topology_setting])
