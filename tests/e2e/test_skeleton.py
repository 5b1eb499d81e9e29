"""Issue 2: `mailnet up` starts a real network that relays mail end to end."""
import os
import re
import signal
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def original_message(to, subject):
    # CRLF line ends, a line starting with a dot (dot-stuffing must round-trip),
    # a bare-looking end marker inside the text, and 8-bit UTF-8.
    return (f"From: Rey <rey@jaku.com>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Sun, 22 Nov 2026 03:00:00 +0000\r\nMessage-ID: <{subject}@jaku.com>\r\n"
            "\r\nHello from Jaku.\r\n.leading dot stays\r\n..two dots stay two\r\na lone dot next:\r\n..\r\n"
            "Grüße\r\n").encode("utf-8")


def assert_delivered(delivered, original, hops):
    """The delivered file is our trace headers (each node's Received: with its
    Authentication-Results: under it, and the DKIM-Signature jaku.com adds to
    its mail for deathstar.com), then the original byte for byte but
    for its line ends: stored as LF, as every Maildir reader expects."""
    original = original.replace(b"\r\n", b"\n")
    assert delivered.endswith(original), f"body differs:\n{delivered!r}\n!=\n{original!r}"
    prefix = delivered[: len(delivered) - len(original)].decode()
    received = re.findall(r"^Received: ", prefix, re.M)
    assert len(received) == hops, f"expected {hops} Received: headers, got:\n{prefix}"
    for line in prefix.split("\n")[:-1]:
        assert line.startswith(("Received: ", "Authentication-Results: ", "DKIM-Signature: ", "\t")), \
            f"unexpected header line {line!r}"


def test_relay_and_local_delivery():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        pids = net.child_pids()
        assert set(pids) == {"resolver", "jaku.com", "deathstar.com"}, pids
        for name in pids:
            assert re.search(rf"^\s+{re.escape(name)}\s+ready\s+127\.0\.0\.1:\d+\s+pid \d+$", net.output(), re.M), \
                f"no ready line for {name}:\n{net.output()}"

        to_vader = original_message("vader@deathstar.com", "relayed")
        to_finn = original_message("finn@jaku.com", "local")
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as smtp:
            code, _ = smtp.ehlo("client.example")
            assert code == 250
            assert smtp.has_extn("pipelining") and smtp.has_extn("size")
            refused = smtp.sendmail("rey@jaku.com", ["vader@deathstar.com"], to_vader)
            assert refused == {}, refused
            refused = smtp.sendmail("rey@jaku.com", ["finn@jaku.com"], to_finn)
            assert refused == {}, refused

        finn = net.wait_messages("jaku.com", "finn", 1)
        vader = net.wait_messages("deathstar.com", "vader", 1)
        assert len(finn) == 1 and len(vader) == 1
        assert_delivered(finn[0], to_finn, hops=1)
        assert_delivered(vader[0], to_vader, hops=2)
        # Nothing leaked into other mailboxes, nothing left in tmp/ or the queue.
        assert net.messages("jaku.com", "rey") == [] and net.messages("deathstar.com", "tarkin") == []
        assert os.listdir(os.path.join(net.domain_dir("jaku.com"), "mail", "finn", "tmp")) == []
        harness.wait_for(lambda: not [f for f in os.listdir(os.path.join(net.domain_dir("jaku.com"), "queue"))
                                      if f.endswith(".msg")], 10, "jaku.com's queue to drain")

        assert net.stop() == 0, net.output()
        for name, pid in pids.items():
            harness.wait_for(lambda: not harness.pid_alive(pid), 5, f"{name} (pid {pid}) to exit")


def test_children_die_with_a_killed_launcher():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        pids = net.child_pids()
        net.proc.send_signal(signal.SIGKILL)
        net.proc.wait(timeout=10)
        for name, pid in pids.items():
            harness.wait_for(lambda: not harness.pid_alive(pid), 5, f"{name} (pid {pid}) to die with the launcher")


def test_bad_topology_starts_nothing():
    topo = harness.two_domain_topology()
    topo["domains"][1]["name"] = "jaku.com"  # duplicate domain
    with harness.Network(topo) as net:
        net.start(wait_ready=False)
        code = net.proc.wait(timeout=10)
        net.reader.join(timeout=5)
        assert code != 0
        out = net.output()
        assert "topology.json" in out and "$.domains[1].name" in out and "duplicate" in out, out
        assert not os.path.exists(net.run_dir), "a bad topology must not create the output folder"


def test_port_in_use_fails_cleanly():
    topo = harness.two_domain_topology()
    import socket
    blocker = harness.tracked(socket.socket())
    blocker.bind(("127.0.0.1", harness.port_of(topo, "deathstar.com")))
    blocker.listen(1)
    try:
        with harness.Network(topo) as net:
            net.start(wait_ready=False)
            code = net.proc.wait(timeout=20)
            net.reader.join(timeout=5)
            out = net.output()
            assert code == 1, out
            assert re.search(r"deathstar\.com .*failed to start.*Address already in use", out), out
            harness.wait_for(lambda: not harness.processes_naming(net.run_dir), 5, "no process of the network left")
            # The same in the background: the reason reaches the terminal
            # that typed `up -d`, and nothing is left running when it returns.
            with harness.network_stopped(net.run_dir):  # were it to start after all
                out = subprocess.run([harness.binary("mailnet"), "up", "-d", net.topology_file, "--dir", net.run_dir],
                                     capture_output=True, text=True, timeout=60)
            assert out.returncode == 1, out.stdout + out.stderr
            port = harness.port_of(topo, "deathstar.com")
            assert re.search(rf"deathstar\.com \(127\.0\.0\.1:{port}\) failed to start.*Address already in use",
                             out.stderr), out.stderr
            assert "did not start" in out.stderr, out.stderr
            assert harness.processes_naming(net.run_dir) == [], "a process of the failed network is still running"
    finally:
        blocker.close()


def test_port_held_by_a_client_connection_is_waited_for():
    # Ports 32768-60999 are also the kernel's ephemeral ports: an outgoing
    # connection (or its TIME_WAIT) can hold a node's port without serving it.
    # The node says so and binds once the kernel lets go; it does not fail.
    import socket
    topo = harness.two_domain_topology()
    port = harness.port_of(topo, "deathstar.com")
    server = harness.tracked(socket.socket())
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = harness.tracked(socket.socket())
    client.bind(("127.0.0.1", port))
    client.connect(server.getsockname())
    accepted, _ = server.accept()
    harness.tracked(accepted)
    try:
        with harness.Network(topo) as net:
            net.start(wait_ready=False)
            net.wait_output("event=port_busy", 20)
            assert "is up" not in net.output(), net.output()
            # Closed from the far side first, the client's port is free at
            # once (the TIME_WAIT stays with the other end).
            accepted.close()
            client.recv(1)
            client.close()
            net.wait_output("is up", 20)
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                assert s.noop()[0] == 250
    finally:
        for sock in (accepted, client, server):
            sock.close()


def test_validate_command():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        ok = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        topo["domains"][0]["users"] = "rey"
        with open(net.topology_file, "w") as f:
            import json
            json.dump(topo, f)
        bad = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file], capture_output=True, text=True)
        assert bad.returncode == 2 and "$.domains[0].users" in bad.stderr, bad.stderr


if __name__ == "__main__":
    harness.run_tests([test_relay_and_local_delivery, test_children_die_with_a_killed_launcher,
                       test_bad_topology_starts_nothing, test_port_in_use_fails_cleanly,
                       test_port_held_by_a_client_connection_is_waited_for, test_validate_command])
