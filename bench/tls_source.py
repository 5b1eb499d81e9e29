#!/usr/bin/python3
"""A load source with STARTTLS on every connection: Postfix's smtp-source
has no STARTTLS (nor has smtp-sink), so this stands in for it.

    /usr/bin/python3 bench/tls_source.py --port 2525 --messages 2000 --sessions 20 \\
        --ca ca.pem --servername jaku.com [--procs 2] [--plain] [--time-limit 300]

--sessions concurrent sessions (threads, spread over --procs processes so
that one interpreter's lock does not cap the load), each looping: connect,
220, EHLO, STARTTLS, the TLS handshake (the server's certificate checked
against --ca for --servername, as a careful client does; --no-verify
skips it), EHLO again, MAIL, RCPT, DATA, a message of --size bytes, QUIT:
one message per connection, no pipelining. --plain: the same without
STARTTLS, for the cost of TLS with the same client. --resume: each session
offers the TLS session its previous connection got (a resumed handshake:
no certificate sent or checked), as mailnet's relay does.

Bounded: it stops at --messages sent or at --time-limit seconds, whichever
comes first, and every socket has a timeout. Prints one JSON line: sent,
failed, seconds (from the first connection to the last reply), the TLS
version and cipher seen, and the first errors; exit status 1 unless every
message got its 250.
"""
import argparse
import json
import multiprocessing
import os
import socket
import ssl
import sys
import threading
import time


class SmtpError(Exception):
    pass


def message_bytes(size, rcpt):
    head = f"From: <load@client.example>\r\nTo: <{rcpt}>\r\nSubject: tls load\r\n\r\n".encode()
    line = b"x" * 78 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


class Session:
    """One SMTP conversation on a socket (plain, then maybe TLS)."""

    def __init__(self, sock):
        self.sock = sock
        self.reader = sock.makefile("rb")

    def reply(self, expect):
        lines = []
        for _ in range(100):
            line = self.reader.readline(4096)
            if not line:
                raise SmtpError("connection closed" + (f" after {lines[-1]!r}" if lines else ""))
            lines.append(line)
            if line[3:4] != b"-":
                break
        if not lines[-1][:1] == expect:
            raise SmtpError(b"".join(lines).decode("ascii", "replace").strip())
        return lines

    def command(self, text, expect=b"2"):
        self.sock.sendall(text)
        return self.reply(expect)

    def starttls(self, ctx, servername, session=None):
        lines = self.command(b"STARTTLS\r\n")
        self.reader.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=servername, session=session)
        self.reader = self.sock.makefile("rb")
        return lines


def one_message(args, ctx, message, session=None):
    """One connection, one message; returns the TLS description (or 'plain')
    and the TLS session to offer next time (--resume)."""
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.io_timeout)
    try:
        s = Session(sock)
        s.reply(b"2")
        ehlo = s.command(b"EHLO client.example\r\n")
        what = "plain"
        if not args.plain:
            if not any(l[4:].upper().startswith(b"STARTTLS") for l in ehlo):
                raise SmtpError("STARTTLS not offered")
            s.starttls(ctx, args.servername, session)
            what = f"{s.sock.version()} {s.sock.cipher()[0]}" + (" resumed" if s.sock.session_reused else "")
            s.command(b"EHLO client.example\r\n")
        s.command(b"MAIL FROM:<load@client.example>\r\n")
        s.command(f"RCPT TO:<{args.rcpt}>\r\n".encode())
        s.command(b"DATA\r\n", expect=b"3")
        s.command(message + b".\r\n")
        try:
            s.command(b"QUIT\r\n")
        except (SmtpError, OSError):
            pass  # the 250 for the message is what counts
        # TLS 1.3: the ticket came after the handshake, read with the replies since.
        return what, (s.sock.session if args.resume and not args.plain else None)
    finally:
        try:
            s.sock.close()
        except NameError:
            sock.close()


def worker(args, count, deadline, out):
    """One process: `threads` sessions sharing `count` messages."""
    ctx = ssl.create_default_context(cafile=args.ca) if args.ca else ssl.create_default_context()
    if args.no_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    message = message_bytes(args.size, args.rcpt)
    lock = threading.Lock()
    state = {"left": count, "sent": 0, "failed": 0, "errors": [], "tls": set()}

    def session_loop():
        session = None
        while True:
            with lock:
                if state["left"] <= 0 or time.monotonic() >= deadline:
                    return
                state["left"] -= 1
            try:
                what, session = one_message(args, ctx, message, session)
                with lock:
                    state["sent"] += 1
                    state["tls"].add(what)
            except (OSError, SmtpError, ssl.SSLError) as e:
                with lock:
                    state["failed"] += 1
                    if len(state["errors"]) < 5:
                        state["errors"].append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=session_loop, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + args.io_timeout * 8)
    out.put({k: (sorted(v) if isinstance(v, set) else v) for k, v in state.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2, help="processes the sessions are spread over")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rcpt", default="bench@jaku.com")
    ap.add_argument("--ca", help="CA file the server's certificate must chain to")
    ap.add_argument("--servername", default="jaku.com", help="name the certificate must carry (and SNI)")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--plain", action="store_true", help="no STARTTLS")
    ap.add_argument("--resume", action="store_true", help="offer the previous connection's TLS session")
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--io-timeout", type=float, default=30.0)
    args = ap.parse_args()
    procs = max(1, min(args.procs, args.sessions))
    args.threads = args.sessions // procs
    deadline = time.monotonic() + args.time_limit
    out = multiprocessing.get_context("fork").Queue()
    shares = [args.messages // procs + (1 if i < args.messages % procs else 0) for i in range(procs)]
    t0 = time.monotonic()
    children = [multiprocessing.get_context("fork").Process(target=worker, args=(args, n, deadline, out))
                for n in shares]
    for c in children:
        c.start()
    results = []
    for _ in children:
        try:
            results.append(out.get(timeout=max(1.0, deadline - time.monotonic()) + args.io_timeout * 10))
        except Exception:  # queue.Empty: a worker that never reported
            break
    elapsed = time.monotonic() - t0
    for c in children:
        c.join(5)
        if c.is_alive():
            c.kill()
            c.join(5)
    total = {"sent": sum(r["sent"] for r in results), "failed": sum(r["failed"] for r in results),
             "seconds": elapsed, "tls": sorted({t for r in results for t in r["tls"]}),
             "errors": [e for r in results for e in r["errors"]][:5], "messages": args.messages}
    print(json.dumps(total), flush=True)
    return 0 if total["sent"] == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
