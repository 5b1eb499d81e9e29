"""Issue 16: the run folder is its user's alone, and one message to many
local recipients is stored once.

- Whatever the umask (000, 022), every folder mailnet makes under the run
  folder is 0700 and every file 0600 (the control socket is not ours to check
  here); another local user (nobody, through setpriv) reads no mail.
- A run folder (or a folder in it) owned by another user or writable by
  group or others, and links planted where mailnet writes, are refused before
  anything is written; what the links point to is left as it was. --fresh
  removes a link, never what it points to.
- One message to 100 users of one node: one file (one inode, 100 links), its
  attachments saved once, and every user still sees it (`mailnet inbox`).
"""
import email.message
import email.policy
import os
import re
import smtplib
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

NOBODY = 65534
PRECIOUS = b"precious, root's own\n"


def mailnet(*args, cwd=None, timeout=90, preexec_fn=None):
    return subprocess.run([harness.binary("mailnet"), *args], capture_output=True, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)


def as_nobody(*args):
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args],
                          capture_output=True, timeout=30)


class Workdir:
    """A temporary folder with a topology, a run folder path, and a victim file
    and folder that planted links point to. `up -d`, then `down` (or SIGKILL
    by pid) at the end."""

    def __init__(self, topo=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="mailnet-security-")
        self.path = self.tmp.name
        self.topo = harness.with_web_port(topo or harness.two_domain_topology("sec"))
        self.topo_file = os.path.join(self.path, "topology.json")
        with open(self.topo_file, "w") as f:
            import json
            json.dump(self.topo, f)
        self.run_dir = os.path.join(self.path, "run")
        self.victim = os.path.join(self.path, "victim.txt")
        with open(self.victim, "wb") as f:
            f.write(PRECIOUS)
        os.chmod(self.victim, 0o644)
        self.victim_dir = os.path.join(self.path, "victim_dir")
        os.mkdir(self.victim_dir)
        with open(os.path.join(self.victim_dir, "keep.txt"), "wb") as f:
            f.write(PRECIOUS)

    def up(self, *extra, preexec_fn=None):
        return mailnet("up", "-d", self.topo_file, "--dir", self.run_dir, *extra, cwd=self.path,
                       preexec_fn=preexec_fn)

    def down(self):
        harness.stop_network(self.run_dir)

    def victims_unchanged(self):
        with open(self.victim, "rb") as f:
            assert f.read() == PRECIOUS, "the file a planted link points to was written"
        assert stat.S_IMODE(os.stat(self.victim).st_mode) == 0o644, "the linked file's mode was changed"
        assert os.listdir(self.victim_dir) == ["keep.txt"], os.listdir(self.victim_dir)
        assert os.stat(self.victim_dir).st_uid == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()
        self.tmp.cleanup()
        return False


def send(topo, domain, rcpts, attach=None, subject="hello"):
    msg = email.message.EmailMessage()
    msg["From"] = "rey@jaku.com"
    msg["To"] = ", ".join(rcpts[:3])
    msg["Subject"] = subject
    msg.set_content("The plans are attached.\n")
    if attach is not None:
        msg.add_attachment(attach, maintype="application", subtype="octet-stream", filename="plans.bin")
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, domain), timeout=30) as s:
        s.sendmail("rey@jaku.com", rcpts, msg.as_bytes(policy=email.policy.SMTP))


def node_log(run_dir, domain):
    try:
        with open(os.path.join(run_dir, domain, "node.log"), encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def count_events(run_dir, domain, event):
    return len(re.findall(rf"event={event} ", node_log(run_dir, domain)))


def bad_modes(run_dir):
    """Paths under run_dir whose mode is not 0700 (folders) or 0600 (files)."""
    bad = []
    for folder, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # a queue file relayed meanwhile
            if stat.S_ISSOCK(st.st_mode):
                continue  # mailnet.sock: the control socket's own rules
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) != want or stat.S_ISLNK(st.st_mode):
                bad.append(f"{path}: {oct(stat.S_IMODE(st.st_mode))}")
    st = os.stat(run_dir)
    if stat.S_IMODE(st.st_mode) != 0o700:
        bad.append(f"{run_dir}: {oct(stat.S_IMODE(st.st_mode))}")
    return bad


def deliver_some(w):
    """Mail with an attachment to two local users and one at the other node
    (through the queue), waited for until saved everywhere."""
    send(w.topo, "jaku.com", ["finn@jaku.com", "obiwan@jaku.com", "vader@deathstar.com"], attach=os.urandom(3000))
    harness.wait_for(lambda: count_events(w.run_dir, "jaku.com", "attachments") >= 2, 30, "attachments at jaku.com")
    harness.wait_for(lambda: count_events(w.run_dir, "deathstar.com", "attachments") >= 1, 30,
                     "the relayed copy's attachments at deathstar.com")


def check_modes_under_umask(mask):
    with Workdir() as w:
        r = w.up(preexec_fn=lambda: os.umask(mask))
        assert r.returncode == 0, r.stderr.decode()
        deliver_some(w)
        for f in ("launcher.log", "launcher.pid", "network.json", "topology.json", "resolver/resolver.log",
                  "jaku.com/node.log", "jaku.com/smtp.log", "jaku.com/queue/corrupt", "jaku.com/attachments"):
            assert os.path.exists(os.path.join(w.run_dir, f)), f
        bad = bad_modes(w.run_dir)
        assert not bad, f"umask {mask:03o}: " + "; ".join(bad)


def test_modes_do_not_depend_on_the_umask_000():
    check_modes_under_umask(0o000)


def test_modes_do_not_depend_on_the_umask_022():
    check_modes_under_umask(0o022)


def test_another_user_reads_no_mail():
    with Workdir() as w:
        os.chmod(w.path, 0o755)  # a home folder others may enter, as most are
        r = w.up(preexec_fn=lambda: os.umask(0o022))
        assert r.returncode == 0, r.stderr.decode()
        deliver_some(w)
        new = os.path.join(w.run_dir, "jaku.com", "mail", "finn", "new")
        mail = os.path.join(new, os.listdir(new)[0])
        attachments = os.path.join(w.run_dir, "jaku.com", "attachments")
        saved = os.path.join(attachments, os.listdir(attachments)[0], "plans.bin")
        for args in (["cat", mail], ["ls", new], ["cat", saved], ["cat", os.path.join(w.run_dir, "jaku.com", "node.log")],
                     ["cat", os.path.join(w.run_dir, "launcher.log")], ["ls", w.run_dir]):
            seen = as_nobody(*args)
            assert seen.returncode != 0, f"nobody could run {args}: {seen.stdout[:200]!r}"
        # The owner still reads it through the CLI.
        assert b"1 message" in mailnet("inbox", "jaku.com", "finn", "--dir", w.run_dir).stdout


def expect_refused(w, what, *extra):
    r = w.up(*extra)
    if r.returncode == 0:
        raise AssertionError(f"up started with {what} in the run folder")
    err = r.stderr.decode()
    return err


def test_a_run_folder_of_another_user_is_refused():
    with Workdir() as w:
        os.mkdir(w.run_dir)
        os.symlink(w.victim, os.path.join(w.run_dir, "topology.json"))
        os.lchown(os.path.join(w.run_dir, "topology.json"), NOBODY, NOBODY)
        os.chown(w.run_dir, NOBODY, NOBODY)
        err = expect_refused(w, "a folder owned by nobody")
        assert f"{w.run_dir} is owned by uid {NOBODY}" in err, err
        w.victims_unchanged()
        assert os.listdir(w.run_dir) == ["topology.json"], os.listdir(w.run_dir)  # nothing written


def test_a_folder_of_another_user_inside_is_refused():
    with Workdir() as w:
        os.makedirs(os.path.join(w.run_dir, "jaku.com", "mail"))
        os.chmod(w.run_dir, 0o700)
        os.chown(os.path.join(w.run_dir, "jaku.com"), NOBODY, NOBODY)
        err = expect_refused(w, "jaku.com owned by nobody")
        assert os.path.join(w.run_dir, "jaku.com") + f" is owned by uid {NOBODY}" in err, err
        assert sorted(os.listdir(w.run_dir)) == ["jaku.com"], os.listdir(w.run_dir)


def test_a_folder_writable_by_others_is_refused():
    for mode in (0o777, 0o770):
        with Workdir() as w:
            os.mkdir(w.run_dir)
            os.chmod(w.run_dir, mode)
            err = expect_refused(w, f"a run folder of mode {oct(mode)}")
            assert f"{w.run_dir} is writable by group or others" in err, err
            assert os.listdir(w.run_dir) == []


PLANTED = [
    ("topology.json", "file"), ("launcher.log", "file"), ("network.json", "file"), ("resolver", "dir"),
    ("jaku.com/node.log", "file"), ("jaku.com/mail/rey", "dir"), ("jaku.com/mail/rey/new", "dir"),
    ("jaku.com/attachments", "dir"), ("jaku.com/queue", "dir"), ("jaku.com", "dir"),
]


def test_planted_links_are_refused_and_never_followed():
    for where, kind in PLANTED:
        with Workdir() as w:
            link = os.path.join(w.run_dir, where)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            for folder, _, _ in os.walk(w.run_dir):
                os.chmod(folder, 0o700)
            os.symlink(w.victim if kind == "file" else w.victim_dir, link)
            err = expect_refused(w, f"a link at {where}")
            assert f"{link} is a symbolic link" in err, f"{where}: {err}"
            w.victims_unchanged()
            assert os.path.islink(link), f"{where}: the link was replaced"


def test_fresh_removes_links_without_following_them():
    with Workdir() as w:
        # The run folder itself a link to a folder that looks like a run folder.
        with open(os.path.join(w.victim_dir, "topology.json"), "w") as f:
            f.write("{}")
        os.symlink(w.victim_dir, w.run_dir)
        err = expect_refused(w, "a run folder that is a link", "--fresh")
        assert f"{w.run_dir} is a symbolic link" in err, err
        assert sorted(os.listdir(w.victim_dir)) == ["keep.txt", "topology.json"], os.listdir(w.victim_dir)
        os.unlink(os.path.join(w.victim_dir, "topology.json"))
        os.unlink(w.run_dir)
        # Links inside a run folder of ours: --fresh removes them, and only them.
        assert w.up().returncode == 0
        w.down()
        os.symlink(w.victim_dir, os.path.join(w.run_dir, "jaku.com", "planted"))
        os.symlink(w.victim, os.path.join(w.run_dir, "launcher.log.old"))
        r = w.up("--fresh")
        assert r.returncode == 0, r.stderr.decode()
        w.victims_unchanged()
        assert not os.path.lexists(os.path.join(w.run_dir, "launcher.log.old"))


def test_readers_skip_planted_links():
    """inbox, show and logs read no file through a link planted in the run folder."""
    with Workdir() as w:
        with open(w.victim, "wb") as f:
            f.write(b"Subject: planted secret\r\nFrom: x@y\r\n\r\n" + PRECIOUS)
        r = w.up()
        assert r.returncode == 0, r.stderr.decode()
        send(w.topo, "jaku.com", ["finn@jaku.com"], subject="real mail")
        harness.wait_for(lambda: os.listdir(os.path.join(w.run_dir, "jaku.com", "mail", "finn", "new")), 30, "mail")
        w.down()
        mail = os.path.join(w.run_dir, "jaku.com", "mail")
        os.symlink(w.victim, os.path.join(mail, "finn", "new", "1.planted.mailnet"))
        os.symlink(os.path.join(mail, "finn"), os.path.join(mail, "mallory"))
        os.rename(os.path.join(w.run_dir, "jaku.com", "node.log"), os.path.join(w.run_dir, "jaku.com", "node.log.real"))
        os.symlink(w.victim, os.path.join(w.run_dir, "jaku.com", "node.log"))
        inbox = mailnet("inbox", "jaku.com", "--dir", w.run_dir).stdout
        assert b"real mail" in inbox and b"planted" not in inbox and b"1 message\n" in inbox, inbox
        shown = mailnet("show", "1.planted", "--dir", w.run_dir)
        assert b"precious" not in shown.stdout, shown.stdout
        logs = mailnet("logs", "jaku.com", "--dir", w.run_dir, timeout=30)
        assert b"precious" not in logs.stdout, logs.stdout


def hundred_users_topology():
    port = harness.free_tcp_port()
    return {
        "name": "hundred",
        "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
        "domains": [{"name": "jaku.com", "listen": f"127.0.0.1:{port}",
                     "users": ["rey"] + [f"u{i:03d}" for i in range(100)]}],
    }


def test_one_message_to_a_hundred_users_is_stored_once():
    with Workdir(hundred_users_topology()) as w:
        r = w.up()
        assert r.returncode == 0, r.stderr.decode()
        users = [f"u{i:03d}" for i in range(100)]
        attachment = os.urandom(50_000)
        send(w.topo, "jaku.com", [f"{u}@jaku.com" for u in users], attach=attachment, subject="to everyone")
        harness.wait_for(lambda: count_events(w.run_dir, "jaku.com", "attachments") >= 100, 60,
                         "100 attachment events")
        mail = os.path.join(w.run_dir, "jaku.com", "mail")
        files = []
        for u in users:
            names = os.listdir(os.path.join(mail, u, "new"))
            assert len(names) == 1, (u, names)
            files.append(os.path.join(mail, u, "new", names[0]))
        inodes = {os.stat(f).st_ino for f in files}
        assert len(inodes) == 1, f"{len(inodes)} files for one message"
        assert os.stat(files[0]).st_nlink == 100, os.stat(files[0]).st_nlink
        attachments = os.path.join(w.run_dir, "jaku.com", "attachments")
        folders = os.listdir(attachments)
        assert folders == [os.path.basename(files[0])], folders
        saved = os.listdir(os.path.join(attachments, folders[0]))
        assert saved == ["plans.bin"], saved
        with open(os.path.join(attachments, folders[0], "plans.bin"), "rb") as f:
            assert f.read() == attachment
        for u in ("u000", "u042", "u099"):
            inbox = mailnet("inbox", "jaku.com", u, "--dir", w.run_dir)
            assert b"to everyone" in inbox.stdout and b"1 message\n" in inbox.stdout, inbox.stdout
            shown = mailnet("show", os.path.join(mail, u, "new", os.path.basename(files[0])), "--dir", w.run_dir)
            assert b"Saved in: " + attachments.encode() in shown.stdout, shown.stdout



def test_a_maildir_on_another_file_system_gets_a_copy():
    """Where a hard link cannot be made (EXDEV), that user gets a copy; the
    others still share one file, and the attachments are saved once."""
    with Workdir(hundred_users_topology()) as w:
        mount_point = os.path.join(w.run_dir, "jaku.com", "mail", "u001")
        os.makedirs(mount_point)
        for folder, _, _ in os.walk(w.run_dir):
            os.chmod(folder, 0o700)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "mailnet-test", mount_point],
                                 capture_output=True)
        assert mounted.returncode == 0, f"cannot mount a tmpfs (root needed): {mounted.stderr!r}"
        try:
            r = w.up()
            assert r.returncode == 0, r.stderr.decode()
            users = ["u000", "u001", "u002"]
            send(w.topo, "jaku.com", [f"{u}@jaku.com" for u in users], attach=os.urandom(5000), subject="split")
            harness.wait_for(lambda: count_events(w.run_dir, "jaku.com", "attachments") >= 3, 30, "3 attachment events")
            mail = os.path.join(w.run_dir, "jaku.com", "mail")
            files = {u: os.path.join(mail, u, "new", os.listdir(os.path.join(mail, u, "new"))[0]) for u in users}
            assert len({os.path.basename(f) for f in files.values()}) == 1, files  # one name everywhere
            assert os.stat(files["u000"]).st_ino == os.stat(files["u002"]).st_ino
            assert os.stat(files["u000"]).st_nlink == 2
            assert os.stat(files["u001"]).st_dev != os.stat(files["u000"]).st_dev
            with open(files["u000"], "rb") as a, open(files["u001"], "rb") as b:
                assert a.read() == b.read()
            assert len(os.listdir(os.path.join(w.run_dir, "jaku.com", "attachments"))) == 1
            assert not bad_modes(w.run_dir)
        finally:
            w.down()
            subprocess.run(["umount", mount_point], capture_output=True)


if __name__ == "__main__":
    harness.run_tests([
        test_modes_do_not_depend_on_the_umask_000,
        test_modes_do_not_depend_on_the_umask_022,
        test_another_user_reads_no_mail,
        test_a_run_folder_of_another_user_is_refused,
        test_a_folder_of_another_user_inside_is_refused,
        test_a_folder_writable_by_others_is_refused,
        test_planted_links_are_refused_and_never_followed,
        test_fresh_removes_links_without_following_them,
        test_readers_skip_planted_links,
        test_one_message_to_a_hundred_users_is_stored_once,
        test_a_maildir_on_another_file_system_gets_a_copy,
    ])
