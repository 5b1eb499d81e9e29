"""Fault rules changed while the network runs (issue 20): `mailnet fault
list|add|clear` and GET/POST/DELETE /api/v1/faults, with real processes. A
rule added acts within a second (measured from the command to the first
faulted reply a client sees), a clear ends it as fast, the counts per rule in
`fault list` and `status --json` match the faults the node logged, a bad rule
is refused with the JSON path of its mistake and changes nothing, and a node
that is down applies the change when it starts."""
import json
import os
import shutil
import signal
import smtplib
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_web_api import request, web_port  # noqa: E402

TROUBLE = "451 4.3.0 Simulated trouble"
# A rule acts within a second; the deadline is generous for a loaded machine
# under ASan, and the measured time is printed.
DEADLINE = 10


def mailnet(net, *args, timeout=60):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=timeout)


def rcpt_code(net, domain="deathstar.com", rcpt="vader@deathstar.com"):
    """The reply code a client gets to RCPT TO, in a session of its own."""
    s = smtplib.SMTP("127.0.0.1", harness.port_of(net.topology, domain), timeout=30)
    try:
        s.ehlo("client.example")
        code, _ = s.mail("rey@jaku.com")
        assert code == 250, code
        code, _ = s.rcpt(rcpt)
        return code
    finally:
        s.close()


def until_rcpt_code(net, code, started):
    """Seconds from started until a client's RCPT gets code."""
    harness.wait_for(lambda: rcpt_code(net) == code, DEADLINE, f"RCPT answered {code}")
    return time.monotonic() - started


def fault_list(net):
    out = mailnet(net, "fault", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {f["name"]: f for f in json.loads(out.stdout)}


def status(net):
    out = subprocess.run([harness.binary("mailnet"), "status", "--json", "--dir", net.run_dir], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def logged_faults(net, domain, rule):
    with open(os.path.join(net.domain_dir(domain), "node.log"), encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if f" event=fault rule={rule} " in line)


RCPT_RULE = {"name": "rt-rcpt", "from": "clients", "to": "deathstar.com", "stage": "rcpt", "reply": TROUBLE}


def test_cli_add_acts_within_a_second_counts_right_and_clear_ends_it():
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        assert rcpt_code(net) == 250
        started = time.monotonic()
        out = mailnet(net, "fault", "add", json.dumps(RCPT_RULE))
        assert out.returncode == 0, out.stderr
        assert "rule rt-rcpt added (deathstar.com applies it)" in out.stdout, out.stdout
        took = until_rcpt_code(net, 451, started)
        print(f"fault add: first 451 {took * 1000:.0f} ms after the command began")
        for _ in range(2):
            assert rcpt_code(net) == 451
        # Three faults: in fault list, status --json (per rule and per node), and node.log.
        harness.wait_for(lambda: fault_list(net)["rt-rcpt"]["injected"] == 3, DEADLINE, "3 faults counted")
        listed = fault_list(net)["rt-rcpt"]
        assert listed["source"] == "run time" and listed["rule"]["stage"] == "rcpt", listed
        doc = status(net)
        assert [f["injected"] for f in doc["faults"] if f["name"] == "rt-rcpt"] == [3], doc["faults"]
        assert {n["name"]: n.get("faults") for n in doc["nodes"]} == \
            {"resolver": 0, "jaku.com": 0, "deathstar.com": 3}, doc["nodes"]
        assert logged_faults(net, "deathstar.com", "rt-rcpt") == 3
        table = mailnet(net, "fault", "list")
        assert table.returncode == 0 and "rt-rcpt" in table.stdout and f'reply "{TROUBLE}"' in table.stdout, table

        started = time.monotonic()
        out = mailnet(net, "fault", "clear", "rt-rcpt")
        assert out.returncode == 0 and "cleared rt-rcpt" in out.stdout, (out.stdout, out.stderr)
        took = until_rcpt_code(net, 250, started)
        print(f"fault clear: first 250 {took * 1000:.0f} ms after the command began")
        assert "rt-rcpt" not in fault_list(net)
        assert "no fault rules in force" in mailnet(net, "fault", "list").stdout


def test_http_post_get_delete_through_the_same_control():
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        port = web_port(net.topology)
        change = {"Content-Type": "application/json"}
        started = time.monotonic()
        code, _, body = request(port, "POST", "/api/v1/faults", change, json.dumps(RCPT_RULE))
        assert code == 201, (code, body)
        reply = json.loads(body)
        assert reply["added"] == "rt-rcpt" and reply["applied"] == ["deathstar.com"], reply
        took = until_rcpt_code(net, 451, started)
        print(f"POST /api/v1/faults: first 451 {took * 1000:.0f} ms after the request")
        code, _, body = request(port, "GET", "/api/v1/faults")
        assert code == 200, (code, body)
        (listed,) = json.loads(body)["faults"]
        assert (listed["name"], listed["source"]) == ("rt-rcpt", "run time"), listed
        harness.wait_for(lambda: json.loads(request(port, "GET", "/api/v1/faults")[2])["faults"][0]["injected"] == 1,
                         DEADLINE, "the fault counted")
        # The CLI sees what the API did.
        assert fault_list(net)["rt-rcpt"]["injected"] == 1
        # A bad rule: 400 naming the path; a change must be JSON (403); one rule has no GET.
        bad = dict(RCPT_RULE, name="other", reply="250 fine")
        code, _, body = request(port, "POST", "/api/v1/faults", change, json.dumps(bad))
        assert code == 400 and "fault rule: $.reply: " in json.loads(body)["error"], (code, body)
        code, _, body = request(port, "POST", "/api/v1/faults", {"Content-Type": "text/plain"}, json.dumps(RCPT_RULE))
        assert code == 403, (code, body)
        code, headers, _ = request(port, "GET", "/api/v1/faults/rt-rcpt")
        assert code == 405 and headers["allow"] == "DELETE", (code, headers)

        started = time.monotonic()
        code, _, body = request(port, "DELETE", "/api/v1/faults/rt-rcpt", change)
        assert code == 200 and json.loads(body)["cleared"] == ["rt-rcpt"], (code, body)
        took = until_rcpt_code(net, 250, started)
        print(f"DELETE /api/v1/faults/NAME: first 250 {took * 1000:.0f} ms after the request")
        code, _, body = request(port, "DELETE", "/api/v1/faults/rt-rcpt", change)
        assert code == 404 and "no fault rule named 'rt-rcpt'" in body, (code, body)
        # DELETE /api/v1/faults clears every rule.
        for name in ("a", "b"):
            code, _, body = request(port, "POST", "/api/v1/faults", change, json.dumps(dict(RCPT_RULE, name=name)))
            assert code == 201, (code, body)
        assert rcpt_code(net) == 451
        code, _, body = request(port, "DELETE", "/api/v1/faults", change)
        assert code == 200 and sorted(json.loads(body)["cleared"]) == ["a", "b"], (code, body)
        assert rcpt_code(net) == 250
        assert json.loads(request(port, "GET", "/api/v1/faults")[2])["faults"] == []


def test_bad_rules_are_refused_with_their_path_and_change_nothing():
    topo = harness.two_domain_topology("faultrt")
    topo["faults"] = {"seed": 3, "rules": [{"name": "topo-rcpt", "from": "clients", "to": "deathstar.com",
                                            "stage": "rcpt", "reply": "452 4.3.0 Busy"}]}
    with harness.Network(topo) as net:
        net.start()
        cases = [
            (dict(RCPT_RULE, stage="rcpx"), "fault rule: $.stage: expected dns, connect"),
            (dict(RCPT_RULE, to="nowhere.com"), "fault rule: $.to: expected a domain of this network"),
            (dict(RCPT_RULE, probability=2), "fault rule: $.probability: expected a number from 0 to 1"),
            (dict(RCPT_RULE, speed=1), "fault rule: $.speed: unknown field"),
            (dict(RCPT_RULE, name="topo-rcpt"), "fault rule: $.name: a rule named \"topo-rcpt\" is in force already"),
            ([1, 2], "fault rule: $: expected an object"),
        ]
        for rule, words in cases:
            out = mailnet(net, "fault", "add", json.dumps(rule))
            assert out.returncode == 2 and words in out.stderr, (rule, out.returncode, out.stderr)
        out = mailnet(net, "fault", "add", "{not json")
        assert out.returncode == 2 and "the rule is not JSON" in out.stderr, out.stderr
        out = mailnet(net, "fault", "clear", "nothing-here")
        assert out.returncode == 1 and "no fault rule named 'nothing-here' is in force (rules: topo-rcpt)" in out.stderr, \
            out.stderr
        assert list(fault_list(net)) == ["topo-rcpt"]
        assert rcpt_code(net) == 452  # the topology's rule, nothing else
        # A topology rule can be cleared too.
        out = mailnet(net, "fault", "clear", "topo-rcpt")
        assert out.returncode == 0 and "cleared topo-rcpt" in out.stdout, out.stderr
        assert rcpt_code(net) == 250
        assert logged_faults(net, "deathstar.com", "topo-rcpt") == 1
        assert fault_list(net) == {}


def test_after_and_for_count_from_when_the_rule_was_added():
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        # The node has run longer than the rule's window: counted from the
        # node's start, the rule would never act.
        harness.wait_for(lambda: next(n for n in status(net)["nodes"] if n["name"] == "deathstar.com")["uptime_s"] >= 7,
                         30, "deathstar.com up for 7 s")
        out = mailnet(net, "fault", "add", json.dumps(dict(RCPT_RULE, **{"for": "6s"})))
        assert out.returncode == 0, out.stderr
        assert rcpt_code(net) == 451


def test_a_node_that_is_down_applies_the_rule_when_it_starts_and_the_relay_retries():
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        assert mailnet(net, "stop", "deathstar.com").returncode == 0
        rule = {"name": "from-jaku", "from": "jaku.com", "to": "deathstar.com", "stage": "rcpt", "reply": TROUBLE,
                "first": 2}
        out = mailnet(net, "fault", "add", json.dumps(rule))
        assert out.returncode == 0, out.stderr
        assert "deathstar.com is stopped: it applies the change when it starts" in out.stdout, out.stdout
        assert mailnet(net, "start", "deathstar.com").returncode == 0
        # It read the rule as it started, before it said it was ready.
        with open(os.path.join(net.domain_dir("deathstar.com"), "node.log"), encoding="utf-8") as f:
            events = [line.split(" event=")[1].split(" ")[0] for line in f if " event=" in line]
        last_start = len(events) - 1 - events[::-1].index("ready")
        assert "fault_rules" in events[events.index("stopped"):last_start], events
        # The relay of jaku.com meets the rule twice, retries with its backoff, and delivers.
        sent = subprocess.run([harness.binary("mailnet"), "send", "--dir", net.run_dir, "--from", "rey@jaku.com",
                               "--to", "vader@deathstar.com", "--subject", "through the fault", "--body", "hi"],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        net.wait_messages("deathstar.com", "vader", 1, timeout=30)
        harness.wait_for(lambda: fault_list(net)["from-jaku"]["injected"] == 2, DEADLINE, "2 faults counted")
        assert logged_faults(net, "deathstar.com", "from-jaku") == 2
        assert rcpt_code(net) == 250  # a client is not jaku.com's relay


def test_a_rule_the_node_refuses_is_reported_with_its_words_and_undone():
    """A node that cannot take its new faults.json logs event=fault_rules_error;
    `fault add` (exit 1) and POST /api/v1/faults (409) report its own words,
    escaped, as soon as they come (not a timeout), and the change is undone:
    `fault list` shows what the node does, and the same rule can be added once
    the cause is gone. The cause here: the whole network's topology.json,
    which a node reads at its first change of rules, is broken, with an
    escape sequence in the field it names."""
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        topology = os.path.join(net.run_dir, "topology.json")
        with open(topology, encoding="utf-8") as f:
            good = f.read()
        broken = json.loads(good)
        broken["domains"][0]["name"] = "evil\x1b[31m.com"
        with open(topology, "w", encoding="utf-8") as f:
            json.dump(broken, f)
        out = mailnet(net, "fault", "add", json.dumps(RCPT_RULE))
        print(out.stderr.strip())
        assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
        assert "deathstar.com refused the change: " in out.stderr and "$.domains[0].name" in out.stderr, out.stderr
        assert "\x1b" not in out.stderr and "did not confirm" not in out.stderr, out.stderr
        assert "the change is undone" in out.stderr, out.stderr
        assert fault_list(net) == {}
        assert rcpt_code(net) == 250

        port = web_port(net.topology)
        change = {"Content-Type": "application/json"}
        code, _, body = request(port, "POST", "/api/v1/faults", change, json.dumps(RCPT_RULE))
        error = json.loads(body)["error"]
        assert code == 409 and "deathstar.com refused the change: " in error and "$.domains[0].name" in error, (code, body)

        with open(topology, "w", encoding="utf-8") as f:
            f.write(good)
        out = mailnet(net, "fault", "add", json.dumps(RCPT_RULE))
        assert out.returncode == 0 and "(deathstar.com applies it)" in out.stdout, (out.stdout, out.stderr)
        assert rcpt_code(net) == 451


def test_a_leftover_faults_json_tmp_is_replaced_never_written_through():
    """A faults.json.tmp left by a launcher that died between writing and
    renaming (here a link to a file outside the run folder) is removed: the
    next change is written in a file of the launcher's own, 0600, and the
    link's target is untouched."""
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        outside = os.path.join(net.workdir, "outside.txt")
        with open(outside, "w", encoding="utf-8") as f:
            f.write("keep me\n")
        tmp = os.path.join(net.domain_dir("deathstar.com"), "faults.json.tmp")
        os.symlink(outside, tmp)
        out = mailnet(net, "fault", "add", json.dumps(RCPT_RULE))
        assert out.returncode == 0 and "(deathstar.com applies it)" in out.stdout, (out.stdout, out.stderr)
        with open(outside, encoding="utf-8") as f:
            assert f.read() == "keep me\n"
        assert not os.path.lexists(tmp)
        file = os.path.join(net.domain_dir("deathstar.com"), "faults.json")
        st = os.lstat(file)
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600, oct(st.st_mode)
        with open(file, encoding="utf-8") as f:
            assert [r["name"] for r in json.load(f)["rules"]] == ["rt-rcpt"]


def test_faults_json_is_fsynced_before_its_rename_and_its_folder_after():
    """Seen with strace on the running launcher: fsync of faults.json.tmp,
    its rename to faults.json, then fsync of the node's folder. Skipped
    (said so) where strace is missing or may not attach."""
    if shutil.which("strace") is None:
        print("skipped: no strace on this machine")
        return
    with harness.Network(harness.two_domain_topology("faultrt")) as net:
        net.start()
        folder = os.path.realpath(net.domain_dir("deathstar.com"))  # as strace -y names it
        trace = os.path.join(net.workdir, "launcher.strace")
        tracer = subprocess.Popen(["strace", "-f", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                                   "-o", trace, "-p", str(harness.launcher_pid(net.run_dir))],
                                  stderr=subprocess.PIPE, text=True)
        try:
            said = tracer.stderr.readline()  # "strace: Process N attached ...", or why not (then it exits)
            if "attached" not in said:
                print(f"skipped: strace cannot attach here: {said.strip()}")
                return
            out = mailnet(net, "fault", "add", json.dumps(RCPT_RULE))
            assert out.returncode == 0, out.stderr
        finally:
            if tracer.poll() is None:
                tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            tracer.stderr.close()
        with open(trace, encoding="utf-8", errors="replace") as f:
            calls = [line for line in f if folder in line]

        def first(pred, what):
            found = [i for i, line in enumerate(calls) if pred(line)]
            assert found, (what, calls)
            return found[0]
        synced = first(lambda l: "fsync(" in l and "faults.json.tmp>" in l, "fsync of faults.json.tmp")
        renamed = first(lambda l: "rename" in l and "faults.json.tmp" in l, "the rename")
        folder_synced = first(lambda l: "fsync(" in l and f"{folder}>)" in l, "fsync of the folder")
        assert synced < renamed < folder_synced, calls


def scenario_topology(steps):
    topo = harness.two_domain_topology("faultsteps")
    topo["steps"] = steps
    return topo


def run_scenario(net):
    """`mailnet run` of the network's topology file, in a folder of its own."""
    return subprocess.run([harness.binary("mailnet"), "run", net.topology_file, "--dir", net.run_dir],
                          capture_output=True, text=True, timeout=300, cwd=net.workdir)


CLIENT_RULE = {"name": "step-rule", "from": "clients", "to": "jaku.com", "stage": "rcpt", "reply": TROUBLE}


def test_scenario_steps_add_and_clear_rules_and_expect_their_counts():
    steps = [
        {"fault": CLIENT_RULE},
        {"send": {"from": "rey@jaku.com", "to": "finn@jaku.com", "subject": "refused", "refused": "4.3.0"}},
        {"send": {"from": "rey@jaku.com", "to": "finn@jaku.com", "subject": "refused again", "refused": "4.3.0"}},
        {"expect": {"faults": "step-rule", "count": 2}},
        {"clear_faults": "step-rule"},
        {"send": {"from": "rey@jaku.com", "to": "finn@jaku.com", "subject": "through"}},
        {"expect": {"mailbox": "jaku.com/finn", "subject": "through"}},
        {"fault": dict(CLIENT_RULE, name="second")},
        {"clear_faults": True},
        {"send": {"from": "rey@jaku.com", "to": "finn@jaku.com", "subject": "through again"}},
        {"expect": {"mailbox": "jaku.com/finn", "count": 2}},
    ]
    with harness.Network(scenario_topology(steps)) as net:
        out = run_scenario(net)
        assert out.returncode == 0, out.stdout + out.stderr
        for text in ("add fault rule step-rule (clients → jaku.com) ... pass (applied by jaku.com)",
                     "expect fault rule step-rule injected 2 fault(s) ... pass (found 2)",
                     "clear fault rule step-rule ... pass (cleared step-rule)",
                     "clear every fault rule ... pass (cleared second)", "11 passed, 0 failed"):
            assert text in out.stdout, (text, out.stdout)
    # A count that is not right fails its step.
    steps = [{"fault": CLIENT_RULE},
             {"send": {"from": "rey@jaku.com", "to": "finn@jaku.com", "subject": "refused", "refused": "4.3.0"}},
             {"expect": {"faults": "step-rule", "count": 2, "within": "1s"}}]
    with harness.Network(scenario_topology(steps)) as net:
        out = run_scenario(net)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "FAIL: after 1000 ms: found 1 ($.steps[2])" in out.stdout, out.stdout


def test_scenario_steps_add_and_clear_a_dns_rule():
    dns_rule = {"name": "step-dns", "to": "deathstar.com", "stage": "dns", "answer": "NXDOMAIN"}
    topo = scenario_topology([])
    where = "127.0.0.1:" + str(harness.port_of(topo, "deathstar.com"))
    topo["steps"] = [
        {"expect": {"resolve": "deathstar.com", "answer": where}},
        {"fault": dns_rule},
        {"expect": {"resolve": "deathstar.com", "answer": "NXDOMAIN", "within": "1s"}},
        {"send": {"from": "rey@jaku.com", "to": "vader@deathstar.com", "subject": "to a vanished domain"}},
        {"expect": {"bounce": "jaku.com/rey", "status": "5.1.2"}},
        {"clear_faults": "step-dns"},
        {"expect": {"resolve": "deathstar.com", "answer": where, "within": "1s"}},
    ]
    with harness.Network(topo) as net:
        out = run_scenario(net)
        assert out.returncode == 0, out.stdout + out.stderr
        for text in ("add fault rule step-dns (* → deathstar.com) ... pass (applied by resolver)",
                     "clear fault rule step-dns ... pass (cleared step-dns)", "7 passed, 0 failed"):
            assert text in out.stdout, (text, out.stdout)


def test_scenario_fault_steps_are_checked_with_their_path():
    cases = [
        ({"fault": dict(CLIENT_RULE, stage="rcpx")}, "$.steps[0].fault.stage: expected dns, connect"),
        ({"fault": dict(CLIENT_RULE, to="nowhere.com")}, "$.steps[0].fault.to: expected a domain of this network"),
        ({"fault": "r1"}, "$.steps[0].fault: expected an object"),
        ({"clear_faults": False}, "$.steps[0].clear_faults: expected the name of a rule, or \"*\" or true"),
        ({"clear_faults": ""}, "$.steps[0].clear_faults: expected the name of a rule"),
        ({"expect": {"faults": "r1"}}, "$.steps[0].expect.count: missing (expected how many faults the rule injected)"),
        ({"faults": {}}, "$.steps[0].faults: unknown action (expected send, kill, stop, start, restart, wait, expect, "
                         "fault or clear_faults)"),
    ]
    for step, words in cases:
        with harness.Network(scenario_topology([step])) as net:
            out = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file], capture_output=True,
                                 text=True, timeout=30)
            assert out.returncode == 2, (step, out.stdout, out.stderr)
            assert f"{net.topology_file}: {words}" in out.stderr, (step, words, out.stderr)


if __name__ == "__main__":
    harness.run_tests([
        test_cli_add_acts_within_a_second_counts_right_and_clear_ends_it,
        test_http_post_get_delete_through_the_same_control,
        test_bad_rules_are_refused_with_their_path_and_change_nothing,
        test_after_and_for_count_from_when_the_rule_was_added,
        test_a_node_that_is_down_applies_the_rule_when_it_starts_and_the_relay_retries,
        test_a_rule_the_node_refuses_is_reported_with_its_words_and_undone,
        test_a_leftover_faults_json_tmp_is_replaced_never_written_through,
        test_faults_json_is_fsynced_before_its_rename_and_its_folder_after,
        test_scenario_steps_add_and_clear_rules_and_expect_their_counts,
        test_scenario_steps_add_and_clear_a_dns_rule,
        test_scenario_fault_steps_are_checked_with_their_path,
    ])
