"""Issue 6: run, watch, kill and restart a network from any terminal."""
import json
import os
import re
import pty
import select
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def mailnet(*args, cwd=None, check=True, env=None, timeout=60):
    out = subprocess.run([harness.binary("mailnet"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env=env)
    if check:
        assert out.returncode == 0, f"mailnet {' '.join(args)} -> {out.returncode}: {out.stdout}{out.stderr}"
    return out


def status(run_dir):
    return {n["name"]: n for n in json.loads(mailnet("status", "--json", "--dir", run_dir).stdout)["nodes"]}


class Detached:
    """`mailnet up -d` in a folder of its own; `mailnet down` (or SIGKILL by pid) at the end."""

    def __init__(self, topo, name=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="mailnet-launcher-")
        self.cwd = self.tmp.name
        if name:
            topo["name"] = name
        self.topo = harness.with_web_port(topo)
        self.file = os.path.join(self.cwd, f"{topo['name']}.json")
        with open(self.file, "w") as f:
            json.dump(topo, f)
        self.run_dir = os.path.join(self.cwd, "run", topo["name"])

    def up(self, *extra, check=True):
        return mailnet("up", "-d", self.file, *extra, cwd=self.cwd, check=check)

    def pids(self):
        return harness.network_pids(self.run_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            # Every network under ./run: a test may start more than this one.
            runs = os.path.join(self.cwd, "run")
            for name in os.listdir(runs) if os.path.isdir(runs) else []:
                harness.stop_network(os.path.join(runs, name))
        finally:
            self.tmp.cleanup()
        return False


def run_on_terminal(args, env, until, timeout=20):
    """Runs args on a pseudo-terminal until `until` shows in its output; returns the output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)

    def read_chunk(wait):
        """The next bytes from the terminal, or b"" at EOF or when nothing comes within wait."""
        ready, _, _ = select.select([master], [], [], wait)
        if not ready:
            return b""
        try:
            return os.read(master, 65536)
        except OSError:  # the pty's other side closed
            return b""

    out = b""
    try:
        deadline = time.monotonic() + timeout
        while until.encode() not in out:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {until!r}: {out!r}"
            chunk = read_chunk(left)
            if not chunk and proc.poll() is not None:
                break
            out += chunk
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        while chunk := read_chunk(1):  # the rest, up to EOF
            out += chunk
    finally:
        if proc.poll() is None:
            # Its children too, by pid: one stuck before its exec would outlive it.
            children = {pid: harness.process_start(pid) for pid in harness.children_of(proc.pid)}
            proc.kill()
            proc.wait()
            harness.kill_processes({pid: start for pid, start in children.items() if start is not None})
        os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


def test_foreground_prefixes_and_colours():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        out = net.output()
        assert "jaku.com      | " in out and "resolver      | " in out, out
        assert "\033[" not in out, "colour codes on a pipe"
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "t.json")
        with open(file, "w") as f:
            json.dump(harness.two_domain_topology(), f)
        env = dict(os.environ)
        env.pop("NO_COLOR", None)
        with harness.network_stopped(os.path.join(tmp, "a")):
            code, out = run_on_terminal([harness.binary("mailnet"), "up", file, "--dir", os.path.join(tmp, "a")],
                                        env, "is up")
        assert code == 0, out
        assert "\033[" in out and "| " in out, out
        env["NO_COLOR"] = "1"
        with harness.network_stopped(os.path.join(tmp, "b")):
            code, out = run_on_terminal([harness.binary("mailnet"), "up", file, "--dir", os.path.join(tmp, "b")],
                                        env, "is up")
        assert code == 0 and "\033[" not in out, out


def test_progress_on_a_terminal_for_large_topologies():
    ports = harness.free_tcp_ports(12)
    topo = {"name": "big", "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
            "web": {"listen": f"127.0.0.1:{harness.free_tcp_port()}"},
            "domains": [{"name": f"d{i}.example", "listen": f"127.0.0.1:{p}", "users": ["u"]}
                        for i, p in enumerate(ports)]}
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "big.json")
        with open(file, "w") as f:
            json.dump(topo, f)
        with harness.network_stopped(os.path.join(tmp, "r")):
            code, out = run_on_terminal([harness.binary("mailnet"), "up", file, "--dir", os.path.join(tmp, "r")],
                                        dict(os.environ), "is up")
        assert code == 0, out
        assert "of 13 ready" in out, out
        # The same in the background, without colours: the terminal `up -d`
        # was typed in still sees the progress.
        env = dict(os.environ, NO_COLOR="1")
        run_dir = os.path.join(tmp, "d")
        try:
            # (its exit code is not looked at: the helper's Ctrl-C may reach it
            # between that line and its exit)
            _, out = run_on_terminal([harness.binary("mailnet"), "up", "-d", file, "--dir", run_dir], env,
                                     "is up in the background")
            assert "of 13 ready" in out and "\x1b[" not in out, out
        finally:
            harness.stop_network(run_dir)


def test_detached_lifecycle_from_a_second_process():
    topo = harness.two_domain_topology()
    with Detached(topo) as net:
        out = net.up()
        assert "is up in the background" in out.stdout, out.stdout
        # No flag needed: the only network under ./run.
        table = mailnet("status", cwd=net.cwd).stdout
        for word in ("NODE", "STATE", "PID", "ADDRESS", "UPTIME", "RECEIVED", "DELIVERED", "RELAYED", "QUEUED",
                     "BOUNCED", "resolver", "jaku.com", "deathstar.com"):
            assert word in table, table
        nodes = status(net.run_dir)
        assert all(n["state"] == "ready" and n["pid"] > 0 for n in nodes.values()), nodes
        first_pid = nodes["deathstar.com"]["pid"]

        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("rey@jaku.com", ["vader@deathstar.com", "finn@jaku.com"], b"Subject: counted\r\n\r\nx\r\n")
        harness.wait_for(lambda: status(net.run_dir)["deathstar.com"]["received"] == 1
                         and status(net.run_dir)["jaku.com"]["relayed"] == 1, 10, "counters")
        nodes = status(net.run_dir)
        assert nodes["jaku.com"]["received"] == 1 and nodes["jaku.com"]["delivered"] == 1, nodes["jaku.com"]
        assert nodes["jaku.com"]["relayed"] == 1, nodes["jaku.com"]

        assert mailnet("kill", "deathstar.com", cwd=net.cwd).stdout.strip() == "deathstar.com: killed"
        harness.wait_for(lambda: not harness.pid_alive(first_pid), 5, "the killed node to be gone")
        nodes = status(net.run_dir)
        assert nodes["deathstar.com"]["state"] == "killed" and nodes["deathstar.com"]["exit"] == "signal 9", nodes
        assert "already killed" in mailnet("kill", "deathstar.com", cwd=net.cwd, check=False).stderr

        mailnet("start", "deathstar.com", cwd=net.cwd)
        nodes = status(net.run_dir)
        assert nodes["deathstar.com"]["state"] == "ready" and nodes["deathstar.com"]["pid"] != first_pid
        second_pid = nodes["deathstar.com"]["pid"]

        mailnet("stop", "resolver", cwd=net.cwd)
        assert status(net.run_dir)["resolver"]["state"] == "stopped"
        mailnet("start", "resolver", cwd=net.cwd)
        mailnet("restart", "deathstar.com", cwd=net.cwd)
        nodes = status(net.run_dir)
        assert nodes["deathstar.com"]["state"] == "ready" and nodes["deathstar.com"]["pid"] != second_pid
        assert not harness.pid_alive(second_pid)
        # Restarted nodes keep their Maildirs.
        assert len(os.listdir(os.path.join(net.run_dir, "deathstar.com", "mail", "vader", "new"))) == 1

        logs = mailnet("logs", "jaku.com", cwd=net.cwd).stdout
        assert "event=accepted" in logs, logs
        all_logs = mailnet("logs", cwd=net.cwd).stdout
        assert "resolver " in all_logs and "deathstar.com | " in all_logs, all_logs
        assert "no node named" in mailnet("kill", "nowhere.example", cwd=net.cwd, check=False).stderr

        # A second up of a running network is refused.
        again = net.up(check=False)
        assert again.returncode == 1 and "already up" in again.stderr, again.stderr

        pids = net.pids()
        mailnet("down", cwd=net.cwd)
        for pid in pids:
            harness.wait_for(lambda: not harness.pid_alive(pid), 5, f"pid {pid} to exit after down")
        assert "no network is up" in mailnet("status", cwd=net.cwd, check=False).stderr


def test_logs_follow_stops_when_the_network_goes_down():
    topo = harness.two_domain_topology()
    with Detached(topo) as net:
        net.up()
        follower = subprocess.Popen([harness.binary("mailnet"), "logs", "jaku.com", "-f"], cwd=net.cwd,
                                    stdout=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
        reader.start()
        try:
            # Following before anything else happens (a slow start must not
            # find the network already down).
            harness.wait_for(lambda: any("event=ready" in line for line in lines), 15, "logs -f to print")
            with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
                s.sendmail("rey@jaku.com", ["finn@jaku.com"], b"Subject: followed\r\n\r\nx\r\n")
            mailnet("down", cwd=net.cwd)
            assert follower.wait(timeout=15) == 0
            reader.join(timeout=5)
            out = "".join(lines)
            assert "event=accepted" in out, out
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()


def test_several_networks_need_net():
    a, b = harness.two_domain_topology(), harness.two_domain_topology()
    with Detached(a, name="alpha") as net_a:
        net_a.up()
        b["name"] = "beta"
        file_b = os.path.join(net_a.cwd, "beta.json")
        with open(file_b, "w") as f:
            json.dump(b, f)
        beta_dir = os.path.join(net_a.cwd, "run", "beta")
        try:
            mailnet("up", "-d", file_b, cwd=net_a.cwd)
            out = mailnet("status", cwd=net_a.cwd, check=False)
            assert out.returncode != 0 and "--net" in out.stderr and "alpha" in out.stderr, out.stderr
            assert "network beta" in mailnet("status", "--net", "beta", cwd=net_a.cwd).stdout
            mailnet("down", "--net", "beta", cwd=net_a.cwd)
        finally:
            harness.stop_network(beta_dir)


def test_crash_is_shown_and_on_failure_restarts_with_backoff():
    topo = harness.two_domain_topology()
    topo["domains"][1]["restart"] = "on-failure"
    with Detached(topo) as net:
        net.up()
        jaku = status(net.run_dir)["jaku.com"]
        os.kill(jaku["pid"], signal.SIGKILL)  # not through mailnet: an unasked death
        harness.wait_for(lambda: status(net.run_dir)["jaku.com"]["state"] == "crashed", 5, "jaku.com to be crashed")
        assert status(net.run_dir)["jaku.com"]["exit"] == "signal 9"

        def crash_and_see_it_restarted(what):
            ds = status(net.run_dir)["deathstar.com"]
            os.kill(ds["pid"], signal.SIGKILL)
            harness.wait_for(lambda: status(net.run_dir)["deathstar.com"]["pid"] not in (0, ds["pid"])
                             and status(net.run_dir)["deathstar.com"]["state"] == "ready", 10, what)

        crash_and_see_it_restarted("deathstar.com to be restarted")
        assert status(net.run_dir)["deathstar.com"]["restarts"] == 1
        # deathstar.com's backoff has passed by now; jaku.com has no restart policy and stays down.
        assert status(net.run_dir)["jaku.com"]["state"] == "crashed" and status(net.run_dir)["jaku.com"]["restarts"] == 0

        # A second crash soon after waits twice as long.
        crash_and_see_it_restarted("deathstar.com to be restarted again")
        assert status(net.run_dir)["deathstar.com"]["restarts"] == 2
        with open(os.path.join(net.run_dir, "launcher.log")) as f:
            waits = re.findall(r"deathstar\.com\s*\| restarting in (\d+) ms", f.read())
        assert waits == ["500", "1000"], waits

        # Now make its next start fail before it is ever ready: a file where its
        # mail folder should be (set up before the kill, so there is no race).
        ds = status(net.run_dir)["deathstar.com"]
        mail = os.path.join(net.run_dir, "deathstar.com", "mail")
        os.rename(mail, mail + ".away")
        open(mail, "w").close()
        os.kill(ds["pid"], signal.SIGKILL)
        harness.wait_for(lambda: status(net.run_dir)["deathstar.com"]["state"] == "failed", 15, "the restart to fail")
        restarts = status(net.run_dir)["deathstar.com"]["restarts"]
        # Not respawned in a loop: it never became ready, so it stays failed.
        try:
            harness.wait_for(lambda: status(net.run_dir)["deathstar.com"]["restarts"] != restarts, 3, "a respawn")
            raise AssertionError("a node that never became ready was respawned")
        except AssertionError as e:
            if "respawned" in str(e):
                raise
        assert status(net.run_dir)["deathstar.com"]["state"] == "failed"


def test_fresh_keeps_or_empties_and_sigkilled_launcher_leftovers():
    topo = harness.two_domain_topology()
    with Detached(topo) as net:
        net.up()
        with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=10) as s:
            s.sendmail("rey@jaku.com", ["finn@jaku.com"], b"Subject: keep\r\n\r\nx\r\n")
        finn = os.path.join(net.run_dir, "jaku.com", "mail", "finn", "new")
        harness.wait_for(lambda: len(os.listdir(finn)) == 1, 5, "delivery")

        pids = net.pids()
        os.kill(pids[0], signal.SIGKILL)  # the launcher
        for pid in pids[1:]:
            harness.wait_for(lambda: not harness.pid_alive(pid), 5, f"child {pid} to die with the launcher")
        assert os.path.exists(os.path.join(net.run_dir, "mailnet.sock"))  # leftover

        net.up()  # detects the dead launcher, cleans up, keeps the mail
        assert len(os.listdir(finn)) == 1
        assert status(net.run_dir)["jaku.com"]["state"] == "ready"
        mailnet("down", cwd=net.cwd)

        net.up("--fresh")
        assert os.listdir(finn) == []
        mailnet("down", cwd=net.cwd)

        # --fresh never empties a folder that mailnet did not make.
        precious = os.path.join(net.cwd, "precious")
        os.makedirs(precious)
        with open(os.path.join(precious, "thesis.tex"), "w") as f:
            f.write("years of work")
        out = mailnet("up", "-d", "--fresh", net.file, "--dir", precious, cwd=net.cwd, check=False)
        assert out.returncode == 1 and "not a mailnet run folder" in out.stderr, out.stderr
        assert os.listdir(precious) == ["thesis.tex"]


if __name__ == "__main__":
    harness.run_tests([test_foreground_prefixes_and_colours, test_progress_on_a_terminal_for_large_topologies,
                       test_detached_lifecycle_from_a_second_process, test_logs_follow_stops_when_the_network_goes_down,
                       test_several_networks_need_net, test_crash_is_shown_and_on_failure_restarts_with_backoff,
                       test_fresh_keeps_or_empties_and_sigkilled_launcher_leftovers])
