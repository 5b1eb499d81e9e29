"""Issue 23, a thousand domains, in small: the parts of a large network's
start that a small one can show.

- Fifty domains start, all ready; each node reads its own part of the
  topology (<run>/<domain>/topology.json: its domain, no other), not the
  whole file (parsed by every node, that made the start of 1,000 domains
  O(domains²)); an idle node runs one thread, and one message starts one
  thread of each kind, not the pools' maximum; mail relays between two of
  them; `mailnet down` ends all.
- A node that has only its part still tells the network's nodes from clients
  when a rule "from": "clients" comes at run time: it reads every domain's
  name then (a relay from another domain is not hit, a client is).

Speed is measured in bench/many_domains.py, not here. An argument picks the
tests whose names contain it."""
import json
import os
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

DEADLINE = 60  # generous: 50 processes start under ASan on a loaded machine
TROUBLE = "451 4.3.0 clients slowed down"


def topology(n):
    ports = harness.free_tcp_ports(n + 1)
    return {
        "name": "many",
        "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
        "web": {"listen": f"127.0.0.1:{ports[n]}"},
        # No DKIM keys: fifty RSA keys are seconds of CPU, which this test
        # of the start does not need (bench/many_domains.py measures them).
        "defaults": {"retry": {"first": "200ms", "max": "1s", "give_up_after": "1m"}, "dns": {"dkim": False}},
        "domains": [{"name": f"d{i}.test", "listen": f"127.0.0.1:{ports[i]}", "users": ["u"]} for i in range(n)],
    }


def mailnet(net, *args):
    return subprocess.run([harness.binary("mailnet"), *args, "--dir", net.run_dir], capture_output=True, text=True,
                          timeout=DEADLINE, stdin=subprocess.DEVNULL)


def send(topo, sender, rcpt, helo, subject):
    """One message through the sender's node; the RCPT reply code (the message is sent only after a 250)."""
    port = harness.port_of(topo, sender.split("@")[1])
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as s:
        s.ehlo(helo)
        s.mail(sender)
        code, _ = s.rcpt(rcpt)
        if code == 250:
            s.data(f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{subject}\r\n".encode())
        return code


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def node_args(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


def test_fifty_domains_start_read_their_own_part_relay_and_go_down():
    topo = topology(50)
    with harness.Network(topo) as net:
        net.start(timeout=DEADLINE)
        with open(os.path.join(net.run_dir, "network.json")) as f:
            nodes = json.load(f)["nodes"]
        assert len(nodes) == 51 and all(n["state"] == "ready" for n in nodes), nodes
        for n in nodes:
            if n["name"] == "resolver":
                continue
            args = node_args(n["pid"])
            own = os.path.join(net.run_dir, n["name"], "topology.json")
            assert args[args.index("--topology") + 1] == own, args
            with open(own) as f:
                part = json.load(f)
            assert [d["name"] for d in part["domains"]] == [n["name"]], (n["name"], part["domains"])
            assert part["resolver"]["listen"] == topo["resolver"]["listen"], part["resolver"]
        # An idle node runs its event loop's thread alone: the committer's,
        # the disk pool's and the checks' threads start with the work that
        # needs them (a thread is memory, and work for the kernel at `down`).
        pids = {n["name"]: n["pid"] for n in nodes}
        assert all(threads(pids[f"d{i}.test"]) == 1 for i in range(50)), \
            {f"d{i}.test": threads(pids[f"d{i}.test"]) for i in range(50)}
        assert send(topo, "u@d0.test", "u@d49.test", "client.example", "across fifty") == 250
        got = net.wait_messages("d49.test", "u", 1, timeout=DEADLINE)
        assert b"Subject: across fifty" in got[0], got[0][:300]
        # One message at a time: one thread of each kind, not the pools' maximum
        # (the loop, the committer's sync and writer threads, a disk thread, a check's).
        for name in ("d0.test", "d49.test"):
            assert 2 <= threads(pids[name]) <= 5, (name, threads(pids[name]))
        assert threads(pids["d25.test"]) == 1, threads(pids["d25.test"])
        started = {p: harness.process_start(p) for p in net.child_pids().values()}
        out = mailnet(net, "down")
        assert out.returncode == 0, (out.stdout, out.stderr)
        harness.wait_for(lambda: all(harness.process_start(p) != t for p, t in started.items()), DEADLINE,
                         "every node and the resolver gone")


def test_a_clients_rule_added_at_run_time_spares_the_other_nodes():
    topo = topology(3)
    with harness.Network(topo) as net:
        net.start(timeout=DEADLINE)
        rule = {"name": "slow-clients", "from": "clients", "to": "d1.test", "stage": "rcpt", "reply": TROUBLE}
        out = mailnet(net, "fault", "add", json.dumps(rule))
        assert out.returncode == 0 and "d1.test applies it" in out.stdout, (out.stdout, out.stderr)
        # A client of d1.test is hit ...
        assert send(topo, "u@d1.test", "u@d1.test", "client.example", "from a client") == 451
        # ... the relay of d0.test (EHLO d0.test, a node of the network) is not.
        assert send(topo, "u@d0.test", "u@d1.test", "client.example", "relayed by d0") == 250
        got = net.wait_messages("d1.test", "u", 1, timeout=DEADLINE)
        assert b"Subject: relayed by d0" in got[0], got[0][:300]


if __name__ == "__main__":
    harness.run_tests([
        test_fifty_domains_start_read_their_own_part_relay_and_go_down,
        test_a_clients_rule_added_at_run_time_spares_the_other_nodes,
    ])
