"""Issue 17, promise 10 (the mail CLI's part): `send` with a body that is not
UTF-8 exits 2 and sends nothing; `show` with a prefix of several messages
says so, names them and exits 1 (and the name of one message linked into
several Maildirs is one message); `inbox` and `show` read the mail of a network that is
down, named with `--net` or `--dir`. Assertions are on behaviour (found,
text, exit code), not on column layout or line-end bytes."""
import json
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_send_and_attachments import mailnet  # noqa: E402


def maildir_names(run_dir):
    """Every Maildir file name under run_dir: {name: [paths]}."""
    names = {}
    for domain in os.listdir(run_dir):
        mail = os.path.join(run_dir, domain, "mail")
        if not os.path.isdir(mail):
            continue
        for user in os.listdir(mail):
            for sub in ("new", "cur"):
                folder = os.path.join(mail, user, sub)
                for name in os.listdir(folder) if os.path.isdir(folder) else []:
                    names.setdefault(name, []).append(os.path.join(folder, name))
    return names


def test_send_refuses_a_body_that_is_not_utf8():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        bad = b"caf\xe9 \xff\xfe latin-1, not UTF-8\n"
        with tempfile.TemporaryDirectory() as tmp:
            body_file = os.path.join(tmp, "latin1.txt")
            with open(body_file, "wb") as f:
                f.write(bad)
            common = ["send", "--from", "vader@deathstar.com", "--to", "tarkin@deathstar.com", "--subject", "x"]
            for how, extra, stdin in (("--body", ["--body", bad], None), ("--body-file", ["--body-file", body_file], None),
                                      ("stdin", [], bad)):
                out = mailnet(net, *common, *extra, stdin=stdin)
                assert out.returncode == 2, (how, out)
                assert b"mailnet: send: body: not valid UTF-8 text" in out.stderr, (how, out.stderr)
                assert out.stdout == b"", (how, out.stdout)  # no queue id: nothing was sent
        # Nothing reached the node: the next good message is the first and only one.
        good = mailnet(net, *common[:-1], "after the refusals", "--body", "valid ✓")
        assert good.returncode == 0, good
        (msg,) = net.wait_messages("deathstar.com", "tarkin", 1)
        assert b"after the refusals" in msg
        log = open(os.path.join(net.domain_dir("deathstar.com"), "smtp.log"), encoding="utf-8",
                   errors="replace").read()
        assert log.count("C: MAIL FROM:") == 1, log


def test_show_with_a_prefix_of_several_messages():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        for user, subject in (("obiwan", "first of two"), ("finn", "second of two")):
            sent = mailnet(net, "send", "--from", "rey@jaku.com", "--to", f"{user}@jaku.com", "--subject", subject,
                           "--body", f"body of the {subject}")
            assert sent.returncode == 0, sent
            net.wait_messages("jaku.com", user, 1)
        names = maildir_names(net.run_dir)
        assert len(names) == 2, names
        first, second = sorted(names)
        prefix = os.path.commonprefix([first, second])
        assert prefix, (first, second)  # both begin with the time in seconds
        ambiguous = mailnet(net, "show", prefix)
        assert ambiguous.returncode == 1, ambiguous
        err = ambiguous.stderr.decode()
        assert f"'{prefix}' matches 2 messages" in err and "give more of the name" in err, err
        assert first in err and second in err, err  # the candidates, to choose from
        assert ambiguous.stdout == b"", ambiguous.stdout  # no message printed on a guess
        # One more character is enough to choose, and the right one is shown.
        for name in (first, second):
            shown = mailnet(net, "show", name[:len(prefix) + 1])
            assert shown.returncode == 0, shown
            text = shown.stdout.decode()
            assert "body of the" in text and name in text, text
        missing = mailnet(net, "show", "no-such-name")
        assert missing.returncode == 1 and b"no message file or Maildir name starting with 'no-such-name'" in \
            missing.stderr, missing


def test_show_of_a_message_to_several_users_is_not_ambiguous():
    """One message to two users of a node is one file under one name, linked
    into both Maildirs: its name (or a prefix) is one message, not two."""
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        sent = mailnet(net, "send", "--from", "rey@jaku.com", "--to", "obiwan@jaku.com", "--to", "finn@jaku.com",
                       "--subject", "to both", "--body", "one message, two readers")
        assert sent.returncode == 0, sent
        net.wait_messages("jaku.com", "obiwan", 1)
        net.wait_messages("jaku.com", "finn", 1)
        ((name, paths),) = maildir_names(net.run_dir).items()
        assert len(paths) == 2, paths
        for which in (name, name.split(".mailnet")[0]):
            shown = mailnet(net, "show", which)
            assert shown.returncode == 0, shown
            assert "one message, two readers" in shown.stdout.decode(), shown.stdout


@contextmanager
def detached(cli, topology_file, run_dir, up_args, down_args):
    """`mailnet up -d`, and a `down` (then SIGKILL by pid to what is left, if
    down failed) after."""
    up = cli("up", "-d", topology_file, *up_args)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        pids = harness.network_pids(run_dir)
        down = cli("down", *down_args)
        for pid in pids:
            if harness.pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        assert down.returncode == 0, down.stdout + down.stderr


def test_inbox_and_show_after_down_with_net_and_dir():
    with tempfile.TemporaryDirectory() as tmp:
        here, elsewhere, reader = (os.path.join(tmp, d) for d in ("here", "elsewhere", "reader"))
        for d in (here, elsewhere, reader):
            os.mkdir(d)

        def cli(*args, cwd=here):
            return subprocess.run([harness.binary("mailnet"), *args], cwd=cwd, capture_output=True, text=True,
                                  timeout=60)

        # Two networks under ./run (so --net is needed), one in a folder of its own (--dir).
        runs = {"alpha": os.path.join(here, "run", "alpha"), "beta": os.path.join(here, "run", "beta"),
                "gamma": os.path.join(elsewhere, "gamma-run")}
        for name in runs:
            with open(os.path.join(here, f"{name}.json"), "w") as f:
                json.dump(harness.two_domain_topology(name=name), f)
        folder_args = {"alpha": ["--net", "alpha"], "beta": ["--net", "beta"], "gamma": ["--dir", runs["gamma"]]}
        with detached(cli, "alpha.json", runs["alpha"], [], folder_args["alpha"]), \
                detached(cli, "beta.json", runs["beta"], [], folder_args["beta"]), \
                detached(cli, "gamma.json", runs["gamma"], folder_args["gamma"], folder_args["gamma"]):
            for name, args in folder_args.items():
                sent = cli("send", "--from", "rey@jaku.com", "--to", "obiwan@jaku.com", "--subject",
                           f"mail of {name}", "--body", f"kept in {name}", *args)
                assert sent.returncode == 0, (name, sent.stdout, sent.stderr)
            for name, run in runs.items():
                new = os.path.join(run, "jaku.com", "mail", "obiwan", "new")
                harness.wait_for(lambda: os.path.isdir(new) and os.listdir(new), 15, f"obiwan's mail in {name}")
        # Every network is down now (each `down` exited 0).
        for name, args in folder_args.items():
            cwd = reader if name == "gamma" else here  # --dir works from any folder
            inbox = cli("inbox", "jaku.com", "obiwan", *args, cwd=cwd)
            assert inbox.returncode == 0, (name, inbox.stdout, inbox.stderr)
            assert f"mail of {name}" in inbox.stdout, (name, inbox.stdout)
            assert all(f"mail of {other}" not in inbox.stdout for other in runs if other != name), inbox.stdout
            (file_name,) = os.listdir(os.path.join(runs[name], "jaku.com", "mail", "obiwan", "new"))
            show = cli("show", file_name.split(".mailnet")[0], *args, cwd=cwd)
            assert show.returncode == 0, (name, show.stdout, show.stderr)
            assert f"mail of {name}" in show.stdout and f"kept in {name}" in show.stdout, show.stdout
            # The same message's name, asked of another network: not found there.
            other = "beta" if name != "beta" else "alpha"
            wrong = cli("show", file_name, *folder_args[other])
            assert wrong.returncode == 1 and "no message file or Maildir name" in wrong.stderr, wrong.stderr
        # Without a name, two networks that ran under ./run: inbox asks for one.
        unnamed = cli("inbox", "jaku.com", "obiwan")
        assert unnamed.returncode != 0 and "--net" in unnamed.stderr, (unnamed.stdout, unnamed.stderr)


if __name__ == "__main__":
    harness.run_tests([
        test_send_refuses_a_body_that_is_not_utf8, test_show_with_a_prefix_of_several_messages,
        test_show_of_a_message_to_several_users_is_not_ambiguous, test_inbox_and_show_after_down_with_net_and_dir,
    ])
