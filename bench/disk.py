#!/usr/bin/python3
"""What the disk costs a message, with no server at all: the floor under the
accept rate of anything that keeps maildir(5)'s order (write, flush, link,
flush), measured on the folder the other scripts use.

    /usr/bin/python3 bench/disk.py [--files 2000] [--rounds 3] [--fs tmp]

Per 4 KiB message, serial, in alternating rounds:
- append:  overwrite of a block in a file written and synced before, then
           fdatasync (the cheapest flush there is: no metadata changes; the
           device's flush latency);
- maildir: create in tmp/, write, fsync, rename into new/, fsync new/ (what
           the aiosmtpd peer and qmail do per message);
- batch K: K files created and written, one syncfs, K renames, one syncfs (a
           group commit of K messages, as the node's committer does).
"""
import argparse
import ctypes
import os
import time

import lib

LIBC = ctypes.CDLL(None, use_errno=True)
BLOCK = b"x" * 4096


def syncfs(fd):
    if LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def maildir(root):
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    return os.open(os.path.join(root, "new"), os.O_RDONLY | os.O_DIRECTORY)


def append(work, n):
    fd = os.open(os.path.join(work, "log"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"\0" * 4096 * n)
        os.fsync(fd)
        t0 = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, BLOCK, 4096 * i)
            os.fdatasync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def one_file(work, n):
    new = maildir(work)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            tmp, final = os.path.join(work, "tmp", str(i)), os.path.join(work, "new", str(i))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, BLOCK)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, final)
            os.fsync(new)
        return time.perf_counter() - t0
    finally:
        os.close(new)


def batch(work, n, k):
    new = maildir(work)
    try:
        t0 = time.perf_counter()
        for start in range(0, n, k):
            names = [str(i) for i in range(start, min(n, start + k))]
            for name in names:
                fd = os.open(os.path.join(work, "tmp", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, BLOCK)
                os.close(fd)
            syncfs(new)
            for name in names:
                os.rename(os.path.join(work, "tmp", name), os.path.join(work, "new", name))
            syncfs(new)
        return time.perf_counter() - t0
    finally:
        os.close(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fs", default="tmp", choices=["tmp", "ext4", "ext4-nojournal"])
    args = ap.parse_args()
    kinds = {"append + fdatasync": lambda w: append(w, args.files),
             "maildir, fsync per file": lambda w: one_file(w, args.files)}
    for k in (8, 32):
        kinds[f"batch of {k}, 2 syncfs"] = lambda w, k=k: batch(w, args.files, k)
    with lib.scratch_filesystem(args.fs):
        lib.log(f"disk: {args.files} messages of 4 KiB per run; {lib.machine()}")
        seconds = {kind: [] for kind in kinds}
        cpu_seconds = {kind: [] for kind in kinds}  # user+system of this process (the kernel's work is ours)
        leftovers = []
        try:
            for rnd in range(args.rounds):
                order = list(kinds)
                order = order[rnd % len(order):] + order[:rnd % len(order)]
                for kind in order:
                    work = lib.workdir("mailnet-bench-disk-")
                    leftovers.append(work)  # removed after the report (see lib.cleanup)
                    cpu0 = time.process_time()
                    s = kinds[kind](work)
                    cpu = time.process_time() - cpu0
                    seconds[kind].append(s)
                    cpu_seconds[kind].append(cpu)
                    lib.log(f"  round {rnd} {kind:26} {s / args.files * 1e6:7.0f} us/msg, CPU {cpu / args.files * 1e6:5.0f} us/msg")
            print(f"\n## disk: {args.files} messages of 4 KiB, serial\n{lib.machine()}\n")
            print("| per message | wall µs median (min..max) | CPU µs | messages/s |")
            print("| --- | --- | --- | --- |")
            for kind, values in seconds.items():
                per = [s / args.files * 1e6 for s in values]
                cpu = lib.summary([c / args.files * 1e6 for c in cpu_seconds[kind]])
                print(f"| {kind} | {lib.summary(per)} | {cpu} | {lib.summary([1e6 / p for p in per])} |")
        finally:
            lib.cleanup(leftovers)


if __name__ == "__main__":
    main()
