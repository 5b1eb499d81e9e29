"""Helpers for end-to-end tests: free loopback ports, a real `mailnet up`
process, waiting on conditions with deadlines, and cleanup by pid.

Only the standard library, so Debian's /usr/bin/python3 runs it as is.
"""
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN_DIR = os.path.abspath(os.environ.get("MAILNET_BIN_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "bin"))
os.environ["MAILNET_BIN_DIR"] = BIN_DIR  # children run in other folders: pass it on absolute
SOURCE_DIR = os.environ.get("MAILNET_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")

# Sanitizer reports of every process a test starts, whoever started it (the
# harness's foreground launcher, a detached one, `mailnet run`, a resolver run
# alone, the nodes of any of them): with log_path, ASan, LSan and UBSan write
# each process's report to SANITIZER_LOG_DIR/report.<pid> instead of its
# stderr, which a detached launcher or a test may never read. run_tests and
# Network read them (take_sanitizer_reports); nothing is set when the build
# has no sanitizer, the variables are then simply unused.
SANITIZER_LOG_DIR = tempfile.mkdtemp(prefix="mailnet-e2e-sanitizer-")
os.chmod(SANITIZER_LOG_DIR, 0o1777)  # a process a test runs as nobody writes its report too
atexit.register(shutil.rmtree, SANITIZER_LOG_DIR, True)
for _variable in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
    _prior = os.environ.get(_variable, "")
    os.environ[_variable] = (_prior + ":" if _prior else "") + "log_path=" + os.path.join(SANITIZER_LOG_DIR, "report")


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.path.exists(path):
        raise SystemExit(f"missing binary {path} (set MAILNET_BIN_DIR)")
    return path


def _shipped_ports():
    """The fixed ports of the shipped scenarios: scenario tests bind them, so
    no other test may take one (49152 lies in the kernel's ephemeral range)."""
    ports = set()
    folder = os.path.join(SOURCE_DIR, "scenarios")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name)) as f:
            topo = json.load(f)
        web = topo.get("web", {})
        web_listen = (web.get("listen", "127.0.0.1:8025") if isinstance(web, dict)
                      else "127.0.0.1:8025" if web is not False else "")
        for listen in ([topo.get("resolver", {}).get("listen", ""), web_listen]
                       + [d.get("listen", "") for d in topo.get("domains", [])]
                       + [d.get("submission") or "" for d in topo.get("domains", [])]):
            if ":" in listen:
                ports.add(int(listen.rsplit(":", 1)[1]))
    return ports


SHIPPED_PORTS = _shipped_ports()


# Every port this process has handed out: never handed out twice, so that the
# ports of one topology differ even when picked for different protocols (a
# TCP port for a node and, later, the same number free for UDP and TCP for
# the resolver, once the node's probe socket was closed).
_GIVEN = set()


def _free_port(kind, held):
    while True:
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if port not in SHIPPED_PORTS and port not in _GIVEN:
            _GIVEN.add(port)
            return s
        held.append(s)  # keep it bound so the next bind gets another


def _free_ports(kind, n):
    held, found = [], []
    try:
        for _ in range(n):
            found.append(_free_port(kind, held))
        return [s.getsockname()[1] for s in found]
    finally:
        for s in held + found:
            s.close()


def free_tcp_port():
    return _free_ports(socket.SOCK_STREAM, 1)[0]


def free_udp_port():
    """A port free for UDP, and for TCP too: the resolver serves both on it."""
    for _ in range(50):
        port = _free_ports(socket.SOCK_DGRAM, 1)[0]
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            probe.close()
    raise AssertionError("no port free for both UDP and TCP")


def free_tcp_ports(n):
    """n distinct free ports (held open together so they differ)."""
    return _free_ports(socket.SOCK_STREAM, n)


def wait_for(predicate, timeout, what):
    """Polls predicate until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_naming(folder):
    """Pids of the processes whose command line names this folder (every
    child of a network gets its run folder in its arguments). Read-only: a
    test uses it to show that nothing was left running, never to kill."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if any(folder in a for a in argv) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def network_pids(run_dir):
    """The launcher's and the children's pids from run_dir/network.json, or []."""
    try:
        with open(os.path.join(run_dir, "network.json")) as f:
            doc = json.load(f)
        return [doc["launcher_pid"]] + [n["pid"] for n in doc["nodes"] if n["pid"]]
    except (OSError, ValueError, KeyError):
        return []


def children_of(parent):
    """Pids whose parent is parent, from /proc/<pid>/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def process_start(pid):
    """When pid started (clock ticks since boot), or None when it is gone or a
    zombie. With the pid it names one process: a pid may be reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def launcher_pid(run_dir):
    """The pid in run_dir/launcher.pid, or 0."""
    try:
        with open(os.path.join(run_dir, "launcher.pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def network_processes(run_dir):
    """{pid: start time} of the network in run_dir: its launcher (network.json
    and launcher.pid), the children network.json names, and the launcher's
    children by parent pid (network.json names none during bring-up)."""
    pids = set(network_pids(run_dir))
    launchers = {p for p in (launcher_pid(run_dir), *network_pids(run_dir)[:1]) if p}
    pids |= launchers
    for launcher in launchers:
        pids.update(children_of(launcher))
    found = {pid: process_start(pid) for pid in pids if runs_our_binary(pid)}
    return {pid: start for pid, start in found.items() if start is not None}


def runs_our_binary(pid):
    """pid runs one of mailnet's binaries (a stale network.json may name pids
    that other processes have by now)."""
    try:
        return os.path.dirname(os.readlink(f"/proc/{pid}/exe")) == os.path.realpath(BIN_DIR)
    except OSError:
        return False


def kill_processes(processes):
    """SIGKILL to each process of {pid: start time} that is still that process."""
    for pid, start in processes.items():
        if process_start(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_network(run_dir, timeout=60):
    """`mailnet down` for the network in run_dir, then SIGKILL, by pid, to its
    launcher and every process it started that is still there (a launcher
    that does not answer, a child stuck between fork and exec). For a test's
    finally: it never raises, also when nothing runs there."""
    processes = network_processes(run_dir)
    if not processes:
        return
    try:
        subprocess.run([binary("mailnet"), "down", "--dir", run_dir], capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass
    kill_processes(processes)


@contextlib.contextmanager
def network_stopped(run_dir):
    """Whatever happens inside, no process of the network in run_dir (started
    with `up -d`, `run --keep` or any way) is left running at the end."""
    try:
        yield
    finally:
        stop_network(run_dir)


class Network:
    """A running `mailnet up` on a topology written to a temporary folder."""

    def __init__(self, topology, workdir=None):
        self.tmp = None
        if workdir is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="mailnet-e2e-")
            workdir = self.tmp.name
        self.workdir = workdir
        self.topology = with_web_port(topology)
        self.topology_file = os.path.join(workdir, "topology.json")
        with open(self.topology_file, "w") as f:
            json.dump(topology, f, indent=2)
        self.run_dir = os.path.join(workdir, "run")
        self.proc = None
        self.lines = []
        self.lock = threading.Lock()
        self.reader = None

    def start(self, extra_args=(), wait_ready=True, timeout=30, preexec_fn=None, env=None):
        """env: variables to set for the launcher (and so its children) on top of ours."""
        self.proc = subprocess.Popen(
            [binary("mailnet"), "up", self.topology_file, "--dir", self.run_dir, *extra_args],
            cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=preexec_fn, env={**os.environ, **env} if env else None)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if wait_ready:
            self.wait_output("is up", timeout)
        return self

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)

    def output(self):
        with self.lock:
            return "\n".join(self.lines)

    def wait_output(self, text, timeout=30):
        def seen():
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                self.reader.join(timeout=2)
                if text in self.output():
                    return True
                raise AssertionError(f"mailnet exited ({self.proc.returncode}) before '{text}':\n{self.output()}")
            return False
        wait_for(seen, timeout, f"'{text}' from mailnet up")

    def child_pids(self):
        with open(os.path.join(self.run_dir, "network.json")) as f:
            return {n["name"]: n["pid"] for n in json.load(f)["nodes"] if n["pid"]}

    def domain_dir(self, domain):
        return os.path.join(self.run_dir, domain)

    def maildir_new(self, domain, user):
        return os.path.join(self.run_dir, domain, "mail", user, "new")

    def messages(self, domain, user):
        folder = self.maildir_new(domain, user)
        if not os.path.isdir(folder):
            return []
        out = []
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                out.append(f.read())
        return out

    def wait_messages(self, domain, user, count, timeout=15):
        return wait_for(lambda: len(self.messages(domain, user)) >= count and self.messages(domain, user),
                        timeout, f"{count} message(s) in {domain}/{user}")

    def stop(self, timeout=15):
        """SIGTERM to the launcher (it stops its children); SIGKILL if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.reader:
            self.reader.join(timeout=5)
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        # The launcher's children by network.json, and by parent pid too:
        # network.json names no child during bring-up, and a child forked but
        # stuck before its exec has no PR_SET_PDEATHSIG yet and would outlive
        # the launcher.
        processes = network_processes(self.run_dir)
        if self.proc is not None:
            for pid in [self.proc.pid, *children_of(self.proc.pid)]:
                start = process_start(pid)
                if start is not None:
                    processes.setdefault(pid, start)
        self.stop()
        # The children die with the launcher (PR_SET_PDEATHSIG); make sure,
        # by pid, of the ones this test started.
        kill_processes(processes)
        if self.tmp:
            self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write("---- mailnet output ----\n" + self.output() + "\n")
        self.cleanup()
        # Under the sanitizer build, a report from any child fails the test
        # (from its output, and from the report files when log_path is set).
        report = sanitizer_report(self.output())
        if exc[0] is None:
            report = "\n".join(r for r in (report, take_sanitizer_reports()) if r)
        if report and exc[0] is None:
            raise AssertionError("sanitizer report from a child process:\n" + report)
        return False


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error: ")


def sanitizer_report(output):
    """The lines around the first sanitizer report in output, or ''."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            return "\n".join(lines[max(0, i - 2):i + 30])
    return ""


def take_sanitizer_reports():
    """The sanitizer reports written to SANITIZER_LOG_DIR since the last call,
    or '' (each file is removed once read, so the next test is not blamed).
    A file without an error (a warning alone) is not a report."""
    found = []
    for name in sorted(os.listdir(SANITIZER_LOG_DIR)):
        path = os.path.join(SANITIZER_LOG_DIR, name)
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            os.unlink(path)
        except OSError:
            continue
        report = sanitizer_report(text)
        if report:
            found.append(f"{name}:\n{report}")
    return "\n".join(found)


def with_web_port(topology):
    """The topology with a free port for the launcher's web server, unless it
    names one or turns it off: its default, 8025, is fixed, and tests run side
    by side."""
    if "web" not in topology:
        topology["web"] = {"listen": f"127.0.0.1:{free_tcp_port()}"}
    return topology


def web_url(topology):
    """The launcher's web server of a topology made by with_web_port."""
    return f"http://{topology['web']['listen']}"


def two_domain_topology(name="e2e", **domain_extra):
    jaku_port, deathstar_port, web_port = free_tcp_ports(3)
    return {
        "name": name,
        "resolver": {"listen": f"127.0.0.1:{free_udp_port()}"},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "defaults": {"retry": {"first": "200ms", "max": "1s", "give_up_after": "1m"}},
        "domains": [
            {"name": "jaku.com", "listen": f"127.0.0.1:{jaku_port}", "users": ["rey", "finn", "obiwan"],
             **domain_extra},
            {"name": "deathstar.com", "listen": f"127.0.0.1:{deathstar_port}", "users": ["vader", "tarkin"],
             **domain_extra},
        ],
    }


def relay_in_plain_text(topology):
    """The topology with policy.tls_relay "off" for every node, for a test
    whose mail goes to a FakeSmtpPeer standing in for a node: the peer has no
    certificate from the network's CA (nor STARTTLS), so under the default,
    "verify", it is an impostor and gets no mail (test_tls.py shows that)."""
    topology.setdefault("defaults", {}).setdefault("policy", {})["tls_relay"] = "off"
    return topology


def port_of(topology, domain):
    for d in topology["domains"]:
        if d["name"] == domain:
            return int(d["listen"].rsplit(":", 1)[1])
    raise KeyError(domain)


_tracked_sockets = []


def tracked(sock):
    """sock, to be closed when the test that opened it ends, however it ends
    (run_tests closes every tracked socket after each test)."""
    _tracked_sockets.append(sock)
    return sock


def close_tracked_sockets():
    while _tracked_sockets:
        _tracked_sockets.pop().close()


def run_tests(tests, exit=True):
    """Runs each test function; prints 'N passed, N failed' and exits non-zero
    on failure (or, with exit=False, returns the exit code, for callers that
    still have a network to close).

    Words on the command line pick the tests whose names contain all of them,
    so any one test runs alone: `python3 tests/e2e/test_launcher.py colours`.
    Every test sets up what it needs itself (or shares only a network started
    in the file's main), so the order and the selection do not matter."""
    words = sys.argv[1:]
    tests = [t for t in tests if all(w in t.__name__ for w in words)]
    if not tests:
        print(f"no test of {os.path.basename(sys.argv[0])} has a name containing {' and '.join(words)}",
              file=sys.stderr)
        if exit:
            sys.exit(2)
        return 2
    passed = failed = 0
    for test in tests:
        report = ""
        try:
            try:
                test()
            finally:
                close_tracked_sockets()
                # A sanitizer report from any process the test started fails it.
                report = take_sanitizer_reports()
            if report:
                raise AssertionError("sanitizer report from a process this test started:\n" + report)
            print(f"PASS {test.__name__}", flush=True)
            passed += 1
        except Exception as e:  # a test failure of any kind is reported, not raised
            import traceback
            traceback.print_exc()
            if report and report not in str(e):
                print("sanitizer report from a process this test started:\n" + report, flush=True)
            print(f"FAIL {test.__name__}: {e}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    if exit:
        sys.exit(1 if failed else 0)
    return 1 if failed else 0


class FakeSmtpPeer:
    """A small threaded SMTP server on a loopback port, standing in for a
    node (usually a stopped one, whose port the resolver still names).

    By default it greets, answers EHLO with `name` and `capabilities`, HELO,
    MAIL, RCPT, DATA (354, then the data up to the lone dot), RSET, NOOP and
    QUIT, and takes every message. A test changes that with `replies` (verb ->
    reply, or a callable (line, session) -> reply or None for the default) or
    by overriding reply(verb, line, session) in a subclass. Verbs: EHLO,
    HELO, MAIL, RCPT, DATA, DOT (the end of the data), QUIT, RSET, NOOP and
    any other command's first four letters, upper case. A reply is a str
    (lines joined by CRLF, the last CRLF added here) or bytes (sent as they
    are). After a reply whose last line is a 421, or when a hook sets
    session["close"], the connection is closed.

    greeting=None accepts connections and never says anything (they are
    closed by close()). end_delay: seconds to wait before the reply to the
    end of the data.

    It records, under self.lock: sessions (one dict per connection: number
    from 1, lines (every command), early (commands whose next command had
    already arrived before their reply: pipelining), mails (MAIL commands
    on it), transaction (the one open), delivered (messages taken on it),
    quit, stored_at and ended (time.time())); transactions (one dict per
    MAIL command, refused or not: number from 1, session, rcpts offered,
    accepted, mail_time (time.monotonic()), reply to MAIL, message once the
    data was taken); messages (each message taken, its lines with CRLF,
    without the dot)."""

    def __init__(self, port, greeting="220 fake ESMTP", name="fake", capabilities=("PIPELINING",), replies=None,
                 end_delay=0, unknown="502 5.5.1 fake", backlog=8, session_timeout=None):
        self.greeting, self.name, self.capabilities = greeting, name, tuple(capabilities)
        self.replies, self.end_delay, self.unknown = dict(replies or {}), end_delay, unknown
        self.session_timeout = session_timeout
        self.lock = threading.Lock()
        self.sessions, self.transactions, self.messages = [], [], []
        self._conns, self._threads, self._closed = set(), [], False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(backlog)
        self._acceptor = threading.Thread(target=self._serve, daemon=True)
        self._acceptor.start()

    @property
    def connections(self):
        with self.lock:
            return len(self.sessions)

    def delivered(self):
        """The messages taken, in the order of their connections."""
        with self.lock:
            return [m for s in self.sessions for m in s["delivered"]]

    def ehlo_reply(self):
        lines = [self.name, *self.capabilities]
        return "\r\n".join(("250 " if i == len(lines) - 1 else "250-") + text for i, text in enumerate(lines))

    def default_reply(self, verb, line, session):
        txn = session["transaction"]
        if verb == "EHLO":
            return self.ehlo_reply()
        if verb == "HELO":
            return f"250 {self.name}"
        if verb == "MAIL":
            return "250 ok"
        if verb == "RCPT":
            return "250 ok" if txn else "503 5.5.1 no MAIL"
        if verb == "DATA":
            if not txn:
                return "503 5.5.1 no MAIL"
            return "354 go on" if txn["accepted"] else "554 5.5.1 no valid recipients"
        if verb == "DOT":
            return "250 stored"
        if verb == "QUIT":
            return "221 bye"
        if verb in ("RSET", "NOOP"):
            return "250 ok"
        return self.unknown

    def reply(self, verb, line, session):
        """The reply to one command (line: the command's bytes, without CRLF)."""
        r = self.replies.get(verb)
        if callable(r):
            r = r(line, session)
        return self.default_reply(verb, line, session) if r is None else r

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self._closed:
                    conn.close()
                    return
                session = {"number": len(self.sessions) + 1, "lines": [], "early": [], "mails": 0,
                           "transaction": None, "delivered": [], "quit": False, "stored_at": None, "ended": None,
                           "close": False}
                self.sessions.append(session)
                self._conns.add(conn)
                if self.greeting is None:
                    continue  # never greets; closed with the peer
                thread = threading.Thread(target=self._session, args=(conn, session), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _send(self, conn, reply):
        conn.sendall(reply if isinstance(reply, bytes) else reply.encode() + b"\r\n")
        text = reply.decode("latin-1") if isinstance(reply, bytes) else reply
        return text.rstrip("\r\n").split("\r\n")[-1].startswith("421")

    def _session(self, conn, s):
        buf = b""

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            text, buf = buf.split(b"\r\n", 1)
            return text

        try:
            conn.settimeout(self.session_timeout)
            self._send(conn, self.greeting)
            while (raw := line()) is not None:
                s["lines"].append(raw)
                if buf:  # the next command arrived before this one's reply
                    s["early"].append(raw)
                verb = raw[:4].decode("latin-1").upper()
                if verb == "MAIL":
                    with self.lock:
                        txn = {"number": len(self.transactions) + 1, "session": s["number"], "rcpts": [],
                               "accepted": [], "mail_time": time.monotonic(), "reply": None, "message": None}
                        self.transactions.append(txn)
                        s["mails"] += 1
                    s["transaction"] = txn
                elif verb == "RCPT" and s["transaction"] and b"<" in raw:
                    s["transaction"]["rcpts"].append(raw[raw.index(b"<") + 1:raw.index(b">")].decode())
                reply = self.reply(verb, raw, s)
                reply_text = reply.decode("latin-1") if isinstance(reply, bytes) else reply
                if verb == "MAIL":
                    txn["reply"] = reply_text
                    if not reply_text.startswith("2"):
                        s["transaction"] = None
                elif verb == "RCPT" and s["transaction"] and reply_text.startswith("2"):
                    s["transaction"]["accepted"].append(s["transaction"]["rcpts"][-1])
                elif verb == "RSET":
                    s["transaction"] = None
                elif verb == "QUIT":
                    s["quit"] = True
                closing = self._send(conn, reply) or verb == "QUIT"
                if verb == "DATA" and reply_text.startswith("354"):
                    data = []
                    while (text := line()) not in (None, b"."):
                        data.append(text + b"\r\n")
                    if text is None:
                        return
                    time.sleep(self.end_delay)
                    reply = self.reply("DOT", b".", s)
                    if (reply.decode("latin-1") if isinstance(reply, bytes) else reply).startswith("2"):
                        message = b"".join(data)
                        with self.lock:
                            if s["transaction"]:
                                s["transaction"]["message"] = message
                            s["delivered"].append(message)
                            s["stored_at"] = time.time()
                            self.messages.append(message)
                    s["transaction"] = None
                    closing = self._send(conn, reply)
                if closing or s["close"]:
                    return
        except OSError:
            pass
        finally:
            s["ended"] = time.time()
            with self.lock:
                self._conns.discard(conn)
            conn.close()

    def close(self):
        """Frees the port and ends every connection and thread. shutdown()
        wakes the thread blocked in accept(); close() alone would leave the
        port listening until that thread returns."""
        with self.lock:
            self._closed = True
            conns = list(self._conns)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._acceptor.join(timeout=5)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=5)
        with self.lock:
            for c in self._conns:  # the held ones, which no thread serves
                c.close()
            self._conns.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
