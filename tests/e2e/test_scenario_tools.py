"""Issue 8: `mailnet run` (pass, fail, --keep), `mailnet init` by questions and
by flags, `mailnet validate` of steps, and `mailnet graph` with relay counts."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(*args, cwd=None, stdin=None, check=None, timeout=120):
    out = subprocess.run([harness.binary("mailnet"), *args], capture_output=True, text=True, cwd=cwd, input=stdin,
                         timeout=timeout)
    if check is not None:
        assert out.returncode == check, f"mailnet {' '.join(args)} -> {out.returncode}:\n{out.stdout}{out.stderr}"
    return out


def write(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return path


launcher_pid = harness.launcher_pid
# Whatever happens inside, no process of a network is left running in run_dir.
brought_down = harness.network_stopped


def test_run_passes_fails_and_keeps():
    topo = harness.two_domain_topology(name="played")
    topo["steps"] = [
        {"send": {"from": "rey@jaku.com", "to": ["vader@deathstar.com", "luke@genshinimpact.com"], "subject": "Hi"}},
        {"expect": {"mailbox": "deathstar.com/vader", "subject": "Hi"}},
        {"expect": {"bounce": "jaku.com/rey", "status": "5.1.2"}},
        {"expect": {"mailbox": "jaku.com/finn", "count": 1, "within": "300ms"}},  # fails: finn got nothing
        {"expect": {"queue": "jaku.com", "count": 0}},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        file = write(os.path.join(tmp, "played.json"), topo)
        run_dir = os.path.join(tmp, "run")
        with brought_down(run_dir):
            out = mailnet("run", file, "--dir", run_dir, check=1)
            lines = out.stdout.splitlines()
            assert any(re.match(r"\[1/5\] send rey@jaku.com → .* \.\.\. pass \(queued as \w+\)", l) for l in lines), \
                out.stdout
            assert any(l.startswith("[4/5] expect finn@jaku.com holds 1 message(s) ... FAIL: after 300 ms: found 0 "
                                    "($.steps[3])") for l in lines), out.stdout
            assert "4 passed, 1 failed" in lines[-1], out.stdout
            assert launcher_pid(run_dir) == 0 or not harness.pid_alive(launcher_pid(run_dir)), "run left the network up"

            topo["steps"] = topo["steps"][:3]
            write(file, topo)
            out = mailnet("run", file, "--dir", run_dir, "--keep", check=0)
            assert "3 passed, 0 failed" in out.stdout, out.stdout
            pid = launcher_pid(run_dir)
            assert pid and harness.pid_alive(pid), "--keep should leave the network up"
            assert len(os.listdir(os.path.join(run_dir, "deathstar.com", "mail", "vader", "new"))) == 1  # fresh folder


def test_run_plays_stop_waits_and_the_resolver():
    """The step kinds the shipped scenarios do not play: stop, a fixed wait,
    the resolver killed and restarted (mail queues while it is down), and a
    wait until a condition that never holds (it fails at its deadline)."""
    topo = harness.two_domain_topology(name="lifecycle")
    topo["defaults"]["retry"] = {"first": "200ms", "max": "400ms", "give_up_after": "1m"}
    topo["steps"] = [
        {"stop": "deathstar.com"},
        {"wait": "300ms"},
        {"expect": {"resolve": "deathstar.com", "answer": f"127.0.0.1:{harness.port_of(topo, 'deathstar.com')}"}},
        {"kill": "resolver"},
        {"start": "deathstar.com"},
        {"send": {"from": "rey@jaku.com", "to": ["vader@deathstar.com"], "subject": "while the resolver is down",
                  "via": f"127.0.0.1:{harness.port_of(topo, 'jaku.com')}"}},  # no resolver to find jaku.com
        {"wait": {"until": {"queue": "jaku.com", "count": 1}, "timeout": "5s"}},
        {"restart": "resolver"},
        {"expect": {"mailbox": "deathstar.com/vader", "subject": "while the resolver is down", "within": "10s"}},
        {"wait": {"until": {"mailbox": "jaku.com/finn", "count": 1}, "timeout": "400ms"}},  # fails: nothing for finn
    ]
    with tempfile.TemporaryDirectory() as tmp:
        file = write(os.path.join(tmp, "lifecycle.json"), topo)
        run_dir = os.path.join(tmp, "run")
        with brought_down(run_dir):
            started = time.monotonic()
            out = mailnet("run", file, "--dir", run_dir, check=1)
            lines = out.stdout.splitlines()
            for number, text in ((1, "stop deathstar.com"), (2, "wait 300ms"), (4, "kill resolver"),
                                 (5, "start deathstar.com"), (8, "restart resolver")):
                assert any(re.match(rf"\[\s*{number}/10\] {text} \.\.\. pass", l) for l in lines), \
                    (number, text, out.stdout)
            assert any(re.match(r"\[10/10\] wait until .* FAIL: after 400 ms", l) for l in lines), out.stdout
            assert "9 passed, 1 failed" in lines[-1], out.stdout
            assert time.monotonic() - started >= 0.7  # the fixed wait and the deadline were waited out


def test_validate_reports_bad_steps():
    topo = harness.two_domain_topology()
    topo["steps"] = [{"expect": {"mailbox": "jaku.com/luke", "count": 1}}]
    with tempfile.TemporaryDirectory() as tmp:
        file = write(os.path.join(tmp, "bad.json"), topo)
        out = mailnet("validate", file, check=2)
        assert f"{file}: $.steps[0].expect.mailbox: no user \"luke\" in jaku.com" in out.stderr, out.stderr
        out = mailnet("run", file, "--dir", os.path.join(tmp, "run"), check=2)
        assert not os.path.exists(os.path.join(tmp, "run")), "a bad scenario must start nothing"


def test_init_by_questions_and_by_flags():
    with tempfile.TemporaryDirectory() as tmp:
        busy = harness.free_tcp_port()
        import socket
        blocker = harness.tracked(socket.socket())
        blocker.bind(("127.0.0.1", busy))
        blocker.listen(1)
        p1, p2 = harness.free_tcp_ports(2)
        resolver = f"127.0.0.1:{harness.free_udp_port()}"
        answers = "\n".join([
            "school",
            resolver,                                 # the resolver's address (default 127.0.0.1:5353, maybe taken)
            "",                                       # own addresses? no (the default)
            "zero", "2",                              # a bad count first
            "bad..name", "alpha.example",             # a bad domain first
            str(busy), "70000", str(p1),              # a busy port, an impossible one, then a free one
            "ann, bob",
            "alpha.example", "beta.example",          # a duplicate domain first
            str(p1), str(p2),                         # a duplicate port first
            "../root", "carl",                        # a bad user first
        ]) + "\n"
        try:
            out = mailnet("init", "-o", "school.json", cwd=tmp, stdin=answers, check=0)
        finally:
            blocker.close()
        for complaint in ("a number from 1 to 500", "'bad..name' is not a valid domain name", "is in use on 127.0.0.1",
                          "must be a number from 1 to 65535", "alpha.example is already in the network",
                          f"port {p1} is already used by alpha.example", "'../root' is not a valid user name"):
            assert complaint in out.stdout, (complaint, out.stdout)
        doc = json.load(open(os.path.join(tmp, "school.json")))
        assert doc["name"] == "school"
        assert [(d["name"], d["listen"], d["users"]) for d in doc["domains"]] == [
            ("alpha.example", f"127.0.0.1:{p1}", ["ann", "bob"]), ("beta.example", f"127.0.0.1:{p2}", ["carl"])]
        mailnet("validate", "school.json", cwd=tmp, check=0)

        out = mailnet("init", "-o", "school.json", cwd=tmp, stdin="", check=2)
        assert "input ended" in out.stderr or "exists" in out.stderr, out.stderr
        out = mailnet("init", "--name", "flags", "-o", "flags.json", "--resolver", resolver,
                      "--server", f"a.example:{p1}:x,y",
                      "--server", f"b.example:{p2}:z", cwd=tmp, check=0)
        doc = json.load(open(os.path.join(tmp, "flags.json")))
        assert [d["name"] for d in doc["domains"]] == ["a.example", "b.example"]
        out = mailnet("init", "-o", "dup.json", "--resolver", resolver, "--server", f"a.example:{p1}:x",
                      "--server", f"a.example:{p2}:y",
                      cwd=tmp, check=2)
        assert "already in the network" in out.stderr, out.stderr
        assert not os.path.exists(os.path.join(tmp, "dup.json"))


def test_graph_formats_and_relay_counts():
    topo = harness.two_domain_topology(name="drawn")
    topo["steps"] = [
        {"send": {"from": "rey@jaku.com", "to": "vader@deathstar.com", "subject": "one"}},
        {"send": {"from": "finn@jaku.com", "to": "tarkin@deathstar.com", "subject": "two"}},
        {"send": {"from": "vader@deathstar.com", "to": "rey@jaku.com", "subject": "back"}},
        {"expect": {"mailbox": "deathstar.com/tarkin", "count": 1}},
        {"expect": {"mailbox": "deathstar.com/vader", "count": 1}},
        {"expect": {"mailbox": "jaku.com/rey", "count": 1}},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        file = write(os.path.join(tmp, "drawn.json"), topo)
        before = mailnet("graph", file, cwd=tmp, check=0).stdout
        assert before.startswith('digraph "drawn" {') and '"jaku.com" -> "deathstar.com" [label=' not in before, before
        with brought_down(os.path.join(tmp, "run", "drawn")):
            mailnet("run", file, cwd=tmp, check=0)  # runs in ./run/drawn
        dot = mailnet("graph", file, cwd=tmp, check=0).stdout
        assert '"jaku.com" -> "deathstar.com" [label="2"];' in dot, dot
        assert '"deathstar.com" -> "jaku.com" [label="1"];' in dot, dot
        mermaid = mailnet("graph", file, "--format", "mermaid", cwd=tmp, check=0).stdout
        assert mermaid.startswith("graph LR") and "n0 -->|2| n1" in mermaid and "n1 -->|1| n0" in mermaid, mermaid
        assert mailnet("graph", file, "--format", "svg", cwd=tmp).returncode != 0


def test_run_sends_through_the_submission_listener_with_auth():
    """A sender whose domain has a submission listener sends there, as
    `mailnet send` does: STARTTLS, then AUTH with the stored password or the
    step's "password" (a wrong one is refused with 535 5.7.8)."""
    topo = harness.two_domain_topology(name="submitted")
    submission = harness.free_tcp_port()
    deathstar = topo["domains"][1]
    deathstar["submission"] = f"127.0.0.1:{submission}"
    deathstar["users"] = ["vader", {"name": "tarkin", "password": "grand moff"}]
    topo["steps"] = [
        {"send": {"from": "vader@deathstar.com", "to": "rey@jaku.com", "subject": "Stored password"}},
        {"send": {"from": "tarkin@deathstar.com", "to": "rey@jaku.com", "subject": "Wrong",
                  "password": "grand mof", "refused": "5.7.8"}},
        {"send": {"from": "tarkin@deathstar.com", "to": "rey@jaku.com", "subject": "Given password",
                  "password": "grand moff"}},
        {"expect": {"mailbox": "jaku.com/rey", "count": 2}},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        file = write(os.path.join(tmp, "submitted.json"), topo)
        bad = json.loads(json.dumps(topo))
        bad["steps"][2]["send"]["password"] = "grand:moff"
        out = mailnet("validate", write(os.path.join(tmp, "bad.json"), bad), check=2)
        assert "$.steps[2].send.password: expected 1 to 128 printable ASCII characters" in out.stderr, out.stderr
        run_dir = os.path.join(tmp, "run")
        with brought_down(run_dir):
            out = mailnet("run", file, "--dir", run_dir, check=0)
            assert "4 passed, 0 failed" in out.stdout, out.stdout
            assert re.search(r"\[2/4\] send tarkin@deathstar.com .* with a password, expecting 5.7.8 \.\.\. pass "
                             r"\(refused: 535 5\.7\.8", out.stdout), out.stdout
            with open(os.path.join(run_dir, "deathstar.com", "node.log"), encoding="utf-8") as f:
                log = f.read().splitlines()
            assert len([l for l in log if "event=accepted" in l and "auth=" in l and "auth=no" not in l]) == 2, log
            assert len([l for l in log if "event=auth_failed" in l]) == 1, log
            rey = os.path.join(run_dir, "jaku.com", "mail", "rey", "new")
            for name in os.listdir(rey):
                with open(os.path.join(rey, name), "rb") as f:
                    assert b"with ESMTPSA" in f.read()


if __name__ == "__main__":
    harness.run_tests([test_run_passes_fails_and_keeps, test_run_plays_stop_waits_and_the_resolver,
                       test_validate_reports_bad_steps,
                       test_run_sends_through_the_submission_listener_with_auth,
                       test_init_by_questions_and_by_flags, test_graph_formats_and_relay_counts])
