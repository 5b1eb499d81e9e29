#include "launcher/imap_config.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <grp.h>
#include <pwd.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include "common/private_files.hpp"
#include "launcher/tls_ca.hpp"

namespace mailnet::launcher {

namespace fs = std::filesystem;

fs::path dovecot_binary() {
  if (const char* env = std::getenv("MAILNET_DOVECOT"); env && *env) return env;
  return "/usr/sbin/dovecot";
}

std::string dovecot_missing_problem() {
  const auto bin = dovecot_binary();
  struct stat st {};
  if (::stat(bin.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(bin.c_str(), X_OK) == 0) return "";
  const bool from_env = std::getenv("MAILNET_DOVECOT") && *std::getenv("MAILNET_DOVECOT");
  return "the topology's \"imap\"/\"pop3\" is served by Dovecot, and " + bin.string() +
         (from_env ? " (MAILNET_DOVECOT)" : "") +
         " is not an executable file. Install it (Debian, Ubuntu: sudo apt-get install dovecot-imapd dovecot-pop3d; "
         "scripts/install-deps.sh does it), or point MAILNET_DOVECOT at the dovecot binary, or remove \"imap\" and "
         "\"pop3\" from the topology";
}

fs::path mail_access_folder(const fs::path& run_dir) { return run_dir / "imap"; }

dovecot_identity choose_dovecot_identity() {
  dovecot_identity who;
  if (::geteuid() == 0) {
    // Any unprivileged account will do: inside the namespace it is the launcher.
    const passwd* pw = ::getpwnam("dovecot");
    if (!pw || pw->pw_uid == 0) pw = ::getpwnam("nobody");
    if (!pw || pw->pw_uid == 0)
      throw std::runtime_error("Dovecot does not serve mail as root, and there is neither a `dovecot` nor a `nobody` "
                               "account to run it as in a user namespace; run mailnet as another user");
    who.user = pw->pw_name;
    who.uid = pw->pw_uid;
    who.gid = pw->pw_gid;
    who.user_namespace = true;
  } else {
    const passwd* pw = ::getpwuid(::geteuid());
    if (!pw)
      throw std::runtime_error("Dovecot names the user it runs as, and uid " + std::to_string(::geteuid()) +
                               " has no name in /etc/passwd");
    who.user = pw->pw_name;
    who.uid = pw->pw_uid;
    who.gid = ::getegid();
  }
  const group* gr = ::getgrgid(who.gid);
  if (!gr) throw std::runtime_error("Dovecot names the group it runs as, and gid " + std::to_string(who.gid) +
                                    " has no name in /etc/group");
  who.group = gr->gr_name;
  return who;
}

std::string dovecot_path_problem(const fs::path& absolute) {
  const std::string p = absolute.string();
  for (unsigned char c : p)
    if (!std::isalnum(c) && std::string_view("/._-+@,~").find(static_cast<char>(c)) == std::string_view::npos)
      return "Dovecot's configuration and passwd-file cannot hold the character '" +
             (c >= 0x20 && c < 0x7f ? std::string(1, static_cast<char>(c)) : "\\x" + std::to_string(c)) +
             "' of the run folder's path " + p + ": choose a run folder (--dir) of letters, digits and / . _ - + @ , ~";
  // Dovecot's unix sockets are made in run/<name>/imap/run/ (sun_path holds 108 bytes).
  if (p.size() + std::string_view("/imap/run/token-login/imap-urlauth").size() >= 108)
    return "the run folder's path " + p + " is too long for the unix sockets Dovecot makes in it (" +
           std::to_string(p.size()) + " bytes, at most 73): choose a shorter --dir";
  return "";
}

std::string dovecot_config_text(const fs::path& run_dir, const topology& net, const dovecot_identity& who) {
  const std::string run = run_dir.string();
  const std::string own = mail_access_folder(run_dir).string();
  std::string protocols;
  if (net.mail_access.imap) protocols += "imap";
  if (net.mail_access.pop3) protocols += protocols.empty() ? "pop3" : " pop3";
  // The default address of every listener (Dovecot wants one); each has its own below.
  const std::string any_host = net.mail_access.imap ? net.mail_access.imap->host : net.mail_access.pop3->host;
  auto listener = [&](const char* service, const char* name, const std::optional<endpoint>& at) {
    std::string host = at ? at->host : any_host;
    return std::string("service ") + service + " {\n  chroot =\n  inet_listener " + name + " {\n    address = " +
           host + "\n    port = " + (at ? std::to_string(at->port) : std::string("0")) + "\n  }\n  inet_listener " +
           name + "s {\n    port = 0\n  }\n}\n";
  };
  std::string c;
  c += "# Written by mailnet at every `up` of network " + net.name + "; edits are lost.\n";
  c += "# The topology's \"imap\" and \"pop3\" say what it serves (README: IMAP and POP3).\n";
  c += "protocols = " + protocols + "\n";
  c += "listen = " + any_host + "\n";
  c += "instance_name = mailnet-" + net.name + "\n";
  c += "base_dir = " + own + "/run\n";
  c += "state_dir = " + own + "/state\n";
  c += "log_path = " + own + "/dovecot.log\n";
  c += "log_timestamp = \"%Y-%m-%dT%H:%M:%S \"\n";
  c += "auth_verbose = yes\n";  // failed logins are logged, without the password
  // Every process as this one user: no privileges to drop (see imap_config.hpp).
  c += "default_internal_user = " + who.user + "\n";
  c += "default_internal_group = " + who.group + "\n";
  c += "default_login_user = " + who.user + "\n";
  c += "mail_uid = " + who.user + "\nmail_gid = " + who.group + "\n";
  c += "first_valid_uid = " + std::to_string(who.uid) + "\nlast_valid_uid = " + std::to_string(who.uid) + "\n";
  c += "first_valid_gid = " + std::to_string(who.gid) + "\nlast_valid_gid = " + std::to_string(who.gid) + "\n";
  c += "auth_mechanisms = plain login\n";
  c += "disable_plaintext_auth = yes\n";
  if (net.tls) {
    c += "ssl = yes\n";
    c += "ssl_cert = <" + mail_access_certificate(run_dir).string() + "\n";
    c += "ssl_key = <" + mail_access_key(run_dir).string() + "\n";
    c += "ssl_min_protocol = TLSv1.2\n";
  } else {
    c += "ssl = no\n";
  }
  // The nodes' Maildir of each user (run/<name>/<domain>/mail/<user>, the user
  // as written in the topology: the users file's "box"); Dovecot's indexes and
  // uid lists beside its other files, so the Maildir holds only the mail.
  c += "mail_location = maildir:" + run + "/%d/mail/%{userdb:box}:INDEX=" + own + "/index/%d/%n:CONTROL=" + own +
       "/index/%d/%n\n";
  c += "auth_username_format = %Lu\n";
  c += "passdb {\n  driver = passwd-file\n  args = scheme=PLAIN " + own + "/users\n}\n";
  c += "userdb {\n  driver = passwd-file\n  args = " + own + "/users\n}\n";
  c += listener("imap-login", "imap", net.mail_access.imap);
  c += listener("pop3-login", "pop3", net.mail_access.pop3);
  // chroot needs root, which Dovecot does not have here.
  c += "service anvil {\n  chroot =\n}\n";
  c += "service imap-urlauth-login {\n  chroot =\n}\n";
  c += "service auth-worker {\n  user = $default_internal_user\n}\n";
  c += "protocol imap {\n  mail_max_userip_connections = 50\n}\n";
  c += "protocol pop3 {\n  pop3_uidl_format = %f\n}\n";
  return c;
}

std::string dovecot_users_text(const fs::path& run_dir, const std::vector<password_entry>& passwords,
                               const topology& net) {
  (void)run_dir;
  std::string out = "# Written by mailnet at every `up` from the passwords file: login:{PLAIN}password and the\n"
                    "# user's Maildir folder (box). Dovecot reads it; edits are lost.\n";
  for (const auto& e : passwords) {
    if (!net.find_domain(e.domain)) continue;
    std::string login = e.address();
    std::transform(login.begin(), login.end(), login.begin(), [](unsigned char ch) { return std::tolower(ch); });
    out += login + ":{PLAIN}" + e.password + "::::::userdb_box=" + e.user + "\n";
  }
  return out;
}

void prepare_mail_access(const fs::path& run_dir, const topology& net, const std::vector<password_entry>& passwords) {
  const fs::path abs = fs::absolute(run_dir).lexically_normal();
  if (auto problem = dovecot_path_problem(abs); !problem.empty()) throw std::runtime_error(problem);
  const auto who = choose_dovecot_identity();
  // Dovecot's folders made here, 0700 like the rest of the run folder
  // (Dovecot would make them 0755); it may loosen its socket folder, inside.
  for (const char* sub : {"imap/run", "imap/state", "imap/index"}) make_private_folders(run_dir, sub);
  const auto own = mail_access_folder(run_dir);
  write_private_file(own / "dovecot.conf", dovecot_config_text(abs, net, who));
  write_private_file(own / "users", dovecot_users_text(abs, passwords, net));
}

void clear_dovecot_sockets(const fs::path& run_dir) {
  std::error_code ec;
  if (fs::symlink_status(mail_access_folder(run_dir), ec).type() != fs::file_type::directory) return;
  const auto base = mail_access_folder(run_dir) / "run";
  const auto type = fs::symlink_status(base, ec).type();
  if (type == fs::file_type::directory) empty_folder(base);  // no link in it followed
  else if (type != fs::file_type::not_found) fs::remove(base);
}

std::vector<std::string> mail_access_arguments(const fs::path& run_dir, const topology& net) {
  const fs::path abs = fs::absolute(run_dir).lexically_normal();
  const auto own = mail_access_folder(abs);
  std::vector<std::string> args{"--dovecot", dovecot_binary().string(), "--config", (own / "dovecot.conf").string(),
                                "--folder", own.string()};
  if (net.mail_access.imap) args.insert(args.end(), {"--imap", net.mail_access.imap->to_string()});
  if (net.mail_access.pop3) args.insert(args.end(), {"--pop3", net.mail_access.pop3->to_string()});
  const auto who = choose_dovecot_identity();
  if (who.user_namespace)
    args.insert(args.end(), {"--user-namespace", std::to_string(who.uid) + ":" + std::to_string(who.gid)});
  return args;
}

}  // namespace mailnet::launcher
