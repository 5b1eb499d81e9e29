"""Issue 5: the queue, retries, flush on restart, and RFC 3464 bounces."""
import email
import email.policy
import json
import os
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(net, *args, check=True):
    out = subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                         timeout=60)
    if check:
        assert out.returncode == 0, f"mailnet {' '.join(args)}: {out.stdout}{out.stderr}"
    return out


def send(topo, sender, rcpts, subject):
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
        s.sendmail(sender, rcpts, f"From: <{sender}>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode())


def reports(messages):
    """(subject, [per-recipient delivery-status fields]) of each DSN among messages."""
    out = []
    for raw in messages:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if msg.get_content_type() != "multipart/report":
            continue
        assert msg.get_param("report-type") == "delivery-status"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                          "text/rfc822-headers"], [p.get_content_type() for p in parts]
        status = parts[1]
        # message/delivery-status: the first block is per-message, the rest per recipient.
        blocks = [dict(b.items()) for b in status.get_payload()]
        assert blocks[0]["Reporting-MTA"].startswith("dns; "), blocks[0]
        original = parts[2].get_content() if hasattr(parts[2], "get_content") else ""
        out.append({"blocks": blocks[1:], "original": str(original), "text": parts[0].get_content()})
    return out


def test_dead_node_queues_and_restart_delivers_within_seconds():
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = {"first": "30s", "max": "1m", "give_up_after": "10m"}  # only a flush can be fast
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "kill", "deathstar.com")
        send(topo, "rey@jaku.com", ["vader@deathstar.com"], "waits")

        def queued():
            out = mailnet(net, "queue", "jaku.com").stdout
            return "vader@deathstar.com" in out and "attempts 1" in out and out
        listing = harness.wait_for(queued, 10, "the message in jaku.com's queue")
        assert "from <rey@jaku.com>" in listing and "last error: 4.4.1" in listing, listing
        assert "1 message waiting" in listing, listing
        status = json.loads(mailnet(net, "status", "--json").stdout)
        jaku = next(n for n in status["nodes"] if n["name"] == "jaku.com")
        assert jaku["queued"] == 1 and jaku["received"] == 1, jaku

        # queue and flush name one node, in any case; an unknown or down one is an error.
        out = mailnet(net, "queue", "nowhere.example", check=False)
        assert out.returncode == 2 and "no domain nowhere.example" in out.stderr, out.stderr
        assert "vader@deathstar.com" in mailnet(net, "queue", "JAKU.COM").stdout
        assert "0 messages waiting" in mailnet(net, "queue", "deathstar.com").stdout
        out = mailnet(net, "flush", "deathstar.com", check=False)
        assert out.returncode != 0 and "deathstar.com is" in out.stderr, out.stdout + out.stderr
        out = mailnet(net, "flush", "resolver", check=False)
        assert out.returncode != 0 and "holds no mail" in out.stderr, out.stdout + out.stderr
        mailnet(net, "flush", "Jaku.com.")  # retried now, not in 30 s
        harness.wait_for(lambda: "attempts 2" in mailnet(net, "queue", "jaku.com").stdout, 5, "a second attempt")

        mailnet(net, "start", "deathstar.com")
        msgs = net.wait_messages("deathstar.com", "vader", 1, timeout=5)
        assert b"Subject: waits" in msgs[0]
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue").stdout, 5, "the queue to drain")
        # status counts the queue again once its folder changed (the launcher
        # keeps its count of a folder that did not: supervisor::queued).
        status = json.loads(mailnet(net, "status", "--json").stdout)
        jaku = next(n for n in status["nodes"] if n["name"] == "jaku.com")
        assert jaku["queued"] == 0, jaku


def test_bounces_for_unknown_domain_and_unknown_remote_user():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        send(topo, "rey@jaku.com", ["luke@genshinimpact.com", "nobody@deathstar.com", "vader@deathstar.com"],
             "mixed")
        msgs = net.wait_messages("jaku.com", "rey", 1)
        found = reports(msgs)
        assert len(found) == 1, msgs
        by_rcpt = {b["Final-Recipient"]: b for b in found[0]["blocks"]}
        assert set(by_rcpt) == {"rfc822; luke@genshinimpact.com", "rfc822; nobody@deathstar.com"}, by_rcpt
        luke = by_rcpt["rfc822; luke@genshinimpact.com"]
        assert luke["Action"] == "failed" and luke["Status"] == "5.1.2", luke
        nobody = by_rcpt["rfc822; nobody@deathstar.com"]
        assert nobody["Action"] == "failed" and nobody["Status"] == "5.1.1", nobody
        assert nobody["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), nobody
        assert "Subject: mixed" in found[0]["original"], found[0]["original"]
        assert "genshinimpact.com" in found[0]["text"]
        # The good recipient still got it.
        assert b"Subject: mixed" in net.wait_messages("deathstar.com", "vader", 1)[0]

        def bounced():
            status = json.loads(mailnet(net, "status", "--json").stdout)
            jaku = next(n for n in status["nodes"] if n["name"] == "jaku.com")
            return jaku["bounced"] == 2 and jaku
        harness.wait_for(bounced, 5, "status to count both bounced recipients")
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue").stdout, 5, "the queue to drain")


def test_expiry_bounces_with_5_4_7():
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = {"first": "100ms", "max": "200ms", "give_up_after": "1s"}
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "kill", "deathstar.com")
        send(topo, "finn@jaku.com", ["tarkin@deathstar.com"], "expires")
        msgs = net.wait_messages("jaku.com", "finn", 1, timeout=10)
        found = reports(msgs)
        assert len(found) == 1
        block = found[0]["blocks"][0]
        assert block["Final-Recipient"] == "rfc822; tarkin@deathstar.com" and block["Status"] == "5.4.7", block
        assert "expired" in found[0]["text"]
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue").stdout, 5, "the queue to drain")


def test_long_recipient_lists_are_relayed_in_batches():
    topo = harness.two_domain_topology()
    topo["domains"][0]["limits"] = {"recipients": 300}
    topo["domains"][1]["limits"] = {"recipients": 100}  # the RFC minimum: the relay must split
    topo["domains"][1]["policy"] = {"require_known_users": False}
    rcpts = [f"trooper{i:03d}@deathstar.com" for i in range(150)]
    with harness.Network(topo) as net:
        net.start()
        send(topo, "rey@jaku.com", rcpts, "roll call")
        for i in (0, 99, 100, 149):
            net.wait_messages("deathstar.com", f"trooper{i:03d}", 1)
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue").stdout, 10, "the queue to drain")
        assert net.messages("jaku.com", "rey") == [], "nothing should bounce"


def write_queue_file(folder, qid, sender, rcpts, message):
    head = json.dumps({"id": qid, "from": sender, "created_ms": 1, "attempts": 0, "next_try_ms": 0,
                       "last_error": "", "size": len(message),
                       "rcpts": [{"address": a, "domain": a.split("@")[1], "mailbox": "", "state": "pending",
                                  "last_error": ""} for a in rcpts]}).encode()
    with open(os.path.join(folder, qid + ".msg"), "wb") as f:
        f.write(b"MAILNET-QUEUE 1 %d\n" % len(head) + head + message)


def test_recovery_null_sender_and_corrupt_queue_files():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "stop", "jaku.com")
        queue = os.path.join(net.domain_dir("jaku.com"), "queue")
        # Left by a crash: a message that survived, a bounce that cannot be
        # delivered, a torn file, and a temporary file that never got its 250.
        write_queue_file(queue, "SURVIVOR1", "rey@jaku.com", ["vader@deathstar.com"], b"Subject: survived\r\n\r\nx\r\n")
        write_queue_file(queue, "NULLSENDER1", "", ["luke@genshinimpact.com"], b"Subject: a bounce\r\n\r\nx\r\n")
        with open(os.path.join(queue, "TORN1.msg"), "wb") as f:
            f.write(b"MAILNET-QUEUE 1 500\n{\"id\":")
        with open(os.path.join(queue, "tmp", "HALF1.new"), "wb") as f:
            f.write(b"half written")
        rey_tmp = os.path.join(net.domain_dir("jaku.com"), "mail", "rey", "tmp")
        with open(os.path.join(rey_tmp, "1.M1P1Q1.mailnet"), "wb") as f:
            f.write(b"a copy that never got its 250")
        mailnet(net, "start", "jaku.com")

        assert b"Subject: survived" in net.wait_messages("deathstar.com", "vader", 1)[0]
        harness.wait_for(lambda: os.path.exists(os.path.join(queue, "corrupt", "TORN1.msg")), 5,
                         "the torn file to be moved aside")
        assert os.listdir(os.path.join(queue, "tmp")) == [] and os.listdir(rey_tmp) == []
        log_path = os.path.join(net.domain_dir("jaku.com"), "node.log")
        harness.wait_for(lambda: "id=NULLSENDER1 event=bounce_dropped" in open(log_path).read(), 5,
                         "the null-sender failure to be dropped")
        log = open(log_path).read()
        assert "id=TORN1 event=corrupt_queue_file" in log, log
        harness.wait_for(lambda: sorted(f for f in os.listdir(queue) if f.endswith(".msg")) == [], 5,
                         "the queue to drain")
        for user in ("rey", "finn", "obiwan"):
            assert net.messages("jaku.com", user) == [], f"a bounce of a bounce reached {user}"


def test_relay_keeps_its_connection_between_messages():
    # One connection to deathstar.com carries message after message; after
    # deathstar.com restarts, the dead kept connection is noticed and the next
    # message goes out on a fresh one at once, not after a retry.
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = {"first": "30s", "max": "1m", "give_up_after": "10m"}  # a retry would show
    with harness.Network(topo) as net:
        net.start()
        smtp_log = os.path.join(net.domain_dir("deathstar.com"), "smtp.log")

        def log_count(text):
            with open(smtp_log) as f:
                return f.read().count(text)

        for n in range(3):
            send(topo, "rey@jaku.com", ["vader@deathstar.com"], f"kept {n}")
            net.wait_messages("deathstar.com", "vader", n + 1)
        assert log_count("C: MAIL FROM:<rey@jaku.com>") == 3
        assert log_count(" connect from ") == 1, open(smtp_log).read()

        mailnet(net, "restart", "deathstar.com")
        send(topo, "rey@jaku.com", ["vader@deathstar.com"], "after restart")
        net.wait_messages("deathstar.com", "vader", 4, timeout=10)
        with open(os.path.join(net.domain_dir("jaku.com"), "node.log")) as f:
            jaku_log = f.read()
        assert "event=deferred" not in jaku_log, jaku_log
        assert log_count(" connect from ") == 2


def test_sync_by_files_delivers_local_and_relayed_mail():
    # policy.sync "files": fsync per file and folder instead of one syncfs.
    topo = harness.two_domain_topology()
    topo["defaults"]["policy"] = {"sync": "files"}
    with harness.Network(topo) as net:
        net.start()
        for n in range(3):
            send(topo, "rey@jaku.com", ["finn@jaku.com", "vader@deathstar.com"], f"synced {n}")
        net.wait_messages("jaku.com", "finn", 3)
        net.wait_messages("deathstar.com", "vader", 3)
        with open(os.path.join(net.run_dir, "topology.json")) as f:
            assert json.load(f)["domains"][0]["policy"]["sync"] == "files"


def fake_peer(port, drop_second_mail=True, data_reply="354 go on", end_reply="250 stored"):
    """A minimal SMTP server on a given port standing in for deathstar.com: it
    records each message, and answers the second MAIL on a connection with
    421 and closes, as a server whose idle timeout has just fired."""
    def mail(line, session):
        return "421 4.4.2 fake: idle timeout" if drop_second_mail and session["mails"] == 2 else None
    return harness.FakeSmtpPeer(port, replies={"MAIL": mail, "DATA": data_reply, "DOT": end_reply})


def test_a_kept_connection_that_meets_421_is_replaced_at_once():
    topo = harness.relay_in_plain_text(harness.two_domain_topology())
    topo["defaults"]["retry"] = {"first": "30s", "max": "1m", "give_up_after": "10m"}  # a retry would show
    with harness.Network(topo) as net:
        net.start()
        mailnet(net, "stop", "deathstar.com")  # the resolver still points at its port
        peer = fake_peer(harness.port_of(topo, "deathstar.com"))
        try:
            send(topo, "rey@jaku.com", ["vader@deathstar.com"], "first")
            harness.wait_for(lambda: len(peer.messages) == 1, 10, "the first message at the fake peer")
            send(topo, "rey@jaku.com", ["vader@deathstar.com"], "second")
            harness.wait_for(lambda: len(peer.messages) == 2, 10, "the second message at the fake peer")
            assert peer.connections == 2  # the kept one, refused with 421, then a fresh one
            assert b"Subject: second" in peer.messages[1]
            with open(os.path.join(net.domain_dir("jaku.com"), "node.log")) as f:
                log = f.read()
            assert "event=deferred" not in log, log
        finally:
            peer.close()


def test_other_5xx_from_the_peer_bounce_at_once_with_its_reply():
    """A 5xx to the DATA command, or to the end of the data, fails the
    recipients the peer had taken: one DSN each, with the peer's status and
    reply, not a retry until expiry."""
    for data_reply, end_reply, status in (("554 5.7.1 fake: no data from you", "250 stored", "5.7.1"),
                                          ("354 go on", "552 5.3.4 fake: message too big", "5.3.4")):
        topo = harness.relay_in_plain_text(harness.two_domain_topology())
        topo["defaults"]["retry"] = {"first": "30s", "max": "1m", "give_up_after": "10m"}  # a retry would show
        with harness.Network(topo) as net:
            net.start()
            mailnet(net, "stop", "deathstar.com")
            peer = fake_peer(harness.port_of(topo, "deathstar.com"), drop_second_mail=False,
                            data_reply=data_reply, end_reply=end_reply)
            try:
                send(topo, "finn@jaku.com", ["vader@deathstar.com"], "refused " + status)
                found = reports(net.wait_messages("jaku.com", "finn", 1, timeout=10))
                assert len(found) == 1, found
                block = found[0]["blocks"][0]
                assert block["Final-Recipient"] == "rfc822; vader@deathstar.com", block
                assert block["Action"] == "failed" and block["Status"] == status, block
                code = (data_reply if status == "5.7.1" else end_reply).split(" ")[0]
                assert block["Diagnostic-Code"].startswith(f"smtp; {code} {status}"), block
                assert f"Subject: refused {status}" in found[0]["original"]
                harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue").stdout, 5, "the queue to drain")
            finally:
                peer.close()


if __name__ == "__main__":
    harness.run_tests([test_dead_node_queues_and_restart_delivers_within_seconds,
                       test_bounces_for_unknown_domain_and_unknown_remote_user, test_expiry_bounces_with_5_4_7,
                       test_long_recipient_lists_are_relayed_in_batches,
                       test_recovery_null_sender_and_corrupt_queue_files,
                       test_relay_keeps_its_connection_between_messages,
                       test_sync_by_files_delivers_local_and_relayed_mail,
                       test_a_kept_connection_that_meets_421_is_replaced_at_once,
                       test_other_5xx_from_the_peer_bounce_at_once_with_its_reply])
