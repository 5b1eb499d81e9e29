// The users' passwords of a network: one file, run/<name>/passwords, mode
// 0600 (set explicitly, never from the umask; written without following a
// link: common/private_files.hpp). `up` writes it; the nodes read it for
// AUTH on their submission listener; `mailnet users` and `mailnet send` read
// it; an IMAP/POP3 server can use it as it is.
//
// Format: Dovecot's passwd-file, one line per user, `#` lines are comments:
//
//   finn@jaku.com:{PLAIN}the-password
//
// The address is the user as written in the topology, '@', the domain in
// lower case. {PLAIN}: the password itself, because `mailnet users` shows it
// and `mailnet send` uses it; the file is as private as the mail it guards.
// A password written in the topology is used as it is; a user without one
// gets a generated password (20 letters and digits from getrandom(2), ~119
// bits), kept across restarts and new with `up --fresh`.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/topology.hpp"

namespace mailnet {

struct password_entry {
  std::string user;    // as in the topology
  std::string domain;  // lower case
  std::string password;
  std::string address() const { return user + "@" + domain; }
};

// run_dir / "passwords"
std::filesystem::path passwords_file(const std::filesystem::path& run_dir);

// The entries of a passwords file; throws std::runtime_error naming the file
// and the line when it cannot be read or a line is not `user@domain:{PLAIN}pw`.
std::vector<password_entry> read_passwords(const std::filesystem::path& file);

// Writes run_dir/passwords for every user of net: the topology's password,
// else the one the file already has for that user, else a new generated one.
// Returns what it wrote, in topology order.
std::vector<password_entry> prepare_passwords(const std::filesystem::path& run_dir, const topology& net);

// 20 characters of [A-Za-z0-9] from getrandom(2).
std::string generate_password();

// The entry for login in domain: login is "user@domain" or "user" (then of
// domain); the user compared without regard to case, as mail to it is.
const password_entry* find_password(const std::vector<password_entry>& entries, std::string_view login,
                                    std::string_view domain);

// True when login (as for find_password) has this password; the comparison
// takes the same time wherever the passwords differ.
bool check_password(const std::vector<password_entry>& entries, std::string_view login, std::string_view domain,
                    std::string_view password);

}  // namespace mailnet
