"""Shared helpers for the benchmark scripts: loopback ports, processes we
start and stop by pid, waiting on conditions with deadlines, CPU time and
RSS from /proc, medians, and a mailnet network brought up with `mailnet up -d`.

Standard library only, for Debian's /usr/bin/python3.
"""
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
BIN_DIR = os.environ.get("MAILNET_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "bin")
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
DNSMASQ = "/usr/sbin/dnsmasq"
PYTHON = "/usr/bin/python3"  # the interpreter python3-aiosmtpd is installed for


def binary(name, bin_dir=None):
    path = os.path.join(bin_dir or BIN_DIR, name)
    if not os.path.exists(path):
        raise SystemExit(f"missing {path} (build first, or set MAILNET_BIN_DIR)")
    return path


def require(path, package):
    if not os.path.exists(path):
        raise SystemExit(f"missing {path}: install the Debian package {package}")


def free_ports(n, kind=socket.SOCK_STREAM):
    """n distinct free loopback ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, timeout, what):
    """Polls predicate until it returns a true value; raises at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def smtp_greets(port):
    """True once something on port answers with a 220 greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            ok = s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- /proc -----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime+stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_jiffies():
    """(busy, all) clock ticks of every core since boot, from /proc/stat: the
    share of the whole machine a run kept busy is the ratio of their deltas."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def children_cpu_seconds():
    """utime+stime of every child this process has waited for."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def status_kib(pid, key):
    """A kB figure from /proc/<pid>/status: VmRSS, VmHWM."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---- processes we start ----------------------------------------------------

class Started:
    """A child process we started; stopped by its pid only."""

    def __init__(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        self.proc = subprocess.Popen(argv, **kw)
        self.pid = self.proc.pid

    def stop(self, timeout=5):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode


def start_ready(argv, ready, timeout, what, **kw):
    """Started(argv), once ready() holds within timeout; stopped again if not."""
    p = Started(argv, **kw)
    try:
        wait_for(ready, timeout, what)
    except BaseException:
        p.stop()
        raise
    return p


def run_bounded(argv, timeout, **kw):
    """Runs argv to completion within timeout (killed by pid past it)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    p = subprocess.Popen(argv, **kw)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        raise TimeoutError(f"{argv[0]} did not finish within {timeout}s")
    return p.returncode, (out or b"").decode("utf-8", "replace")


# ---- a mailnet network -------------------------------------------------------

class Network:
    """`mailnet up -d` of a topology in a folder of its own; `down` on close."""

    def __init__(self, topology, workdir, timeout=60, bin_dir=None, env=None):
        self.bin_dir = bin_dir  # another build (an A/B of a change); default BIN_DIR
        self.env = dict(env or {})  # for the launcher and so its children (MAILNET_TLS_RESUMPTION=off, say)
        self.workdir = workdir
        self.run_dir = os.path.join(workdir, "run")
        self.topology_file = os.path.join(workdir, "topology.json")
        if "web" not in topology:  # not the fixed default port: benchmarks may run beside tests
            topology["web"] = {"listen": f"127.0.0.1:{free_ports(1)[0]}"}
        with open(self.topology_file, "w") as f:
            json.dump(topology, f)
        self.up_seconds = None
        self.timeout = timeout

    def up(self, fresh=True):
        """`mailnet up -d`; fresh=False keeps the run folder of an earlier up
        (its Maildirs), as a restart of the network does."""
        t0 = time.monotonic()
        # The launcher takes its children from MAILNET_BIN_DIR when set: pin it.
        env = dict(os.environ, **self.env, MAILNET_BIN_DIR=os.path.abspath(self.bin_dir or BIN_DIR))
        rc, out = run_bounded([binary("mailnet", self.bin_dir), "up", "-d", *(["--fresh"] if fresh else []),
                               self.topology_file, "--dir", self.run_dir], self.timeout, cwd=self.workdir, env=env)
        self.up_seconds = time.monotonic() - t0
        if rc != 0:
            self.down()
            raise RuntimeError(f"mailnet up failed ({rc}):\n{out[-3000:]}")
        return self

    def info(self):
        with open(os.path.join(self.run_dir, "network.json")) as f:
            return json.load(f)

    def pids(self):
        """{name: pid} of the resolver and every node."""
        return {n["name"]: n["pid"] for n in self.info()["nodes"] if n.get("pid")}

    def launcher_pid(self):
        return self.info().get("launcher_pid")

    def down(self, timeout=60):
        try:
            pids = list(self.pids().values())
            launcher = self.launcher_pid()
        except (OSError, ValueError):
            pids, launcher = [], None
        try:
            run_bounded([binary("mailnet", self.bin_dir), "down", "--dir", self.run_dir], timeout, cwd=self.workdir)
        except TimeoutError:
            pass
        # Whatever survived `down` (it should not) is ours: stop it by pid.
        for pid in pids + ([launcher] if launcher else []):
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


def count_files(folder):
    try:
        with os.scandir(folder) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def scratch_filesystem(kind, size_gib=8):
    """Where the run folders go. 'tmp': the system temp folder (or
    $MAILNET_BENCH_DIR). 'ext4': a fresh ext4 with its default journal, on a
    sparse image mounted through a loop device (root only), unmounted and
    removed at the end. 'ext4-nojournal': the same without a journal, as these
    VMs' own disk is formatted. The first, on these VMs, is ext4 without a
    journal where every inode deleted in the last 12 hours
    (dirtytime_expire_seconds) whose table block is cached is stepped over by
    each later inode allocation (recently_deleted() in fs/ext4/ialloc.c), so a
    benchmark's speed depends on what was deleted before it; a fresh file
    system has deleted nothing (the scripts delete only after the report)."""
    if kind == "tmp":
        yield os.environ.get("MAILNET_BENCH_DIR") or tempfile.gettempdir()
        return
    if kind not in ("ext4", "ext4-nojournal"):
        raise SystemExit(f"unknown --fs {kind}: tmp, ext4 or ext4-nojournal")
    if os.geteuid() != 0:
        raise SystemExit("--fs ext4 mounts a loop device and needs root; use --fs tmp")
    holder = tempfile.mkdtemp(prefix="mailnet-bench-fs-")
    image, mount_point = os.path.join(holder, "fs.img"), os.path.join(holder, "mnt")
    os.mkdir(mount_point)
    mounted = False
    before = os.environ.get("MAILNET_BENCH_DIR")
    try:
        with open(image, "wb") as f:
            f.truncate(size_gib << 30)
        # One inode per 4 KiB: a run stores hundreds of thousands of small files.
        features = ["-O", "^has_journal"] if kind == "ext4-nojournal" else []
        for argv in (["mkfs.ext4", "-q", "-F", "-i", "4096", *features, image],
                     ["mount", "-o", "loop", image, mount_point]):
            rc, out = run_bounded(argv, 120)
            if rc != 0:
                raise SystemExit(f"{' '.join(argv)}: exit {rc}: {out.strip()}")
        mounted = True
        os.environ["MAILNET_BENCH_DIR"] = mount_point
        yield mount_point
    finally:
        if before is None:
            os.environ.pop("MAILNET_BENCH_DIR", None)
        else:
            os.environ["MAILNET_BENCH_DIR"] = before
        if mounted:
            deadline = time.monotonic() + 60
            while subprocess.run(["umount", mount_point], capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    log(f"could not unmount {mount_point}; left mounted")
                    return
                time.sleep(0.5)
        remove_tree(holder)


def workdir(prefix):
    base = os.environ.get("MAILNET_BENCH_DIR")  # default: the system temp folder
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


def cleanup(folders):
    """Removes the run folders, after the report: on these VMs (ext4 without
    a journal, mounted with discard) removing 20,000 files takes about 70 s."""
    if folders:
        log(f"removing {len(folders)} run folder(s) ...")
    for f in folders:
        remove_tree(f)
    folders.clear()


# ---- numbers ---------------------------------------------------------------

def summary(values, fmt="{:,.0f}"):
    """'median (min..max)'."""
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def median(values):
    return statistics.median(values) if values else float("nan")


def machine():
    """Cores, load, disk: for the report."""
    cores = os.cpu_count()
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = ["?"]
    disk = "?"
    try:
        where = os.environ.get("MAILNET_BENCH_DIR") or tempfile.gettempdir()
        out = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", where],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        disk = out or disk
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{cores} cores, load {' '.join(load)}, run folders on {disk}"


def log(*args):
    print(*args, file=sys.stderr, flush=True)
