"""Faults on purpose (the topology's "faults"): real networks whose deathstar.com
node answers 451, closes, waits or hangs where a rule says, for clients or for
the jaku.com node; the same seed gives the same faults run after run; and
`mailnet validate` names the JSON path of every mistake in a rule."""
import copy
import os
import re
import shlex
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

TROUBLE = "451 4.3.0 Simulated trouble"


def topology(rules, seed=42, **domain_extra):
    topo = harness.two_domain_topology("faults", **domain_extra)
    topo["faults"] = {"rules": rules}
    if seed is not None:
        topo["faults"]["seed"] = seed
    return topo


def rule(**fields):
    return {"name": "r1", "to": "deathstar.com", **fields}


def events(net, domain, kind):
    """The key=value fields of each `event=KIND` line of the domain's node.log."""
    path = os.path.join(net.domain_dir(domain), "node.log")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = dict(w.split("=", 1) for w in shlex.split(line.split(" ", 1)[1]) if "=" in w)
            if fields.get("event") == kind:
                out.append(fields)
    return out


def wait_fault_events(net, count, timeout=15):
    return harness.wait_for(lambda: len(events(net, "deathstar.com", "fault")) >= count and
                            events(net, "deathstar.com", "fault"), timeout, f"{count} event=fault in node.log")


def transcript(net, domain="deathstar.com"):
    with open(os.path.join(net.domain_dir(domain), "smtp.log"), encoding="utf-8", errors="replace") as f:
        return f.read()


def client(net, timeout=30):
    return smtplib.SMTP("127.0.0.1", harness.port_of(net.topology, "deathstar.com"), timeout=timeout)


def message(subject):
    return f"From: rey@jaku.com\r\nTo: vader@deathstar.com\r\nSubject: {subject}\r\n\r\nbody\r\n"


def subjects(net):
    return [re.search(rb"Subject: (.*)", m).group(1).decode() for m in net.messages("deathstar.com", "vader")]


def test_a_reply_at_each_command_stage_replaces_the_real_one_and_is_logged():
    for stage in ("ehlo", "mail", "rcpt", "data", "end_of_data", "quit"):
        with harness.Network(topology([rule(name=f"trouble-{stage}", **{"from": "clients"}, stage=stage,
                                            reply=TROUBLE, first=1)])) as net:
            net.start()
            s = client(net)
            try:
                seen = None
                code, _ = s.ehlo()
                if stage == "ehlo":
                    seen = code
                    code, _ = s.ehlo()  # first: 1, so the next EHLO is answered for real
                assert code == 250, (stage, code)
                if stage in ("mail", "rcpt", "data", "end_of_data"):
                    code, _ = s.mail("rey@jaku.com")
                    if stage == "mail":
                        seen = code
                        code, _ = s.mail("rey@jaku.com")
                    assert code == 250, (stage, code)
                    code, _ = s.rcpt("vader@deathstar.com")
                    if stage == "rcpt":
                        seen = code
                        code, _ = s.rcpt("vader@deathstar.com")
                    assert code == 250, (stage, code)
                    try:
                        code, text = s.data(message(f"faulted at {stage}"))  # the reply after the body
                        if stage == "end_of_data":
                            seen = code
                            assert text.decode() == TROUBLE[4:], text
                        else:
                            assert code == 250 and stage != "data", (stage, code)
                    except smtplib.SMTPDataError as e:  # DATA itself refused
                        seen = e.smtp_code
                        assert stage == "data" and e.smtp_error.decode() == TROUBLE[4:], (stage, e)
                    # The session goes on: a fault reply ends the transaction, not the session.
                    s.rset()
                    s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message("the next one"))
                if stage == "quit":
                    seen, _ = s.docmd("QUIT")
            finally:
                s.close()
            assert seen == 451, f"{stage}: the client saw {seen}"
            (ev,) = wait_fault_events(net, 1)
            assert (ev["rule"], ev["stage"], ev["action"], ev["reply"]) == (f"trouble-{stage}", stage, "reply", TROUBLE), ev
            marked = re.compile(rf"fault rule=trouble-{stage} stage={stage} action=reply reply=\"{TROUBLE}\"\n"
                                rf"\S+ \S+ S: {TROUBLE}\n")
            harness.wait_for(lambda: marked.search(transcript(net)), 15, "the fault's reply marked in smtp.log")
            if stage in ("mail", "rcpt", "data", "end_of_data"):
                # A fault reply to DATA or at the end of data stores nothing;
                # after one to MAIL or RCPT the command came again and was taken.
                stored = ["the next one"] if "data" in stage else [f"faulted at {stage}", "the next one"]
                net.wait_messages("deathstar.com", "vader", len(stored))
                assert sorted(subjects(net)) == sorted(stored), (stage, subjects(net))


def test_connect_reply_disconnect_and_delay():
    with harness.Network(topology([rule(stage="connect", reply="554 5.3.2 Not now", first=1),
                                   rule(name="r2", stage="greeting", action="disconnect", first=1)])) as net:
        net.start()
        try:
            client(net)
            raise AssertionError("the connect fault did not refuse the session")
        except smtplib.SMTPConnectError as e:
            assert (e.smtp_code, e.smtp_error) == (554, b"5.3.2 Not now"), e
        # The connect rule has fired its first: 1; the greeting rule closes the second session.
        try:
            client(net)
            raise AssertionError("the greeting fault did not close the session")
        except smtplib.SMTPServerDisconnected:
            pass
        s = client(net)
        s.quit()
        evs = wait_fault_events(net, 2)
        assert [(e["rule"], e["stage"], e["action"]) for e in evs] == [
            ("r1", "connect", "reply"), ("r2", "greeting", "disconnect")], evs
    with harness.Network(topology([rule(stage="greeting", action="delay", delay="600ms", jitter="100ms")])) as net:
        net.start()
        started = time.monotonic()
        client(net).quit()
        took = time.monotonic() - started
        assert took >= 0.5, f"the greeting came after {took:.3f}s"
        (ev,) = wait_fault_events(net, 1)
        assert 500 <= int(ev["delay"].removesuffix("ms")) <= 700, ev


def test_disconnect_at_rcpt_and_in_the_body_stores_nothing():
    for stage in ("rcpt", "data", "end_of_data"):
        with harness.Network(topology([rule(stage=stage, action="disconnect", first=1)])) as net:
            net.start()
            s = client(net)
            try:
                s.ehlo()
                s.mail("rey@jaku.com")
                if stage == "rcpt":
                    s.rcpt("vader@deathstar.com")
                else:
                    s.rcpt("vader@deathstar.com")
                    s.data(message("cut"))
                raise AssertionError(f"{stage}: the session was not closed")
            except smtplib.SMTPServerDisconnected:
                pass
            finally:
                s.close()
            client(net).sendmail("rey@jaku.com", ["vader@deathstar.com"], message("whole"))
            net.wait_messages("deathstar.com", "vader", 1)
            (ev,) = wait_fault_events(net, 1)
            assert (ev["stage"], ev["action"]) == (stage, "disconnect"), ev
            assert subjects(net) == ["whole"], (stage, subjects(net))


def test_alter_stores_the_message_with_a_footer_added_to_its_body():
    with harness.Network(topology([rule(stage="end_of_data", action="alter", first=1)])) as net:
        net.start()
        for subject in ("altered", "untouched"):
            s = client(net)
            try:
                s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message(subject))
            finally:
                s.quit()
        raw = {re.search(rb"Subject: (.*)", m).group(1).decode(): m
               for m in net.wait_messages("deathstar.com", "vader", 2)}
        # Stored with LF line ends, as a Maildir holds mail.
        body = raw["altered"].split(b"\n\n", 1)[1]
        assert body == b"body\n-- \nThis line was added in transit by deathstar.com (fault rule r1).\n", body
        assert raw["untouched"].split(b"\n\n", 1)[1] == b"body\n", raw["untouched"]
        (ev,) = wait_fault_events(net, 1)
        assert (ev["stage"], ev["action"], ev["rule"]) == ("end_of_data", "alter", "r1"), ev
        assert "fault rule=r1 stage=end_of_data action=alter" in transcript(net)


def test_stage_any_acts_at_every_point_and_from_clients_after_ehlo_only():
    with harness.Network(topology([rule(stage="any", reply=TROUBLE, first=1)])) as net:
        net.start()
        try:
            client(net)
            raise AssertionError("the greeting was not the fault's")
        except smtplib.SMTPConnectError as e:
            assert e.smtp_code == 451
        s = client(net)
        s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message("fine"))
        s.quit()
        assert wait_fault_events(net, 1)[0]["stage"] == "greeting"
    # The sender is known from EHLO on: a rule for clients begins there.
    with harness.Network(topology([rule(stage="any", reply=TROUBLE, every=2, **{"from": "clients"})])) as net:
        net.start()
        s = client(net)
        assert s.ehlo()[0] == 250    # 1st: greeting skipped, EHLO is the first time
        assert s.mail("rey@jaku.com")[0] == 451  # 2nd
        assert s.mail("rey@jaku.com")[0] == 250  # 3rd
        assert s.rcpt("vader@deathstar.com")[0] == 451  # 4th
        s.close()
        assert [e["stage"] for e in wait_fault_events(net, 2)] == ["mail", "rcpt"]


def test_delay_before_a_reply_is_at_least_the_delay():
    with harness.Network(topology([rule(stage="rcpt", action="delay", delay="500ms")])) as net:
        net.start()
        s = client(net)
        s.ehlo()
        s.mail("rey@jaku.com")
        started = time.monotonic()
        code, _ = s.rcpt("vader@deathstar.com")
        took = time.monotonic() - started
        s.quit()
        assert code == 250 and took >= 0.5, (code, took)
        assert wait_fault_events(net, 1)[0]["delay"] == "500ms"


def test_hang_never_answers_and_the_node_timeout_ends_it():
    with harness.Network(topology([rule(stage="mail", action="hang")], timeouts={"idle": "1s"})) as net:
        net.start()
        s = client(net, timeout=60)
        s.ehlo()
        started = time.monotonic()
        try:
            s.mail("rey@jaku.com")
            raise AssertionError("MAIL was answered")
        except smtplib.SMTPServerDisconnected:
            pass  # no reply: the node's idle timeout (1 s) closed the session, not the client's 60 s
        finally:
            s.close()
        assert time.monotonic() - started >= 0.9
        assert wait_fault_events(net, 1)[0]["action"] == "hang"
        log = harness.wait_for(lambda: "hang ended" in transcript(net) and transcript(net), 15, "hang ended in smtp.log")
        assert "FROM:<rey@jaku.com>" in log, log
        after_mail = log.split("FROM:<rey@jaku.com>", 1)[1]
        assert " S: " not in after_mail, after_mail
    with harness.Network(topology([rule(stage="end_of_data", action="hang", first=1)],
                                  timeouts={"idle": "1s"})) as net:
        net.start()
        s = client(net, timeout=60)
        try:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"], message("hung"))
            raise AssertionError("the end of data was answered")
        except smtplib.SMTPServerDisconnected:
            pass
        finally:
            s.close()
        client(net).sendmail("rey@jaku.com", ["vader@deathstar.com"], message("after"))
        net.wait_messages("deathstar.com", "vader", 1)
        assert subjects(net) == ["after"], subjects(net)


def faulted_senders(rules, count, seed=42, topology_seed=True):
    """Sends count messages, one session each, sender{i}@jaku.com; the senders
    whose RCPT got the fault reply, as the client saw them and as node.log
    says, and the seed node.log names."""
    with harness.Network(topology(rules, seed=seed if topology_seed else None)) as net:
        net.start()
        refused = []
        for i in range(count):
            s = client(net)
            try:
                s.ehlo()
                s.mail(f"sender{i}@jaku.com")
                code, _ = s.rcpt("vader@deathstar.com")
                if code == 451:
                    refused.append(f"sender{i}@jaku.com")
                s.rset()
                s.quit()
            finally:
                s.close()
        logged = [e["mail_from"] for e in wait_fault_events(net, len(refused))] if refused else []
        assert logged == refused, (logged, refused)
        (faults,) = events(net, "deathstar.com", "faults")
        return refused, int(faults["seed"])


def test_every_and_first_pick_the_nth_times():
    every, _ = faulted_senders([rule(stage="rcpt", reply=TROUBLE, every=3)], 9)
    assert every == ["sender2@jaku.com", "sender5@jaku.com", "sender8@jaku.com"], every
    first, _ = faulted_senders([rule(stage="rcpt", reply=TROUBLE, first=2)], 5)
    assert first == ["sender0@jaku.com", "sender1@jaku.com"], first
    # A window that opens in an hour: nothing yet; one open for an hour: everything.
    later, _ = faulted_senders([rule(stage="rcpt", reply=TROUBLE, after="1h")], 3)
    assert later == [], later
    now, _ = faulted_senders([rule(stage="rcpt", reply=TROUBLE, **{"for": "1h"})], 3)
    assert len(now) == 3, now


def test_the_same_seed_gives_the_same_faults():
    rules = [rule(name="coin", stage="rcpt", reply=TROUBLE, probability=0.5)]
    first, seed = faulted_senders(rules, 40, seed=42)
    again, _ = faulted_senders(rules, 40, seed=42)
    other, _ = faulted_senders(rules, 40, seed=43)
    assert seed == 42
    assert first == again, (first, again)
    assert 5 <= len(first) <= 35, first  # 0.5 of 40: far from none and all
    assert other != first, (other, first)  # equal lists by chance: 1 in 2^40
    # Without a seed, the node picks one and logs it; that seed replays the run.
    unseeded, picked = faulted_senders(rules, 40, topology_seed=False)
    replayed, _ = faulted_senders(rules, 40, seed=picked)
    assert unseeded == replayed, (picked, unseeded, replayed)


def test_a_rule_from_a_node_hits_its_relay_and_clients_rules_hit_clients_only():
    rules = [rule(name="jaku-rcpt", **{"from": "jaku.com"}, stage="rcpt", reply=TROUBLE, first=1),
             rule(name="clients-mail", **{"from": "clients"}, stage="mail", reply=TROUBLE)]
    with harness.Network(topology(rules)) as net:
        net.start()
        # A client of deathstar.com meets the clients rule.
        s = client(net)
        code, text = s.ehlo()
        assert code == 250
        code, text = s.mail("rey@jaku.com")
        assert (code, text.decode()) == (451, TROUBLE[4:]), (code, text)
        s.quit()
        # So do swaks and `mailnet send` (which names the sender's domain in
        # EHLO: the node's own name, so a client, not a node).
        port = harness.port_of(net.topology, "deathstar.com")
        swaks = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "rey@jaku.com",
                                "--to", "vader@deathstar.com"], capture_output=True, text=True, timeout=60)
        assert swaks.returncode != 0 and f"<** {TROUBLE}" in swaks.stdout, swaks.stdout + swaks.stderr
        send = subprocess.run([harness.binary("mailnet"), "send", "--dir", net.run_dir, "--from", "vader@deathstar.com",
                               "--to", "tarkin@deathstar.com", "--subject", "hi", "--body", "hi"], capture_output=True, text=True,
                              timeout=60)
        assert send.returncode == 1 and TROUBLE in send.stderr, send.stdout + send.stderr
        # The jaku.com node's relay meets the jaku.com rule once, retries the
        # 451 like any trouble, and delivers; the clients rule leaves it alone.
        with smtplib.SMTP("127.0.0.1", harness.port_of(net.topology, "jaku.com"), timeout=30) as j:
            j.sendmail("rey@jaku.com", ["vader@deathstar.com"], message("relayed"))
        net.wait_messages("deathstar.com", "vader", 1, timeout=30)
        evs = wait_fault_events(net, 4)
        assert [e["rule"] for e in evs] == ["clients-mail"] * 3 + ["jaku-rcpt"], evs
        assert evs[2]["from"] == "deathstar.com" and evs[3]["from"] == "jaku.com", evs
        jaku_log = open(os.path.join(net.domain_dir("jaku.com"), "node.log"), encoding="utf-8").read()
        assert TROUBLE in jaku_log, jaku_log
        assert subjects(net) == ["relayed"]


def test_rate_limit_lets_n_messages_through_per_interval_then_replies_at_mail():
    slow = "451 4.7.0 Slow down"
    with harness.Network(topology([{"name": "throttle", "to": "deathstar.com", "from": "clients",
                                    "action": "rate_limit", "messages": 2, "per": "1h", "reply": slow}])) as net:
        net.start()
        seen = []
        for i in range(4):
            s = client(net)
            try:
                s.ehlo()
                seen.append(s.mail(f"sender{i}@jaku.com")[0])
                s.rset()
                s.quit()
            finally:
                s.close()
        assert seen == [250, 250, 451, 451], seen
        evs = wait_fault_events(net, 2)
        assert [(e["rule"], e["stage"], e["action"], e["reply"], e["mail_from"]) for e in evs] == [
            ("throttle", "mail", "rate_limit", slow, ""), ("throttle", "mail", "rate_limit", slow, "")], evs
        assert [e["command"].upper() for e in evs] == ["MAIL FROM:<SENDER2@JAKU.COM>", "MAIL FROM:<SENDER3@JAKU.COM>"], evs
    # A short interval: once it has passed since the first message let
    # through, the limit lets the next one through.
    with harness.Network(topology([{"name": "throttle", "to": "deathstar.com", "action": "rate_limit",
                                    "messages": 1, "per": "700ms", "reply": slow}])) as net:
        net.start()
        s = client(net)
        try:
            s.ehlo()
            started = time.monotonic()
            assert s.mail("rey@jaku.com")[0] == 250
            s.rset()
            codes = []
            deadline = started + 30
            while time.monotonic() < deadline:
                codes.append(s.mail("rey@jaku.com")[0])
                s.rset()
                if codes[-1] == 250:
                    break
                time.sleep(0.05)  # a polling interval, bounded by the deadline
            took = time.monotonic() - started
            s.quit()
        finally:
            s.close()
        assert codes[0] == 451 and codes[-1] == 250 and set(codes[:-1]) == {451}, codes
        assert took >= 0.7, f"let through again after {took:.3f}s"


def test_bandwidth_paces_the_connection_from_its_start():
    body = "x" * 76 + "\r\n"
    text = message("slow") + body * 100  # some 8 kB: 4 s at 2000 bytes per second
    with harness.Network(topology([rule(action="bandwidth", bytes_per_second=2000, first=1)])) as net:
        net.start()
        started = time.monotonic()
        s = client(net, timeout=120)
        try:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com"], text)
            s.quit()
        finally:
            s.close()
        took = time.monotonic() - started
        assert took >= len(text) / 2000, f"{len(text)} bytes at 2000 B/s took {took:.3f}s"
        (ev,) = wait_fault_events(net, 1)
        assert (ev["rule"], ev["stage"], ev["action"], ev["bytes_per_second"]) == ("r1", "connect", "bandwidth", "2000")
        harness.wait_for(lambda: "fault rule=r1 stage=connect action=bandwidth bytes_per_second=2000" in transcript(net),
                         15, "the bandwidth fault in smtp.log")
        # first: 1, so the next session is not paced (its speed is not measured here).
        client(net).sendmail("rey@jaku.com", ["vader@deathstar.com"], message("fast"))
        net.wait_messages("deathstar.com", "vader", 2)
        assert len(events(net, "deathstar.com", "fault")) == 1


def test_validate_names_the_path_of_each_mistake():
    good = topology([rule(stage="rcpt", reply=TROUBLE, probability=0.5),
                     rule(name="r2", stage="data", action="disconnect", every=3),
                     rule(name="r3", stage="connect", action="delay", delay="200ms", jitter="50ms")])
    cases = [
        ("rules[0].probability", "expected a number from 0 to 1", lambda r: r[0].update(probability=1.5)),
        ("rules[0].probability", "expected a number from 0 to 1", lambda r: r[0].update(probability="half")),
        ("rules[0].stage", "expected dns, connect", lambda r: r[0].update(stage="helo")),
        ("rules[0].to", "expected a domain of this network", lambda r: r[0].update(to="nowhere.com")),
        ("rules[0].from", "\"clients\"", lambda r: r[0].update({"from": "nowhere.com"})),
        ("rules[0].reply", "a code from 400 to 599", lambda r: r[0].update(reply="250 fine")),
        ("rules[0].every", "whole number from 1", lambda r: r[0].update(every=0)),
        ("rules[0].speed", "unknown field", lambda r: r[0].update(speed=1)),
        ("rules[1].name", "duplicate rule name", lambda r: r[1].update(name="r1")),
        ("rules[1].delay", "only a delay rule", lambda r: r[1].update(delay="1s")),
        ("rules[2].jitter", "must not be longer than delay", lambda r: r[2].update(jitter="1s")),
        ("rules[2].from", "before EHLO", lambda r: r[2].update({"from": "jaku.com"})),
        ("rules[2].stage", "a bandwidth rule acts on the whole connection: it has no stage",
         lambda r: r[2].update(action="bandwidth", bytes_per_second=1000, delay=None, jitter=None)),
        ("rules[2].stage", "a rate_limit rule acts at MAIL",
         lambda r: r[2].update(action="rate_limit", messages=10, per="1m", reply="421 4.7.0 Slow down",
                               delay=None, jitter=None)),
        ("rules[2].from", "a bandwidth rule acts from the connection on",
         lambda r: r[2].update({"stage": None, "action": "bandwidth", "bytes_per_second": 1000, "delay": None,
                                "jitter": None, "from": "jaku.com"})),
        ("rules[2].messages", "whole number from 1",
         lambda r: r[2].update(stage=None, action="rate_limit", messages=0, per="1m", reply="421 4.7.0 Slow down",
                               delay=None, jitter=None)),
    ]
    with harness.Network(good) as net:
        check = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    for path, words, change in cases:
        topo = copy.deepcopy(good)
        change(topo["faults"]["rules"])
        for r in topo["faults"]["rules"]:
            for key in [k for k, v in r.items() if v is None]:
                del r[key]
        with harness.Network(topo) as net:
            check = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file],
                                   capture_output=True, text=True, timeout=30)
            assert check.returncode == 2, (path, check.stdout, check.stderr)
            assert f"{net.topology_file}: $.faults.{path}: " in check.stderr, (path, check.stderr)
            assert words in check.stderr, (path, words, check.stderr)


if __name__ == "__main__":
    harness.run_tests([
        test_a_reply_at_each_command_stage_replaces_the_real_one_and_is_logged,
        test_connect_reply_disconnect_and_delay,
        test_disconnect_at_rcpt_and_in_the_body_stores_nothing,
        test_alter_stores_the_message_with_a_footer_added_to_its_body,
        test_stage_any_acts_at_every_point_and_from_clients_after_ehlo_only,
        test_delay_before_a_reply_is_at_least_the_delay,
        test_hang_never_answers_and_the_node_timeout_ends_it,
        test_every_and_first_pick_the_nth_times,
        test_the_same_seed_gives_the_same_faults,
        test_a_rule_from_a_node_hits_its_relay_and_clients_rules_hit_clients_only,
        test_rate_limit_lets_n_messages_through_per_interval_then_replies_at_mail,
        test_bandwidth_paces_the_connection_from_its_start,
        test_validate_names_the_path_of_each_mistake,
    ])
