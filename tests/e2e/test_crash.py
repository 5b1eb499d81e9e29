"""Issue 5, item 6: SIGKILL the sending node, the receiving node and the
resolver at random moments under a bounded stream of mail. Every message that
got a 250 must end in its recipients' Maildirs (no bounce: every user exists).

Bounded: at most MAILNET_CRASH_MESSAGES messages over MAILNET_CRASH_SECONDS.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import chaos  # noqa: E402
import harness  # noqa: E402

MESSAGES = int(os.environ.get("MAILNET_CRASH_MESSAGES", "300"))
SECONDS = float(os.environ.get("MAILNET_CRASH_SECONDS", "10"))
SEED = int(os.environ.get("MAILNET_CRASH_SEED", str(int(time.time()))))


def test_nothing_accepted_is_lost():
    chaos.run(domain_count=2, messages=MESSAGES, seconds=SECONDS, seed=SEED, senders=1)


if __name__ == "__main__":
    harness.run_tests([test_nothing_accepted_is_lost])
