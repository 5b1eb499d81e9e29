"""Issue 17, promises 5 and 6 of the README, with real processes.

- "When a node comes back, and when `up` has every node ready, the other
  nodes retry their waiting mail at once": retry.first is 10 minutes here, so
  only that retry at once can deliver within the tests' deadline (the
  deadline proves "not the retry timer", not speed). Each test prints the
  figure it saw: from the node's event=ready to its event=delivered, both
  from its own node.log.
- Ctrl-C on a foreground `mailnet up` (a real ^C typed on its terminal)
  leaves no process it started running, and stops them gracefully.
- `mailnet kill` leaves a node with `restart: on-failure` down, while the same
  node killed from outside is restarted.
- `mailnet down` of a detached network returns once no process of it is
  left (the launcher, the resolver, every node: none is still running, none
  a zombie), each node having stopped gracefully; the mail waiting in a
  queue stays there, and the next `up` delivers it.
"""
import datetime
import fcntl
import json
import os
import pty
import re
import select
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

# Far beyond any deadline below: a delivery within DEADLINE is a retry at once.
SLOW_RETRY = {"first": "10m", "max": "1h", "give_up_after": "2h"}
DEADLINE = 30  # seconds; generous for ASan on a loaded 2-core machine


def mailnet(run_dir, *args, check=True):
    out = subprocess.run([harness.binary("mailnet"), *args, "--dir", run_dir], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    if check:
        assert out.returncode == 0, f"mailnet {' '.join(args)} -> {out.returncode}: {out.stdout}{out.stderr}"
    return out


def status(run_dir):
    return {n["name"]: n for n in json.loads(mailnet(run_dir, "status", "--json").stdout)["nodes"]}


def send(topo, subject):
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
        s.sendmail("rey@jaku.com", ["vader@deathstar.com"],
                   f"From: <rey@jaku.com>\r\nSubject: {subject}\r\n\r\nwaiting\r\n".encode())


def events(net, domain):
    """(time, line) of each line of domain's node.log."""
    out = []
    with open(os.path.join(net.domain_dir(domain), "node.log"), encoding="utf-8", errors="replace") as f:
        for line in f:
            stamp = line.split(" ", 1)[0]
            out.append((datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ"), line))
    return out


def wait_deferred(net, attempts):
    """jaku.com's relay has failed `attempts` times (its next try is now 10
    minutes or more away)."""
    def deferred():
        return any(f"event=deferred attempts={attempts} " in line for _, line in events(net, "jaku.com"))
    harness.wait_for(deferred, DEADLINE, f"attempt {attempts} to vader@deathstar.com to fail")


def ready_to_delivered(net, subject):
    """Seconds from deathstar.com's last event=ready to the delivery of the
    message, both in its node.log."""
    (message,) = net.wait_messages("deathstar.com", "vader", 1, timeout=DEADLINE)
    assert f"Subject: {subject}".encode() in message
    harness.wait_for(lambda: any("event=delivered" in line for _, line in events(net, "deathstar.com")), 10,
                     "deathstar.com's event=delivered")  # batched events: at most 20 ms after the file
    log = events(net, "deathstar.com")
    ready = [t for t, line in log if "event=ready" in line][-1]
    delivered = [t for t, line in log if "event=delivered" in line and t >= ready]
    assert delivered, "no delivery after the last ready:\n" + "".join(line for _, line in log)
    return (delivered[0] - ready).total_seconds()


def check_comes_back_and_gets_its_mail(command):
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = dict(SLOW_RETRY)
    with harness.Network(topo) as net:
        net.start()
        mailnet(net.run_dir, "kill", "deathstar.com")
        send(topo, f"waits for {command}")
        wait_deferred(net, 1)
        mailnet(net.run_dir, command, "deathstar.com")  # returns once it is ready
        seconds = ready_to_delivered(net, f"waits for {command}")
        harness.wait_for(lambda: "0 messages waiting" in mailnet(net.run_dir, "queue").stdout, DEADLINE,
                         "jaku.com's queue to drain")
        print(f"{command}: ready to delivered in {seconds * 1000:.0f} ms", flush=True)


def test_mail_waiting_for_a_killed_node_arrives_at_once_when_it_is_started():
    check_comes_back_and_gets_its_mail("start")


def test_mail_waiting_for_a_killed_node_arrives_at_once_when_it_is_restarted():
    check_comes_back_and_gets_its_mail("restart")


def test_up_over_a_run_folder_with_waiting_mail_delivers_it_once_every_node_is_ready():
    """Mail queued in an earlier run for a node that is slower to start than
    its sender: the sender's own retry at start fails (its next try is then
    10 minutes away), and the retry `up` asks for once every node is ready
    delivers it. deathstar.com is held back: a client connection holds its
    port (the node waits for the port; test_skeleton shows that). Its port
    changes between the two runs,
    so that the port is ours from the start: a port freed after the first run
    could be taken by any connection on this machine before we bind it."""
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = dict(SLOW_RETRY)
    with harness.Network(topo) as first:
        first.start()
        mailnet(first.run_dir, "kill", "deathstar.com")
        send(topo, "queued before down")
        wait_deferred(first, 1)
        assert first.stop() == 0, first.output()

        server = harness.tracked(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        for _ in range(20):  # a port the kernel gives us, not one of the shipped scenarios'
            client = harness.tracked(socket.socket())
            client.bind(("127.0.0.1", 0))
            if client.getsockname()[1] not in harness.SHIPPED_PORTS:
                break
        topo["domains"][1]["listen"] = f"127.0.0.1:{client.getsockname()[1]}"
        client.connect(server.getsockname())
        accepted = harness.tracked(server.accept()[0])
        with harness.Network(topo, workdir=first.workdir) as second:
            second.start(wait_ready=False)
            second.wait_output("event=port_busy", DEADLINE)
            wait_deferred(second, 2)  # jaku.com's retry at its start found no one
            assert "is up" not in second.output(), second.output()
            accepted.close()  # closed from the far side first: the port is free at once
            client.recv(1)
            client.close()
            second.wait_output("is up", DEADLINE)
            seconds = ready_to_delivered(second, "queued before down")
            print(f"up: deathstar.com ready to delivered in {seconds * 1000:.0f} ms", flush=True)


class Terminal:
    """`mailnet up` on a pseudo-terminal of its own, as its controlling
    terminal: a ^C written to it is the kernel's SIGINT to the foreground
    process group, exactly as when a user types Ctrl-C."""

    def __init__(self, args):
        self.master, slave = pty.openpty()

        def take_terminal():  # in the child, after setsid(): the pty becomes its controlling terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        try:
            self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                         preexec_fn=take_terminal, close_fds=True)
        finally:
            os.close(slave)
        self.out = b""

    def read(self, wait):
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return b""
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the other side is closed
            return b""
        self.out += chunk
        return chunk

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {text!r}: {self.out!r}"
            if not self.read(left) and self.proc.poll() is not None:
                assert text.encode() in self.out, f"exited ({self.proc.returncode}) before {text!r}: {self.out!r}"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_ctrl_c_on_a_foreground_up_leaves_no_process_running():
    topo = harness.two_domain_topology()
    with tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
        file = os.path.join(tmp, "t.json")
        with open(file, "w") as f:
            json.dump(topo, f)
        run_dir = os.path.join(tmp, "run")
        term = Terminal([harness.binary("mailnet"), "up", file, "--dir", run_dir])
        try:
            with harness.network_stopped(run_dir):  # by pid, before the terminal closes
                term.wait_for("stop with Ctrl-C", DEADLINE)
                with open(os.path.join(run_dir, "network.json")) as f:
                    doc = json.load(f)
                assert doc["launcher_pid"] == term.proc.pid, doc
                started = {n["name"]: n["pid"] for n in doc["nodes"]}
                assert set(started) == {"resolver", "jaku.com", "deathstar.com"} and all(started.values()), started
                # Every process it started, also any the table does not name.
                by_parent = harness.children_of(term.proc.pid)
                assert set(started.values()) <= set(by_parent), (started, by_parent)
                assert termios.tcgetattr(term.master)[3] & termios.ISIG  # the terminal turns ^C into SIGINT

                os.write(term.master, b"\x03")
                code = term.proc.wait(timeout=DEADLINE)
                while term.read(1):  # its last words, up to EOF
                    pass
                out = term.out.decode("utf-8", "replace")
                assert code == 0, out
                # Gone when the launcher is: it stopped them and waited for them,
                # the kernel's kill at the launcher's exit had nothing left to do.
                left = [pid for pid in set(by_parent) | set(started.values()) if harness.pid_alive(pid)]
                assert not left, f"still running after the launcher exited: {left}\n{out}"
                assert harness.processes_naming(run_dir) == [], "a process of the network is still running"
                for name in ("jaku.com", "deathstar.com"):
                    with open(os.path.join(run_dir, name, "node.log")) as f:
                        assert "event=stopped" in f.read(), f"{name} was not stopped gracefully:\n{out}"
                with open(os.path.join(run_dir, "resolver", "resolver.log")) as f:
                    assert "event=stopping" in f.read(), out
                with open(os.path.join(run_dir, "network.json")) as f:
                    states = {n["name"]: n["state"] for n in json.load(f)["nodes"]}
                assert set(states.values()) == {"stopped"}, states
                report = harness.sanitizer_report(out)
                assert not report, "sanitizer report:\n" + report
        finally:
            term.close()


def test_mailnet_kill_leaves_an_on_failure_node_down_an_outside_kill_does_not():
    topo = harness.two_domain_topology(restart="on-failure")
    with harness.Network(topo) as net:
        net.start()
        before = status(net.run_dir)
        out = mailnet(net.run_dir, "kill", "deathstar.com")
        assert out.stdout.strip() == "deathstar.com: killed", out.stdout
        killed = status(net.run_dir)["deathstar.com"]
        assert killed["state"] == "killed" and killed["exit"] == "signal 9", killed
        assert not harness.pid_alive(before["deathstar.com"]["pid"])

        # The contrast, on the same launcher: jaku.com, killed from outside,
        # is restarted after its backoff (0.5 s). By the time it is back,
        # deathstar.com's own backoff would have passed too.
        os.kill(before["jaku.com"]["pid"], signal.SIGKILL)
        harness.wait_for(lambda: status(net.run_dir)["jaku.com"]["state"] == "ready"
                         and status(net.run_dir)["jaku.com"]["pid"] not in (0, before["jaku.com"]["pid"]),
                         DEADLINE, "jaku.com to be restarted")
        nodes = status(net.run_dir)
        assert nodes["jaku.com"]["restarts"] == 1, nodes["jaku.com"]
        assert nodes["deathstar.com"]["state"] == "killed" and nodes["deathstar.com"]["restarts"] == 0, nodes
        assert not nodes["deathstar.com"]["pid"], nodes["deathstar.com"]
        assert not re.search(r"^deathstar\.com\s*\| restarting", net.output(), re.M), net.output()
        assert re.search(r"^jaku\.com\s*\| restarting in 500 ms", net.output(), re.M), net.output()
        deathstar = [pid for name, pid in net.child_pids().items() if name == "deathstar.com"]
        assert not deathstar, deathstar
        with smtplib.SMTP() as s:  # nothing listens on its port
            try:
                s.connect("127.0.0.1", harness.port_of(topo, "deathstar.com"))
                raise AssertionError("deathstar.com answers after mailnet kill")
            except ConnectionRefusedError:
                pass


def queue_files(run_dir, domain):
    folder = os.path.join(run_dir, domain, "queue")
    return sorted(n for n in os.listdir(folder) if n.endswith(".msg"))


def node_log(run_dir, domain):
    with open(os.path.join(run_dir, domain, "node.log"), encoding="utf-8", errors="replace") as f:
        return f.read()


def test_down_returns_with_no_process_left_and_the_queue_kept_for_the_next_up():
    topo = harness.two_domain_topology()
    topo["defaults"]["retry"] = dict(SLOW_RETRY)
    with tempfile.TemporaryDirectory(prefix="mailnet-e2e-") as tmp:
        file = os.path.join(tmp, "t.json")
        with open(file, "w") as f:
            json.dump(harness.with_web_port(topo), f)
        run_dir = os.path.join(tmp, "run")
        with harness.network_stopped(run_dir):
            subprocess.run([harness.binary("mailnet"), "up", "-d", file, "--dir", run_dir], check=True,
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            mailnet(run_dir, "kill", "deathstar.com")
            send(topo, "queued across down")
            harness.wait_for(lambda: "event=deferred attempts=1 " in node_log(run_dir, "jaku.com"), DEADLINE,
                             "the relay to deathstar.com to be deferred")
            queued = queue_files(run_dir, "jaku.com")
            assert len(queued) == 1, queued
            processes = harness.network_processes(run_dir)
            assert len(processes) == 3, processes  # the launcher, the resolver, jaku.com

            out = mailnet(run_dir, "down")
            assert "network is down" in out.stdout, out.stdout
            # At once, no waiting: down returned after the last of them.
            left = [pid for pid, start in processes.items() if harness.process_start(pid) == start]
            assert not left, f"still there when down returned: {left}"
            assert harness.processes_naming(run_dir) == []
            assert "event=stopped sessions_cut=0 relay_attempt_cut=no" in node_log(run_dir, "jaku.com")
            assert queue_files(run_dir, "jaku.com") == queued

            # The next up (every node ready) retries it at once.
            subprocess.run([harness.binary("mailnet"), "up", "-d", file, "--dir", run_dir], check=True,
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            folder = os.path.join(run_dir, "deathstar.com", "mail", "vader", "new")
            harness.wait_for(lambda: os.listdir(folder), DEADLINE, "the queued message in vader's new/")
            (name,) = os.listdir(folder)
            with open(os.path.join(folder, name), "rb") as f:
                assert b"Subject: queued across down" in f.read()
            harness.wait_for(lambda: not queue_files(run_dir, "jaku.com"), DEADLINE, "jaku.com's queue to empty")


if __name__ == "__main__":
    tests = [test_mail_waiting_for_a_killed_node_arrives_at_once_when_it_is_started,
             test_mail_waiting_for_a_killed_node_arrives_at_once_when_it_is_restarted,
             test_up_over_a_run_folder_with_waiting_mail_delivers_it_once_every_node_is_ready,
             test_ctrl_c_on_a_foreground_up_leaves_no_process_running,
             test_mailnet_kill_leaves_an_on_failure_node_down_an_outside_kill_does_not,
             test_down_returns_with_no_process_left_and_the_queue_kept_for_the_next_up]
    chosen = [t for t in tests if t.__name__ in sys.argv[1:]] or tests
    harness.run_tests(chosen)
