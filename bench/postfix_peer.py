#!/usr/bin/python3
"""The Postfix peer: a private Postfix instance, set up from Debian's `postfix`
package, in a folder of its own, delivering its virtual domains into Maildirs
and relaying the rest by a transport map to given loopback ports.

    /usr/bin/python3 bench/postfix_peer.py      # self-check: one message in, stopped, removed

Needs root (Postfix's master runs as root and its daemons drop to the
`postfix` user) and the package installed. To install it without letting it
configure (or start) the system's own Postfix:

    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix

What it touches: only its folder. /etc/postfix/main.cf is neither read nor
written (with "No configuration" it does not even exist); the system service
is never started, stopped or signalled. How:

- `MAIL_CONFIG=DIR/etc` names the instance's own `config_directory`. Postfix
  insists on `alternate_config_directories` in the default main.cf only for a
  caller it does not trust (not root, or a set-gid program like postdrop and
  postqueue: mail_conf_suck() checks only when the directory comes from an
  unsafe environment or the effective uid is not 0). As root, `postfix -c DIR`
  and `MAIL_CONFIG=DIR` both work without it; nothing here runs postqueue or
  sendmail.
- `postfix check` (with MAIL_CONFIG) creates the queue directories with their
  owners, as `postfix start` would.
- `postfix start-fg` runs as our child in a session of its own: postfix-script
  checks the instance and runs the master as its child (`master -s`, which
  makes a process group of its own, holding every daemon it starts: none of
  them calls setsid). SIGTERM to the master (pid from the instance's pid
  file) stops them all (master_sigdeath() signals its own group), then
  postfix-script exits; whatever is left of the two groups after that is
  killed by group id.
  `start(direct=True)` runs `master -d` itself instead (no postfix-script).
- Errors: Postfix logs to syslog unless its stderr is a terminal, and these
  VMs have no syslog (/dev/log). `maillog_file = DIR/maillog` with the
  `postlog` service makes every daemon's log a file in the folder; under
  `start-fg` the master's own early errors land there too (under `master -d`
  they do not: they go to /dev/log and are lost). A failure to start quotes
  DIR/master.out (postfix-script's output) and the end of the maillog.

What each instance syncs: cleanup(8) fsyncs the queue file before smtpd
answers 250 (mail_stream_finish); virtual(8) writes the Maildir file in tmp/,
fsyncs it, and links it into new/ (no fsync of the folder); qmgr then
removes the queue file. The smtp(8) client removes its queue file only after
the next hop's 250.
"""
import os
import signal
import subprocess
import sys
import time

import lib

POSTFIX = "/usr/sbin/postfix"
MASTER = "/usr/lib/postfix/sbin/master"
MAILBOX_UID = 65534  # nobody: virtual(8) refuses uids below virtual_minimum_uid (100)

# chroot off ("n"): the daemons read the instance's files by their real paths.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def pgroup_pids(pgid):
    """Pids of the live processes in process group pgid (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def smaps_kib(pid):
    """{Rss, Pss, Private} in KiB from /proc/PID/smaps_rollup (Private: clean + dirty)."""
    r = {"Rss": 0, "Pss": 0, "Private": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    r[key] = int(rest.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    r["Private"] += int(rest.split()[0])
    except OSError:
        pass
    return r


def tree_cpu_seconds(pid, members):
    """CPU of a process, of every child it has waited for, and of the live
    members given (their own and their waited-for children's): a master's
    smtpd processes come and go, and their CPU ends up in its cutime+cstime."""
    def stat(p):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return [int(x) for x in fields[11:15]]  # utime stime cutime cstime
    total = sum(stat(pid))
    for p in members:
        if p != pid:
            try:
                total += sum(stat(p))
            except (OSError, IndexError):
                pass
    return total / lib.CLK_TCK


class Postfix:
    """One private Postfix instance in `work` (created by the caller, removed
    by the caller), SMTP on 127.0.0.1:port.

    domains: the virtual domains it delivers, each with `users`, into
    work/mail/<domain>/<user>/ (Maildir). relays: {domain: port} sent on by
    smtp(8) to [127.0.0.1]:port (no DNS). Clients from 127.0.0.0/8 may relay.
    """

    def __init__(self, work, port, domains, users=("bench",), relays=None, name=None, tls=None):
        self.work, self.port = work, port
        self.domains, self.users = list(domains), list(users)
        self.relays = dict(relays or {})
        self.name = name or (self.domains[0] if self.domains else "relay")
        self.etc = os.path.join(work, "etc")
        self.queue = os.path.join(work, "queue")
        self.data = os.path.join(work, "data")
        self.mail = os.path.join(work, "mail")
        self.maillog = os.path.join(work, "maillog")
        self.master = None  # what we started: the master, or `postfix start-fg`
        self._master_pid = None
        self.direct = False
        self.env = dict(os.environ, MAIL_CONFIG=self.etc)
        self.start_seconds = None
        # (certificate, key) PEM files: smtpd offers STARTTLS with them
        # (smtpd_tls_security_level = may) and the tlsmgr service runs.
        self.tls = tls

    def new_dir(self, domain, user="bench"):
        return os.path.join(self.mail, domain, user, "new")

    # ---- set-up -------------------------------------------------------------

    def configure(self):
        """Writes main.cf, master.cf and the maps, and creates the queue (postfix check)."""
        if os.geteuid() != 0:
            raise SystemExit("the Postfix peer runs a private master as root: run as root")
        lib.require(MASTER, "postfix")
        for d in (self.etc, self.queue, self.data, self.mail):
            os.makedirs(d, exist_ok=True)
        # The daemons run as `postfix` and deliver as nobody: they must reach the folder.
        os.chmod(self.work, 0o755)
        folder = os.path.dirname(os.path.abspath(self.work))
        for _ in range(64):
            if not os.stat(folder).st_mode & 0o001:
                raise SystemExit(f"{folder} is not searchable by others: Postfix's daemons (user postfix, "
                                 f"mailboxes as nobody) cannot reach {self.work}")
            if folder == "/":
                break
            folder = os.path.dirname(folder)
        os.chown(self.data, _uid("postfix"), -1)
        os.chown(self.mail, MAILBOX_UID, MAILBOX_UID)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": f"mx.{self.name}",
            "mydomain": self.name,
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.work,
            "virtual_mailbox_domains": ", ".join(self.domains),
            "virtual_mailbox_maps": f"texthash:{self.etc}/vmailbox",
            "virtual_mailbox_base": self.mail,
            "virtual_uid_maps": f"static:{MAILBOX_UID}",
            "virtual_gid_maps": f"static:{MAILBOX_UID}",
            "transport_maps": f"texthash:{self.etc}/transport",
            # No DNS: the next hop is an address in brackets, looked up with getaddrinfo.
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
        }
        if self.tls:
            main.update({
                "smtpd_tls_security_level": "may",
                # Read by smtpd before it drops root (pre-jail), so a 0600 key of root's is fine.
                "smtpd_tls_cert_file": os.path.abspath(self.tls[0]),
                "smtpd_tls_key_file": os.path.abspath(self.tls[1]),
                "smtpd_tls_loglevel": "0",
                # Postfix's defaults otherwise: session tickets (tlsmgr), TLS 1.2 and 1.3.
            })
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in main.items())
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
            if self.tls:  # the PRNG seed and the session cache; without it smtpd warns per connection
                f.write("tlsmgr unix - - n 1000? 1 tlsmgr\n")
        with open(os.path.join(self.etc, "vmailbox"), "w") as f:
            for d in self.domains:
                for u in self.users:
                    f.write(f"{u}@{d} {d}/{u}/\n")  # trailing slash: Maildir
                    # Created now (virtual(8) would on first delivery), as mailnet's are: a watch can start before.
                    for sub in ("", "/tmp", "/new", "/cur"):
                        path = os.path.join(self.mail, d, u) + sub
                        os.makedirs(path, exist_ok=True)
                        for q in (os.path.join(self.mail, d), path):
                            os.chown(q, MAILBOX_UID, MAILBOX_UID)
        with open(os.path.join(self.etc, "transport"), "w") as f:
            for d, p in self.relays.items():
                f.write(f"{d} smtp:[127.0.0.1]:{p}\n")
        rc, out = lib.run_bounded([POSTFIX, "check"], 60, env=self.env)
        if rc != 0:
            raise RuntimeError(f"postfix check for {self.etc} failed ({rc}): {out.strip()}\n{self.log_tail()}")
        return self

    # ---- start and stop -----------------------------------------------------

    def spawn(self):
        """Starts the instance in the foreground, as our child in a session
        of its own; returns at once.

        Default: `postfix start-fg` (postfix-script's checks, then the master
        as its child, `master -s`), which writes even the master's first
        errors (a port in use, a bad master.cf) to maillog_file. direct=True
        runs `master -d` instead, skipping postfix-script: faster, but an
        error before postlogd runs goes to syslog only (/dev/log, which these
        VMs lack), so it is lost; use it once the set-up is known to work."""
        argv = [MASTER, "-d"] if self.direct else [POSTFIX, "start-fg"]
        with open(os.path.join(self.work, "master.out"), "wb") as out:
            self.master = lib.Started(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        return self

    def master_pid(self):
        """The master's pid: ours (direct) or postfix-script's child, from its pid file."""
        if self.direct:
            return self.master.pid
        if not self._master_pid:
            try:
                with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                    self._master_pid = int(f.read().strip())
            except (OSError, ValueError):
                return None
        return self._master_pid

    def greets(self):
        if self.master and self.master.proc.poll() is not None:
            raise RuntimeError(f"postfix master for {self.name} exited ({self.master.proc.returncode}):\n"
                               f"{self.log_tail()}")
        return lib.smtp_greets(self.port)

    def start(self, timeout=30, direct=False):
        self.direct = direct
        t0 = time.monotonic()
        self.spawn()
        try:
            lib.wait_for(self.greets, timeout, f"postfix {self.name} on port {self.port} to greet")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def groups(self):
        """The process group we started, and the master's (`master -s` makes its own)."""
        if not self.master:
            return []
        master = self.master_pid()
        return sorted({self.master.pid} | ({master} if master else set()))

    def pids(self):
        """The master and every daemon it runs (and postfix-script waiting for it)."""
        return sorted(p for g in self.groups() for p in pgroup_pids(g))

    def cpu_seconds(self):
        return tree_cpu_seconds(self.master_pid(), self.pids())

    def memory_kib(self):
        """Rss, Pss and Private summed over the instance's processes, and their count."""
        total = {"Rss": 0, "Pss": 0, "Private": 0, "processes": 0}
        master = self.master_pid()
        for p in pgroup_pids(master) if master else []:  # not postfix-script's shell
            m = smaps_kib(p)
            for k, v in m.items():
                total[k] += v
            total["processes"] += 1
        return total

    def stop(self, timeout=15):
        if not self.master:
            return
        groups = self.groups()
        if self.master.proc.poll() is None:
            master = self.master_pid()
            try:
                # The master stops its process group (every daemon), then
                # itself; postfix-script, waiting for it, then exits.
                os.kill(master or self.master.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.master.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + timeout
        while any(pgroup_pids(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.02)
        for g in groups:  # what is left of the groups of the processes we started
            if pgroup_pids(g):
                try:
                    os.killpg(g, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.master.stop(timeout)
        self.master = None
        self._master_pid = None

    def log_tail(self, n=20):
        lines = []
        for path in (os.path.join(self.work, "master.out"), self.maillog):
            try:
                with open(path, errors="replace") as f:
                    lines += f.read().splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(lines)

    def __enter__(self):
        return self.configure().start()

    def __exit__(self, *exc):
        self.stop()


def _uid(user):
    import pwd
    return pwd.getpwnam(user).pw_uid


def main():
    """Self-check: one message through one instance; stopped and removed."""
    import smtplib
    work = lib.workdir("mailnet-bench-postfix-")
    try:
        port = lib.free_ports(1)[0]
        with Postfix(work, port, ["jaku.com"]) as pf:
            lib.log(f"postfix on {port} greeted after {pf.start_seconds:.3f}s; processes {pf.pids()}")
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.sendmail("load@client.example", ["bench@jaku.com"], "Subject: check\r\n\r\nhello\r\n")
            new = pf.new_dir("jaku.com")
            lib.wait_for(lambda: lib.count_files(new) == 1, 30, f"the message in {new}")
            lib.log(f"delivered into {new}; memory {pf.memory_kib()}; cpu {pf.cpu_seconds():.2f}s")
            pids = pf.pids()
        left = [p for p in pids if lib.pid_alive(p)]
        if left:
            raise SystemExit(f"left running: {left}")
        lib.log("stopped; nothing left running")
    finally:
        lib.remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
