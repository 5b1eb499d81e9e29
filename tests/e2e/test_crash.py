"""Issue 5, item 6: SIGKILL the sending node, the receiving node and the
resolver at random moments under a bounded stream of mail. Every message that
got a 250 must end in its recipients' Maildirs or bounce to its sender.

Bounded: at most MESSAGES messages and SECONDS of sending (env overrides).
"""
import json
import os
import random
import re
import smtplib
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

MESSAGES = int(os.environ.get("MAILNET_CRASH_MESSAGES", "300"))
SECONDS = float(os.environ.get("MAILNET_CRASH_SECONDS", "10"))
SEED = int(os.environ.get("MAILNET_CRASH_SEED", str(int(time.time()))))


def mailnet(net, *args):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=60)


def test_nothing_accepted_is_lost():
    rng = random.Random(SEED)
    print(f"seed {SEED}, at most {MESSAGES} messages in {SECONDS}s", flush=True)
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = {"first": "100ms", "max": "500ms", "give_up_after": "10m"}
    topo["resolver"]["timeout"] = "200ms"
    with harness.Network(topo) as net:
        net.start()
        port = harness.port_of(topo, "jaku.com")
        accepted = {}  # token -> list of (domain, user)
        stop = threading.Event()
        kills = []

        def sender():
            start = time.monotonic()
            for i in range(MESSAGES):
                # Paced over SECONDS so that the kills land in the middle of the stream.
                pause = start + i * SECONDS / MESSAGES - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() > start + SECONDS + 5:
                    break
                token = f"T{i:05d}"
                rcpts = [("jaku.com", "finn")] if i % 3 == 0 else [("deathstar.com", "vader")]
                if i % 5 == 0:
                    rcpts.append(("deathstar.com", "tarkin"))
                body = f"Subject: {token}\r\nMessage-ID: <{token}@test>\r\n\r\n{token}\r\n".encode()
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
                        s.sendmail("rey@jaku.com", [f"{u}@{d}" for d, u in rcpts], body)
                    accepted[token] = rcpts
                except (OSError, smtplib.SMTPException):
                    pass  # refused or cut off: no 250, no promise
            stop.set()

        def killer():
            victims = ["jaku.com", "deathstar.com", "resolver"]
            while not stop.wait(rng.uniform(0.2, 0.8)):
                victim = rng.choice(victims)
                mailnet(net, "kill", victim)
                kills.append(victim)
                time.sleep(rng.uniform(0.0, 0.4))
                mailnet(net, "start", victim)

        threads = [threading.Thread(target=sender), threading.Thread(target=killer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=SECONDS + 120)
        assert not any(t.is_alive() for t in threads), "load threads did not finish"

        # Everything up again, then let the queues drain.
        for name in ("resolver", "jaku.com", "deathstar.com"):
            mailnet(net, "start", name)
        mailnet(net, "flush")
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net, "queue").stdout, 60, "the queues to drain")

        found = {}  # (domain, user) -> token -> count
        for domain, user in (("jaku.com", "finn"), ("deathstar.com", "vader"), ("deathstar.com", "tarkin"),
                             ("jaku.com", "rey")):
            counts = {}
            for raw in net.messages(domain, user):
                for token in set(re.findall(rb"^Subject: (T\d{5})\r?$", raw, re.M)):
                    counts[token.decode()] = counts.get(token.decode(), 0) + 1
            found[(domain, user)] = counts
        bounced = found[("jaku.com", "rey")]  # bounces carry the original Subject in their headers part

        lost, duplicates = [], 0
        for token, rcpts in accepted.items():
            for rcpt in rcpts:
                n = found[rcpt].get(token, 0)
                if n == 0 and token not in bounced:
                    lost.append((token, rcpt))
                duplicates += max(0, n - 1)
        wrong = [(t, r) for r, counts in found.items() if r != ("jaku.com", "rey")
                 for t in counts if t not in accepted or r not in accepted[t]]
        print(f"accepted {len(accepted)}, kills {len(kills)} ({', '.join(sorted(set(kills)))}), "
              f"duplicates {duplicates}, bounced {len(bounced)}, lost {len(lost)}", flush=True)
        assert not lost, f"lost: {lost[:20]}"
        # A message can reach a mailbox without its 250 reaching the client (killed
        # between commit and reply): that is a duplicate risk, not a wrong mailbox.
        wrong = [(t, r) for t, r in wrong if t in accepted]
        assert not wrong, f"in the wrong mailbox: {wrong[:20]}"
        assert len(accepted) > 0 and kills, "the test did not exercise anything"


if __name__ == "__main__":
    harness.run_tests([test_nothing_accepted_is_lost])
