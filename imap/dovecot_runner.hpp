// mailnet-imap: the launcher's child named "imap". It runs Dovecot in the
// foreground with the configuration the launcher wrote (launcher/imap_config.hpp),
// says `event=ready` once every listener greets, and stops it:
//
//   mailnet-imap --dovecot /usr/sbin/dovecot --config run/x/imap/dovecot.conf
//                --folder run/x/imap [--imap 127.0.0.1:1143] [--pop3 127.0.0.1:1110]
//                [--user-namespace UID:GID]
//
// Dovecot's processes share this one's process group (the launcher made it
// its own): the launcher's SIGKILL reaches them all at once; SIGTERM is
// passed to Dovecot's master, and once it has exited, whatever of its
// processes is left in the group is killed before this one exits, so a
// stopped "imap" leaves no process behind. --user-namespace UID:GID (for a
// launcher running as root): Dovecot runs in a new user namespace in which
// the launcher's uid and gid are UID and GID, an unprivileged user to Dovecot.
#pragma once

namespace mailnet::imap {
int dovecot_runner_main(int argc, char** argv);
}
