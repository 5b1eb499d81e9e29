"""Issue 16, §3: at its descriptor limit a node keeps what it needs. With a
low RLIMIT_NOFILE (set here for the launcher and, inherited, the node), a
connection past what the node can serve is answered 421 4.3.2 and closed (not
left unanswered), and a session already open still gets its message
committed with 250 (not 451)."""
import os
import resource
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

LIMIT = 128


def first_reply(sock):
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(512)  # the socket's timeout: no reply at all fails the test
        if not chunk:
            return data or b"<closed>"
        data += chunk
    return data


def test_at_the_descriptor_limit_421_for_new_and_250_for_open_sessions():
    topo = harness.two_domain_topology()
    topo["domains"] = topo["domains"][:1]
    topo["domains"][0]["limits"] = {"connections": 1000}

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))

    with harness.Network(topo) as net:
        net.start(preexec_fn=low_limit)
        port = harness.port_of(topo, "jaku.com")
        held, refusal = [], None
        try:
            for _ in range(2 * LIMIT):
                s = harness.tracked(socket.create_connection(("127.0.0.1", port), timeout=10))
                reply = first_reply(s)
                if not reply.startswith(b"220 "):
                    refusal = reply
                    s.close()
                    break
                held.append(s)
            assert refusal is not None and refusal.startswith(b"421 4.3.2 "), (len(held), refusal)
            print(f"RLIMIT_NOFILE {LIMIT}: {len(held)} sessions, then {refusal.strip().decode()}", flush=True)
            # A second one is refused the same way: the node did not lose its spare.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                assert first_reply(s).startswith(b"421 4.3.2 ")
            # A session that was open before the limit commits its message.
            s = held[0]
            for line, code in ((b"EHLO client.example", b"250"), (b"MAIL FROM:<rey@jaku.com>", b"250"),
                               (b"RCPT TO:<finn@jaku.com>", b"250"), (b"DATA", b"354"),
                               (b"Subject: at the limit\r\n\r\nstill here\r\n.", b"250")):
                s.sendall(line + b"\r\n")
                data = b""
                while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
                    data += s.recv(4096)
                last = data.split(b"\r\n")[-2]
                assert last.startswith(code), (line, data)
        finally:
            for s in held:
                s.close()
        assert len(net.messages("jaku.com", "finn")) == 1
        # The descriptors come back and the node serves new sessions again.
        def greeted():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                return first_reply(s).startswith(b"220 ")
        harness.wait_for(greeted, 15, "a greeting once the sessions are closed")


if __name__ == "__main__":
    harness.run_tests([test_at_the_descriptor_limit_421_for_new_and_250_for_open_sessions])
