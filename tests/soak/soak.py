"""Issue 10, item 3: the chaos soak. Six domains (MAILNET_SOAK_DOMAINS) under
steady cross traffic for MAILNET_SOAK_SECONDS (default 180) while random nodes
and the resolver are SIGKILLed and started again. Prints accepted, delivered,
bounced, duplicated and lost counts; fails on any loss, bounce or wrong mailbox,
and on more duplicate copies than the node kills explain (chaos.py).

    MAILNET_BIN_DIR=build/bin /usr/bin/python3 tests/soak/soak.py
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import chaos  # noqa: E402
import harness  # noqa: E402

SECONDS = float(os.environ.get("MAILNET_SOAK_SECONDS", "180"))
DOMAINS = int(os.environ.get("MAILNET_SOAK_DOMAINS", "6"))
RATE = float(os.environ.get("MAILNET_SOAK_RATE", "40"))  # messages per second
SEED = int(os.environ.get("MAILNET_SOAK_SEED", str(int(time.time()))))


def test_soak():
    chaos.run(domain_count=DOMAINS, messages=int(SECONDS * RATE), seconds=SECONDS, seed=SEED, senders=4)


if __name__ == "__main__":
    harness.run_tests([test_soak])
