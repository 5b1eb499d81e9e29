// IMAP and POP3 through Dovecot (README: IMAP and POP3). With "imap" or
// "pop3" in the topology, `up` writes run/<name>/imap/: dovecot.conf and
// users (a passwd-file of every user, login "user@domain" in lower case,
// password from run/<name>/passwords), both 0600; the supervisor then runs
// mailnet-imap (imap/), which runs Dovecot with that configuration and says
// when it listens. Dovecot's sockets (run/), state, indexes and log stay in
// that folder too; the Maildirs stay where the nodes write them.
//
// Dovecot does not give mail to uid 0 and will not run its login processes
// as root. A launcher running as root therefore runs Dovecot in a user
// namespace where the launcher's uid is the `dovecot` account's: Dovecot
// sees an unprivileged user that owns the run folder, and whatever it
// writes is the launcher's on disk. Any other launcher runs Dovecot as its
// own user, without privileges to drop.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/passwords.hpp"
#include "common/topology.hpp"

namespace mailnet::launcher {

// The Dovecot binary: $MAILNET_DOVECOT when set, else /usr/sbin/dovecot.
std::filesystem::path dovecot_binary();

// Empty when the binary is there and executable; else what to install, for the user.
std::string dovecot_missing_problem();

// run_dir / "imap"
std::filesystem::path mail_access_folder(const std::filesystem::path& run_dir);

// The user Dovecot runs as (as Dovecot sees it) and, for a root launcher,
// the user namespace that makes the launcher that user.
struct dovecot_identity {
  std::string user, group;
  unsigned uid = 0, gid = 0;
  bool user_namespace = false;  // map uid/gid onto the launcher's own
};

// Throws std::runtime_error saying why no identity fits (a launcher whose
// uid has no name in /etc/passwd, a root without a `dovecot` or `nobody` account).
dovecot_identity choose_dovecot_identity();

// A path Dovecot's configuration can hold as it is: an absolute path of
// letters, digits and / . _ - + @ , ~ (no quoting, no %-expansion, no
// separator of a passwd-file or of a list of arguments). Empty when it fits,
// else the reason.
std::string dovecot_path_problem(const std::filesystem::path& absolute);

// The text of dovecot.conf and of the users file (tested as text in tests/unit).
std::string dovecot_config_text(const std::filesystem::path& run_dir, const topology& net, const dovecot_identity& who);
std::string dovecot_users_text(const std::filesystem::path& run_dir, const std::vector<password_entry>& passwords,
                               const topology& net);

// Writes run/<name>/imap/dovecot.conf and users. Throws std::runtime_error
// naming the problem.
void prepare_mail_access(const std::filesystem::path& run_dir, const topology& net,
                         const std::vector<password_entry>& passwords);

// Empties run/<name>/imap/run/, Dovecot's sockets of an earlier run: it holds
// a link to dovecot.conf, which the run folder's check refuses. Before that check.
void clear_dovecot_sockets(const std::filesystem::path& run_dir);

// mailnet-imap's arguments for this run folder.
std::vector<std::string> mail_access_arguments(const std::filesystem::path& run_dir, const topology& net);

}  // namespace mailnet::launcher
