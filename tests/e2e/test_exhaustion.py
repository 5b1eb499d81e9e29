"""Issue 10, item 4: resource exhaustion. Out of file descriptors (the accept
loop survives), an unwritable spool, a full disk (451 4.3.0, nothing partial),
and a connection flood past the per-node limit."""
import os
import resource
import smtplib
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def send(port, sender, rcpts, body=b"Subject: x\r\n\r\nx\r\n"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        return s.sendmail(sender, rcpts, body)


def try_send(port):
    """True once a small message is accepted; refusals while the node recovers are not errors."""
    try:
        return send(port, "rey@jaku.com", ["finn@jaku.com"]) == {}
    except (OSError, smtplib.SMTPException):
        return False


def test_out_of_file_descriptors_the_accept_loop_survives():
    topo = harness.two_domain_topology()
    topo["domains"] = topo["domains"][:1]
    topo["domains"][0]["limits"] = {"connections": 1000}
    net = harness.Network(topo)
    limit = 96  # for the launcher and, inherited, the node: a few dozen sockets at most

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with net:
        net.start(preexec_fn=low_limit)
        port = harness.port_of(topo, "jaku.com")
        flood = []
        try:
            for _ in range(2 * limit):
                flood.append(harness.tracked(socket.create_connection(("127.0.0.1", port), timeout=5)))
            log = os.path.join(net.domain_dir("jaku.com"), "node.log")
            harness.wait_for(lambda: "event=refused_fd_limit" in open(log).read(), 10,
                             "the node to refuse for want of descriptors")
        finally:
            for s in flood:
                s.close()
        # The descriptors come back; the node serves again.
        harness.wait_for(lambda: try_send(port), 15, "the node to serve again")
        net.wait_messages("jaku.com", "finn", 1)


def test_unwritable_spool_answers_451_and_keeps_nothing():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        if os.geteuid() != 0:
            raise AssertionError("this test bind-mounts the spool read-only and needs root (CI runs as root)")
        spool = os.path.join(net.domain_dir("jaku.com"), "queue")
        # A read-only bind mount: writes into the spool fail, even as root.
        subprocess.run(["mount", "--bind", spool, spool], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", spool], check=True)
            port = harness.port_of(topo, "jaku.com")
            try:
                send(port, "rey@jaku.com", ["vader@deathstar.com", "finn@jaku.com"])
                raise AssertionError("accepted although the spool is unwritable")
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451 and e.smtp_error.startswith(b"4.3.0"), e
            # All or nothing: the local copy was not published either.
            assert net.messages("jaku.com", "finn") == []
            assert [f for f in os.listdir(os.path.join(net.domain_dir("jaku.com"), "queue")) if f.endswith(".msg")] == []
            assert send(port, "rey@jaku.com", ["finn@jaku.com"]) == {}  # local mail still flows
        finally:
            subprocess.run(["umount", "-l", spool], check=False)  # never hides the test's own error
        assert send(harness.port_of(topo, "jaku.com"), "rey@jaku.com", ["vader@deathstar.com"]) == {}
        net.wait_messages("deathstar.com", "vader", 1)


def test_full_disk_answers_451_and_leaves_nothing_partial():
    if os.geteuid() != 0:
        raise AssertionError("this test mounts a small tmpfs and needs root (CI runs as root)")
    mount_point = tempfile.mkdtemp(prefix="mailnet-full-")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mount_point], check=True)
        topo = harness.two_domain_topology()
        with harness.Network(topo, workdir=mount_point) as net:
            net.start()
            port = harness.port_of(topo, "jaku.com")
            big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2500  # 2.5 MB: more than the disk holds
            try:
                send(port, "rey@jaku.com", ["finn@jaku.com"], big)
                raise AssertionError("accepted a message the disk cannot hold")
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451 and e.smtp_error.startswith(b"4.3.0"), e
            finn = os.path.join(net.domain_dir("jaku.com"), "mail", "finn")
            assert os.listdir(os.path.join(finn, "new")) == [] and os.listdir(os.path.join(finn, "tmp")) == []
            log = os.path.join(net.domain_dir("jaku.com"), "node.log")
            harness.wait_for(lambda: "event=disk_error" in open(log).read(), 10, "event=disk_error in node.log")
            assert send(port, "rey@jaku.com", ["finn@jaku.com"]) == {}  # small mail still fits
            net.wait_messages("jaku.com", "finn", 1)
    finally:
        subprocess.run(["umount", "-l", mount_point], check=False)
        os.rmdir(mount_point)


def test_connection_flood_beyond_the_limit_gets_421():
    topo = harness.two_domain_topology()
    topo["domains"][0]["limits"] = {"connections": 5}
    with harness.Network(topo) as net:
        net.start()
        port = harness.port_of(topo, "jaku.com")
        held, refused = [], 0
        try:
            for _ in range(20):
                s = harness.tracked(socket.create_connection(("127.0.0.1", port), timeout=5))
                reply = s.recv(512)
                if reply.startswith(b"421 4.7.0"):
                    refused += 1
                    s.close()
                else:
                    assert reply.startswith(b"220 "), reply
                    held.append(s)
            assert len(held) == 5 and refused == 15, (len(held), refused)
        finally:
            for s in held:
                s.close()
        harness.wait_for(lambda: try_send(port), 10, "the node to serve again")


if __name__ == "__main__":
    harness.run_tests([test_out_of_file_descriptors_the_accept_loop_survives,
                       test_unwritable_spool_answers_451_and_keeps_nothing,
                       test_full_disk_answers_451_and_leaves_nothing_partial,
                       test_connection_flood_beyond_the_limit_gets_421])
