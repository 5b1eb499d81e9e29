#!/usr/bin/python3
"""The peer a student would write: an aiosmtpd server that stores each message
in the recipient's Maildir with the same promise as mailnet (write in tmp/,
fsync, link into new/, fsync new/, then 250).

    /usr/bin/python3 bench/aiosmtpd_maildir.py --port 2525 --root /tmp/mail [--pool]

By default the handler writes and fsyncs on the event loop, one message at a
time: what a student writes first. --pool runs the file work in 8 threads (as
mailnet's disk pool), so concurrent sessions' fsyncs overlap: the stronger
design, reported beside it so the comparison is not against a straw man.
Needs python3-aiosmtpd (Debian), hence /usr/bin/python3.

--tls-cert/--tls-key offer STARTTLS with that certificate (aiosmtpd's own
STARTTLS). --sink stores nothing and answers 250 at once: with TLS, the
stand-in for smtp-sink, which has no STARTTLS (bench/tls_accept.py).
"""
import argparse
import asyncio
import concurrent.futures
import itertools
import os
import re
import signal
import socket

from aiosmtpd.smtp import SMTP

_counter = itertools.count()
_SAFE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")


def deliver(root, mailbox, data):
    folder = os.path.join(root, mailbox)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    name = f"{time_name()}.P{os.getpid()}Q{next(_counter)}.aiosmtpd"
    tmp = os.path.join(folder, "tmp", name)
    new = os.path.join(folder, "new", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, new)
    os.unlink(tmp)
    dfd = os.open(os.path.join(folder, "new"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def time_name():
    import time
    ns = time.time_ns()
    return f"{ns // 1_000_000_000}.M{(ns // 1000) % 1_000_000:06d}"


class MaildirHandler:
    def __init__(self, root, pool):
        self.root = root
        self.pool = pool

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if not _SAFE.match(local) or local.startswith("."):
            return "553 5.1.3 Mailbox name not allowed"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.root is None:  # --sink
            return "250 2.0.0 Ok: discarded"
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        boxes = sorted({a.rsplit("@", 1)[0].lower() for a in envelope.rcpt_tos})
        try:
            for box in boxes:
                if self.pool is None:
                    deliver(self.root, box, data)
                else:
                    await asyncio.get_running_loop().run_in_executor(self.pool, deliver, self.root, box, data)
        except OSError as e:
            return f"451 4.3.0 {e.strerror}"
        return "250 2.0.0 Ok: stored"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", help="where the Maildirs go (required unless --sink)")
    ap.add_argument("--pool", action="store_true", help="file work in 8 threads instead of on the event loop")
    ap.add_argument("--sink", action="store_true", help="store nothing: 250 at the end of DATA at once")
    ap.add_argument("--tls-cert", help="offer STARTTLS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="its key (PEM)")
    args = ap.parse_args()
    if not args.sink and not args.root:
        ap.error("--root is required unless --sink")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8) if args.pool else None
    handler = MaildirHandler(None if args.sink else args.root, pool)
    tls = None
    if args.tls_cert:
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.bench", data_size_limit=10 * 1024 * 1024,
                     decode_data=False, enable_SMTPUTF8=False, tls_context=tls),
        host="127.0.0.1", port=args.port, family=socket.AF_INET, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready 127.0.0.1:{args.port}", flush=True)
    await stop.wait()
    server.close()
    if pool:
        pool.shutdown(wait=True)


if __name__ == "__main__":
    asyncio.run(main())
