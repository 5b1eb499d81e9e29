#!/usr/bin/python3
"""A thousand domains on one machine: `mailnet up -d` of a generated topology
of N domains (one user each), then

- the time until `up -d` returns (every node ready), and the wall and CPU
  time of the `up -d` process itself before the launcher goes to the
  background (the run folder, the certificates; the wall time ends at the
  detached launcher's start, to 10 ms),
- memory per idle node from /proc/PID/smaps_rollup: RSS, PSS and private
  (Private_Clean + Private_Dirty: what the node costs beyond the pages it
  shares with the other nodes), and the launcher's and the resolver's,
- how long `mailnet status`, GET /api/v1/network and the dashboard's page
  (GET /) take,
- with --send K: every domain sends K messages, one to each of K other
  domains picked at random (seeded), at most --max-messages in all; the
  time until every one is in its recipient's Maildir `new/` and nothing is
  queued or bounced (zero loss is counted, not assumed), while `mailnet
  status` and GET /api/v1/network are timed once a second,
- the time `mailnet down` takes, the whole machine's CPU in that time
  (/proc/stat: every process and the kernel), the threads per node just
  before it, and from the launcher's last line in launcher.log, how long its
  stop took (SIGTERM to every node, each reaped, then the resolver) and the
  launcher's own CPU in it.

    /usr/bin/python3 bench/many_domains.py [--domains 1000] [--send 5] [--rounds 1] [--no-dkim | --kept-keys [--one-key]]
                                           [--before-bin OTHER/bin]

With --before-bin, every round runs the same size with that build too
(mailnet-before), the two alternating (which goes first swaps each round),
and the table adds each figure's ratio of medians (this build / before).

Ports: N + 2 ports (the nodes, the resolver's UDP and TCP, the web server) in
one contiguous range below the kernel's ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range), so that no outgoing connection of
this machine (the nodes' relay, other people's tests, which ask the kernel for
port 0) is handed one of them between the check and `up`. The range is
checked by binding every port of it (TCP, and UDP too for the resolver's) and
holding them all until just before `up`; a taken port moves the search past
it. Ports below 10000 are never used (the shipped scenarios' fixed ports).

Clean-up: the run goes into a temporary folder removed at the end. On any
failure `mailnet down` is tried, then every process whose command line names
that folder (only ours can: the folder name is new) and whose owner is us is
sent SIGKILL by its pid, the launcher included.

Heavy: 1,000 domains are 1,000 processes. Run it on a quiet machine, and few
times on a shared one.
"""
import argparse
import json
import os
import random
import signal
import smtplib
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import lib


# ---- ports ---------------------------------------------------------------------

def ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def hold_port_range(count, lowest=10000):
    """(first port, sockets held) for count consecutive free loopback ports
    below the ephemeral range; the last port is checked for UDP as well (the
    resolver's). Raises when none is found."""
    eph_lo, _ = ephemeral_range()
    base = lowest
    while base + count <= eph_lo:
        held, moved = [], False
        try:
            for port in range(base, base + count):
                kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if port == base + count - 2 else [])
                for kind in kinds:
                    s = socket.socket(socket.AF_INET, kind)
                    try:
                        s.bind(("127.0.0.1", port))
                    except OSError:
                        s.close()
                        base = port + 1  # past the taken one
                        moved = True
                        break
                    held.append(s)
                if moved:
                    break
        except BaseException:
            for s in held:
                s.close()
            raise
        if not moved:
            return base, held
        for s in held:
            s.close()
    raise SystemExit(f"no {count} consecutive free loopback ports between {lowest} and {eph_lo}")


# ---- processes of the run ----------------------------------------------------

def processes_of(folder):
    """Pids of our processes whose command line names folder."""
    me, found = os.getuid(), []
    key = folder.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if key in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:160]
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return f"{pid} ({state}) {cmd}"
    except OSError:
        return f"{pid} (gone)"


def kill_leftovers(folder):
    pids = processes_of(folder)
    deadline = time.monotonic() + 5  # a process on its way out is given a moment
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if lib.pid_alive(p)]
    for pid in pids:
        lib.log(f"  leftover: {describe(pid)}")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pids:
        lib.log(f"  killed {len(pids)} leftover process(es) by pid: {pids}")
    lib.wait_for(lambda: not any(lib.pid_alive(p) for p in pids), 30, "the leftovers to go")


# ---- memory --------------------------------------------------------------------

def smaps_rollup(pid):
    """{'Rss': kB, 'Pss': kB, 'Private': kB} of a process."""
    out = {"Rss": 0, "Pss": 0, "Private": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key] = int(rest.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                out["Private"] += int(rest.split()[0])
    return out


def run_seconds(pid):
    """CPU time a process has run, from /proc/PID/schedstat (nanoseconds; the
    clock ticks of /proc/PID/stat miss most of a 10 ms start)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def started_at(pid):
    """When a process started, in seconds of CLOCK_BOOTTIME (/proc/PID/stat
    field 22, in clock ticks: 10 ms steps)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def mib(kib):
    return kib / 1024


# ---- the run -------------------------------------------------------------------

def threads_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def timed(fn):
    t0 = time.monotonic()
    value = fn()
    return time.monotonic() - t0, value


def launcher_stop_figures(run_dir):
    """(seconds, launcher CPU seconds) of the launcher's stop, from its last
    line in launcher.log: "mailnet: stopped N in X ms (the launcher's CPU: Y
    ms)"; NaN for a build that does not write it."""
    try:
        with open(os.path.join(run_dir, "launcher.log"), encoding="utf-8", errors="replace") as f:
            lines = [x for x in f if x.startswith("mailnet: stopped ")]
        words = lines[-1].replace("(", " ").replace(")", " ").split()
        return int(words[4]) / 1e3, int(words[-2]) / 1e3
    except (OSError, IndexError, ValueError):
        return float("nan"), float("nan")


def mailnet(args, run_dir, timeout, env):
    return lib.run_bounded([lib.binary("mailnet", env["MAILNET_BIN_DIR"]), *args, "--dir", run_dir], timeout, env=env)


def run_with_cpu(argv, timeout, env):
    """(exit code, output, CPU seconds of the process itself): wait4's
    rusage, without its children (a detached launcher is never waited for)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(p.pid, signal.SIGKILL)
            os.wait4(p.pid, 0)
            raise TimeoutError(f"{argv[0]} did not finish within {timeout}s")
        time.sleep(0.01)
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout)
    text = (out[0] if out else b"").decode("utf-8", "replace")
    return p.returncode, text, usage.ru_utime + usage.ru_stime


def get_page(web_port):
    """The dashboard's page (GET /): its size in bytes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as r:
        return len(r.read())


def get_network(web_port):
    req = urllib.request.Request(f"http://127.0.0.1:{web_port}/api/v1/network")
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return len(json.loads(body)["nodes"])


def send_one(port, sender_domain, targets, seq):
    """One connection to the sender's node; one message to u@<target> each."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo(sender_domain)
        for i, t in enumerate(targets):
            msg = (f"From: u@{sender_domain}\r\nTo: u@{t}\r\nSubject: many {seq}-{i}\r\n\r\n"
                   f"from {sender_domain} to {t}\r\n")
            s.sendmail(f"u@{sender_domain}", [f"u@{t}"], msg)
    return len(targets)


def count_delivered(run_dir, names):
    return sum(lib.count_files(os.path.join(run_dir, n, "mail", "u", "new")) for n in names)


class Prober(threading.Thread):
    """Times `mailnet status` and GET /api/v1/network once a second until stopped."""

    def __init__(self, run_dir, web_port, env):
        super().__init__(daemon=True)
        self.run_dir, self.web_port, self.env = run_dir, web_port, env
        self.status_s, self.api_s, self.errors = [], [], []
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.wait(1.0):
            try:
                dt, (rc, out) = timed(lambda: mailnet(["status", "--json"], self.run_dir, 30, self.env))
                self.status_s.append(dt)
                if rc != 0:
                    self.errors.append(f"status: exit {rc}: {out[-200:]}")
                dt, _ = timed(lambda: get_network(self.web_port))
                self.api_s.append(dt)
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                self.errors.append(repr(e))


def one_run(n, args, rnd, build, bin_dir):
    work = lib.workdir(f"mailnet-bench-many-{n}-")
    run_dir = os.path.join(work, "run")
    env = dict(os.environ, MAILNET_BIN_DIR=os.path.abspath(bin_dir))
    r = {"domains": n, "build": build}
    up_started = False
    try:
        base, held = hold_port_range(n + 2)
        names = [f"d{i}.test" for i in range(n)]
        topo = {
            "name": f"bench-many-{n}",
            "resolver": {"listen": f"127.0.0.1:{base + n}"},
            "web": {"listen": f"127.0.0.1:{base + n + 1}"},
            "domains": [{"name": name, "listen": f"127.0.0.1:{base + i}", "users": ["u"]}
                        for i, name in enumerate(names)],
        }
        if args.no_dkim:  # no DKIM key to make for each domain at `up`
            topo["defaults"] = {"dns": {"dkim": False}}
        topo_file = os.path.join(work, "topology.json")
        with open(topo_file, "w") as f:
            json.dump(topo, f)
        for s in held:
            s.close()
        r["ports"] = f"{base}..{base + n + 1}"
        up_started = True
        fresh = ["--fresh"]
        if args.kept_keys:
            # A user's second `up` of the same network: the first one (not
            # timed) made the run folder, the certificates and a DKIM key per
            # domain; the timed one keeps them (no --fresh), as `up` does.
            first_topo = topo_file
            if args.one_key:
                # The first up makes no key; every domain then gets the same
                # RSA-2048 key, which the timed up keeps (RSA of 2048 bits, 0600,
                # ours, one link) and every node reads and checks as its own.
                first_topo = os.path.join(work, "topology-no-keys.json")
                with open(first_topo, "w") as f:
                    json.dump(dict(topo, defaults={"dns": {"dkim": False}}), f)
            dt0, (rc, out, _) = timed(lambda: run_with_cpu(
                [lib.binary("mailnet", bin_dir), "up", "-d", "--fresh", first_topo, "--dir", run_dir],
                max(args.timeout, 900), env))
            if rc != 0:
                raise RuntimeError(f"the first mailnet up -d of {n} domains failed (exit {rc}):\n{out[-2000:]}")
            if args.one_key:
                key = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                                     capture_output=True, check=True, timeout=60).stdout
                for name in names:
                    fd = os.open(os.path.join(run_dir, name, "dkim.key"),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    try:
                        os.fchmod(fd, 0o600)  # whatever the umask
                        os.write(fd, key)
                    finally:
                        os.close(fd)
            rc, out = mailnet(["down"], run_dir, 120, env)
            if rc != 0:
                raise RuntimeError(f"mailnet down after the first up: exit {rc}: {out[-500:]}")
            r["first_up_s"] = dt0
            lib.log(f"  round {rnd} {build}: the first up (making the keys) took {dt0:.1f} s")
            fresh = []
        up_at = time.clock_gettime(time.CLOCK_BOOTTIME)
        dt, (rc, out, r["up_cpu_s"]) = timed(lambda: run_with_cpu(
            [lib.binary("mailnet", bin_dir), "up", "-d", *fresh, topo_file, "--dir", run_dir], args.timeout, env))
        if rc != 0:
            raise RuntimeError(f"mailnet up -d of {n} domains failed (exit {rc}) after {dt:.1f} s:\n{out[-2000:]}")
        r["ready_s"] = dt
        with open(os.path.join(run_dir, "network.json")) as f:
            info = json.load(f)
        pids = {x["name"]: x["pid"] for x in info["nodes"]}
        nodes = [smaps_rollup(pids[name]) for name in names]
        r["node_rss"] = statistics.median(x["Rss"] for x in nodes)
        r["node_pss"] = statistics.median(x["Pss"] for x in nodes)
        r["node_private"] = statistics.median(x["Private"] for x in nodes)
        r["node_private_max"] = max(x["Private"] for x in nodes)
        r["total_pss"] = sum(x["Pss"] for x in nodes)
        # CPU spent to get there (less sensitive to a busy machine than the wall time).
        r["nodes_cpu_s"] = sum(run_seconds(pids[name]) for name in names)
        r["launcher_cpu_s"] = run_seconds(info["launcher_pid"])
        r["prepare_s"] = started_at(info["launcher_pid"]) - up_at
        r["launcher"] = smaps_rollup(info["launcher_pid"])
        r["resolver"] = smaps_rollup(pids["resolver"])
        r["status_s"], (rc, out) = timed(lambda: mailnet(["status"], run_dir, 60, env))
        if rc != 0:
            raise RuntimeError(f"mailnet status: exit {rc}: {out[-500:]}")
        web_port = base + n + 1
        r["api_s"], count = timed(lambda: get_network(web_port))
        if count != n:
            raise RuntimeError(f"GET /api/v1/network listed {count} domains, not {n}")
        r["page_s"], _ = timed(lambda: get_page(web_port))
        lib.log(f"  round {rnd} {build}: {n} domains ready in {dt:.2f} s (CPU: up {r['up_cpu_s']:.2f} s, nodes "
                f"{r['nodes_cpu_s']:.1f} s, launcher {r['launcher_cpu_s']:.1f} s; before the launcher: {r['prepare_s']:.2f} s); "
                f"node private "
                f"{mib(r['node_private']):.2f} MiB, status {r['status_s']:.2f} s, GET /api/v1/network "
                f"{r['api_s']:.2f} s, GET / {r['page_s']:.2f} s; load {os.getloadavg()[0]:.1f}")

        if args.send:
            rng = random.Random(args.seed)
            plan, total = [], 0
            for i, name in enumerate(names):
                k = min(args.send, n - 1, args.max_messages - total)
                if k <= 0:
                    break
                targets = rng.sample([x for x in names if x != name], k)
                plan.append((base + i, name, targets, i))
                total += k
            prober = Prober(run_dir, web_port, env)
            prober.start()
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=args.senders) as pool:
                sent = sum(pool.map(lambda p: send_one(*p), plan))
            r["accepted_s"] = time.monotonic() - t0
            deadline = t0 + args.timeout
            delivered = 0
            while time.monotonic() < deadline:
                delivered = count_delivered(run_dir, names)
                if delivered >= sent:
                    break
                time.sleep(0.5)
            r["relayed_s"] = time.monotonic() - t0
            prober.stop_flag.set()
            prober.join(60)
            rc, out = mailnet(["status", "--json"], run_dir, 60, env)
            st = json.loads(out)
            queued = sum(x.get("queued", 0) for x in st["nodes"])
            bounced = sum(x.get("bounced", 0) for x in st["nodes"])
            relayed = sum(x.get("relayed", 0) for x in st["nodes"])
            r.update(sent=sent, delivered=delivered, queued=queued, bounced=bounced, relayed=relayed,
                     lost=sent - delivered, probe_status_max=max(prober.status_s, default=0),
                     probe_api_max=max(prober.api_s, default=0), probes=len(prober.status_s),
                     probe_errors=prober.errors)
            lib.log(f"  {sent} messages: all accepted in {r['accepted_s']:.1f} s, {delivered} delivered in "
                    f"{r['relayed_s']:.1f} s (relayed {relayed}, queued {queued}, bounced {bounced}); "
                    f"status max {r['probe_status_max']:.2f} s, API max {r['probe_api_max']:.2f} s "
                    f"over {len(prober.status_s)} probes; errors {prober.errors[:3]}")

        # Threads per node before `down`: each is work for the kernel when its process ends.
        counts = [threads_of(pids[name]) for name in names]
        r["threads_median"], r["threads_max"] = statistics.median(counts), max(counts)
        busy0, _ = lib.machine_jiffies()
        r["down_s"], (rc, out) = timed(lambda: mailnet(["down"], run_dir, 120, env))
        # The whole machine's CPU in that time (every process, the kernel's share
        # included): less sensitive to the machine's load than the wall time.
        r["down_cpu_s"] = (lib.machine_jiffies()[0] - busy0) / os.sysconf("SC_CLK_TCK")
        if rc != 0:
            raise RuntimeError(f"mailnet down: exit {rc}: {out[-500:]}")
        up_started = False
        r["stop_s"], r["stop_launcher_cpu_s"] = launcher_stop_figures(run_dir)
        lib.log(f"  down in {r['down_s']:.2f} s (the launcher: every child stopped in {r['stop_s']:.2f} s, "
                f"its own CPU {r['stop_launcher_cpu_s']:.3f} s; the machine's CPU {r['down_cpu_s']:.2f} s; "
                f"threads per node before it: median {r['threads_median']:g}, max {r['threads_max']}); "
                f"load {os.getloadavg()[0]:.1f}")
        return r
    finally:
        if up_started:
            try:
                mailnet(["down"], run_dir, 60, env)
            except Exception:  # noqa: BLE001 - the kill below is the backstop
                pass
        kill_leftovers(work)
        lib.remove_tree(work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default="1000", help="comma-separated sizes, e.g. 1000,2000")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--send", type=int, default=0, help="messages per domain, each to another random domain")
    ap.add_argument("--max-messages", type=int, default=10000)
    ap.add_argument("--senders", type=int, default=8, help="concurrent SMTP clients")
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--timeout", type=float, default=180, help="seconds for up, and for the relay")
    ap.add_argument("--no-dkim", action="store_true",
                    help='"defaults": {"dns": {"dkim": false}}: no RSA key made per domain at up (a fresh key is '
                         'about a quarter of a second of one core)')
    ap.add_argument("--kept-keys", action="store_true",
                    help="time a second `up -d` of the network (no --fresh), which keeps the DKIM keys and "
                         "certificates the first, untimed, one made")
    ap.add_argument("--one-key", action="store_true",
                    help="with --kept-keys: the first up makes no DKIM key, and one RSA-2048 key is written for every "
                         "domain before the timed up (one key made, not N: about 0.27 s of CPU against N times that)")
    ap.add_argument("--before-bin", help="bin folder of another build: each round runs it too, alternating (an A/B)")
    args = ap.parse_args()
    if args.one_key and not args.kept_keys:
        ap.error("--one-key goes with --kept-keys")
    lib.raise_nofile()
    sizes = [int(s) for s in args.domains.split(",")]
    builds = [("mailnet", lib.BIN_DIR)]
    if args.before_bin:
        builds.append(("mailnet-before", os.path.abspath(args.before_bin)))
    lib.log(f"many domains: {sizes}; builds {builds}; {lib.machine()}")
    results = {(n, b): [] for n in sizes for b, _ in builds}
    for rnd in range(args.rounds):
        for n in sizes:
            for build, bin_dir in (builds if rnd % 2 == 0 else builds[::-1]):
                results[(n, build)].append(one_run(n, args, rnd, build, bin_dir))
    print(f"\n## many domains: `mailnet up -d` of N generated domains ({time.strftime('%Y-%m-%d')})")
    print(f"{lib.machine()}\n")
    print("| domains | build | ready (s) | up before the launcher (s) | CPU to ready: up / nodes / launcher (s) | node RSS / PSS / private, median (MiB) "
          "| private max (MiB) | all nodes' PSS (MiB) | launcher RSS / private (MiB) | resolver RSS / private (MiB) "
          "| status (s) | GET network (s) | GET / (s) | down (s) | the launcher's stop: wall / its CPU (s) "
          "| down: the machine's CPU (s) | threads per node before down: median / max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        for build, _ in builds:
            rs = results[(n, build)]
            med = lambda k: lib.median([x[k] for x in rs])  # noqa: E731
            print(f"| {n} | {build} | {lib.summary([x['ready_s'] for x in rs], '{:.2f}')} | {med('prepare_s'):.2f} "
                  f"| {med('up_cpu_s'):.2f} / {med('nodes_cpu_s'):.1f} / {med('launcher_cpu_s'):.2f} "
                  f"| {mib(med('node_rss')):.2f} / {mib(med('node_pss')):.2f} / {mib(med('node_private')):.2f} "
                  f"| {mib(max(x['node_private_max'] for x in rs)):.2f} | {mib(med('total_pss')):.0f} "
                  f"| {mib(lib.median([x['launcher']['Rss'] for x in rs])):.1f} / "
                  f"{mib(lib.median([x['launcher']['Private'] for x in rs])):.1f} "
                  f"| {mib(lib.median([x['resolver']['Rss'] for x in rs])):.1f} / "
                  f"{mib(lib.median([x['resolver']['Private'] for x in rs])):.1f} "
                  f"| {med('status_s'):.2f} | {med('api_s'):.2f} | {med('page_s'):.2f} | {med('down_s'):.2f} "
                  f"| {med('stop_s'):.2f} / {med('stop_launcher_cpu_s'):.3f} | {med('down_cpu_s'):.2f} "
                  f"| {med('threads_median'):g} / {max(x['threads_max'] for x in rs)} |")
        if len(builds) == 2:
            a, b = results[(n, "mailnet")], results[(n, "mailnet-before")]
            ratio = lambda k: lib.median([x[k] for x in a]) / lib.median([x[k] for x in b])  # noqa: E731
            print(f"| {n} | ratio (this / before) | {ratio('ready_s'):.2f}x | {ratio('prepare_s'):.2f}x "
                  f"| {ratio('up_cpu_s'):.2f}x / "
                  f"{ratio('nodes_cpu_s'):.2f}x / {ratio('launcher_cpu_s'):.2f}x | private {ratio('node_private'):.2f}x "
                  f"| | {ratio('total_pss'):.2f}x | | | {ratio('status_s'):.2f}x | {ratio('api_s'):.2f}x "
                  f"| {ratio('page_s'):.2f}x | {ratio('down_s'):.2f}x | | {ratio('down_cpu_s'):.2f}x | |")
    if args.send:
        print("\n| domains | messages | accepted (s) | all in new/ (s) | lost | queued | bounced "
              "| status max (s) | GET network max (s) | probes |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in sizes:
            for x in (x for b, _ in builds for x in results[(n, b)]):
                print(f"| {n} {x['build']} | {x['sent']} | {x['accepted_s']:.1f} | {x['relayed_s']:.1f} | {x['lost']} "
                      f"| {x['queued']} | {x['bounced']} | {x['probe_status_max']:.2f} | {x['probe_api_max']:.2f} "
                      f"| {x['probes']} |")


if __name__ == "__main__":
    main()
