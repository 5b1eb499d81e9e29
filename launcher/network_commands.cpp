#include "launcher/commands.hpp"
#include "launcher/bind_rights.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>
#include <cerrno>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/terminal_text.hpp"
#include "common/topology.hpp"
#include "launcher/control_client.hpp"
#include "launcher/display_width.hpp"
#include "launcher/scenario.hpp"
#include "launcher/supervisor.hpp"
#include "launcher/tls_ca.hpp"
#include "common/passwords.hpp"
#include "common/mail/spool.hpp"

namespace mailnet::launcher {

namespace {

using json = nlohmann::json;

// Waits for the end of the launcher named in launcher.pid: on its pidfd
// (pidfd_open(2), Linux 5.3) when it can be had, else by looking at
// launcher.pid every 100 ms. The pidfd is taken, and the pid file read again
// after it, before anything is asked: a pid that a launcher gone meanwhile
// left to another process is never waited on.
class launcher_exit_watch {
 public:
  explicit launcher_exit_watch(const run_folder& folder) : folder_(folder) {
    const auto pid = folder.running_launcher();
    if (!pid) return;
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0));
    if (fd < 0) return;
    if (folder.running_launcher() != pid) {
      ::close(fd);
      return;
    }
    pidfd_ = fd;
  }
  ~launcher_exit_watch() {
    if (pidfd_ >= 0) ::close(pidfd_);
  }
  launcher_exit_watch(const launcher_exit_watch&) = delete;
  launcher_exit_watch& operator=(const launcher_exit_watch&) = delete;

  // Returns when the launcher is gone or after limit.
  void wait(std::chrono::milliseconds limit) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    if (pidfd_ >= 0) {
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return;
        pollfd p{pidfd_, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n > 0) {
          // Exited: its launcher.pid is left to the check after (it
          // removes it itself on a clean end; a leftover is cleaned there).
          return;
        }
        if (n < 0 && errno != EINTR) break;  // then as without a pidfd
      }
    }
    while (folder_.running_launcher() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

 private:
  const run_folder& folder_;
  int pidfd_ = -1;
};

// "1 domain", "3 domains".
std::string counted(std::size_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::string uptime_text(long s) {
  if (s <= 0) return "-";
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string(s / 60 % 60) + "m";
}

// Every text printed from here on came from the launcher, a queue file or a
// log: it goes through terminal_safe (common/terminal_text.hpp).
void print_status_table(const json& status) {
  std::cout << "network " << terminal_safe(status.value("name", "")) << " (" << terminal_safe(status.value("dir", ""))
            << ")\n";
  // Columns as wide as their content (a long domain or state never runs
  // into the next column).
  std::vector<std::vector<std::string>> rows{
      {"NODE", "STATE", "PID", "ADDRESS", "UPTIME", "STARTTLS", "RELAY TLS", "RECEIVED", "DELIVERED", "RELAYED", "QUEUED", "BOUNCED"}};
  for (const auto& n : status["nodes"]) {
    std::string state = n.value("state", "");
    if (!n.value("exit", "").empty() && state != "ready" && state != "starting") state += " (" + n.value("exit", "") + ")";
    auto num = [&](const char* key) { return n.contains(key) ? std::to_string(n[key].get<long>()) : std::string("-"); };
    rows.push_back({terminal_safe(n.value("name", "")), terminal_safe(state),
                    n.value("pid", 0) ? std::to_string(n.value("pid", 0)) : "-", terminal_safe(n.value("listen", "")),
                    uptime_text(n.value("uptime_s", 0L)), terminal_safe(n.value("tls", "-")),
                    terminal_safe(n.value("tls_relay", "-")),
                    num("received") + (n.value("received_tls", 0L) ? " (" + num("received_tls") + " TLS)" : ""),
                    num("delivered"), num("relayed"),
                    num("queued"), num("bounced")});
  }
  std::cout << format_table(rows);
  // Submission listeners, under the table: their address and failed AUTHs.
  for (const auto& n : status["nodes"])
    if (!n.value("submission", "").empty())
      std::cout << terminal_safe(n.value("name", "")) << ": submission on " << terminal_safe(n.value("submission", ""))
                << ", " << n.value("auth_failures", 0L) << " failed AUTH" << (n.value("auth_failures", 0L) == 1 ? "" : "s")
                << " since up\n";
}

std::string time_text(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

int print_queue(const run_folder& folder, const std::string& only) {
  json topo = json::parse(std::ifstream(folder.topology_json()));
  std::size_t total = 0;
  if (!only.empty() && std::none_of(topo["domains"].begin(), topo["domains"].end(),
                                    [&](const json& d) { return d["name"] == only; })) {
    std::cerr << "mailnet: no domain " << terminal_safe(only) << " in network " << terminal_safe(topo.value("name", ""))
              << "\n";
    return 2;
  }
  for (const auto& d : topo["domains"]) {
    std::string domain = d["name"];
    if (!only.empty() && domain != only) continue;
    node::spool queue(folder.dir() / domain / "queue");
    std::error_code ec;
    if (!std::filesystem::exists(folder.dir() / domain / "queue", ec)) continue;
    for (const auto& id : queue.list()) {
      std::optional<node::queued_message> m;
      try {
        m = queue.load(id);
      } catch (const std::exception& e) {
        std::cout << terminal_safe(domain) << "  " << terminal_safe(id) << "  (unreadable: " << terminal_safe(e.what())
                  << ")\n";
        continue;
      }
      if (!m) continue;
      ++total;
      std::string to;
      for (const auto& r : m->rcpts)
        if (r.state == "pending") to += (to.empty() ? "" : ", ") + r.address;
      std::cout << terminal_safe(domain) << "  " << terminal_safe(m->id) << "  from <" << terminal_safe(m->mail_from)
                << ">  to " << terminal_safe(to) << "\n"
                << "    attempts " << m->attempts << ", next try "
                << (m->next_try_ms ? time_text(m->next_try_ms) : std::string("now")) << ", size "
                << m->message.size() << "\n";
      if (!m->last_error.empty()) std::cout << "    last error: " << terminal_safe(m->last_error) << "\n";
    }
  }
  std::cout << total << (total == 1 ? " message" : " messages") << " waiting\n";
  return 0;
}

// Prints a log file from offset; returns the new offset.
std::uintmax_t print_from(const std::filesystem::path& file, std::uintmax_t offset, const std::string& prefix) {
  // A log that is a link was planted by someone else: it is not printed.
  if (std::filesystem::is_symlink(std::filesystem::symlink_status(file))) return offset;
  std::ifstream in(file, std::ios::binary);
  if (!in) return offset;
  in.seekg(static_cast<std::streamoff>(offset));
  std::string line;
  std::uintmax_t pos = offset;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a line still being written: read it next time
    pos += line.size() + 1;
    std::cout << prefix << terminal_safe(line) << "\n";
  }
  std::cout << std::flush;
  return pos;
}

int print_logs(const run_folder& folder, const std::string& node, bool follow) {
  json topo = json::parse(std::ifstream(folder.topology_json()));
  std::vector<std::pair<std::string, std::filesystem::path>> files;
  auto add = [&](const std::string& name) {
    files.emplace_back(name, name == "resolver" ? folder.dir() / "resolver" / "resolver.log"
                             : name == "imap"   ? folder.dir() / "imap" / "dovecot.log"  // Dovecot's own log
                                                : folder.dir() / name / "node.log");
  };
  if (node.empty() || node == "resolver") add("resolver");
  if ((node.empty() || node == "imap") && topo.value("imap", json(false)).is_object()) add("imap");
  else if ((node.empty() || node == "imap") && topo.value("pop3", json(false)).is_object()) add("imap");
  for (const auto& d : topo["domains"])
    if (node.empty() || node == d["name"]) add(d["name"]);
  if (files.empty()) {
    std::cerr << "mailnet: no node named '" << terminal_safe(node) << "'\n";
    return 2;
  }
  std::size_t width = 8;
  for (const auto& f : files) width = std::max(width, f.first.size());
  std::vector<std::uintmax_t> offsets(files.size(), 0);
  auto prefix = [&](const std::string& name) {
    if (files.size() == 1) return std::string();
    std::string p = name;
    p.resize(width, ' ');
    return p + " | ";
  };
  for (;;) {
    for (std::size_t i = 0; i < files.size(); ++i)
      offsets[i] = print_from(files[i].second, offsets[i], prefix(files[i].first));
    if (!follow) return 0;
    if (!folder.running_launcher()) return 0;  // the network went down: stop following
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

void register_network_commands(CLI::App& app, command_registry& commands) {
  auto up = std::make_shared<up_options>();
  auto up_dir = std::make_shared<std::string>();
  auto* up_cmd = app.add_subcommand("up", "start the network described by a topology file");
  up_cmd->add_option("file", up->topology_file, "topology file (JSON)")->required();
  up_cmd->add_option("--dir", *up_dir, "output folder (default: ./run/<name>)");
  up_cmd->add_flag("--fresh", up->fresh, "start with empty Maildirs and queues");
  up_cmd->add_flag("-d,--detach", up->detach, "return once every node is ready; keep running in the background");
  commands.add(up_cmd, [up, up_dir] {
    if (!up_dir->empty()) up->dir = *up_dir;
    return run_up(*up);
  });

  auto validate_file = std::make_shared<std::string>();
  auto* validate_cmd = app.add_subcommand("validate", "check a topology file without starting anything");
  validate_cmd->add_option("file", *validate_file, "topology file (JSON)")->required();
  commands.add(validate_cmd, [validate_file] {
    try {
      auto s = load_scenario(*validate_file);
      if (auto problem = privileged_port_problem(s.net, current_bind_rights()); !problem.empty()) {
        std::cerr << "mailnet: " << *validate_file << ": " << problem << "\n";
        return 2;
      }
      std::cout << *validate_file << ": ok, network " << s.net.name << " with "
                << counted(s.net.domains.size(), "domain") << " and " << counted(s.steps.size(), "step") << "\n";
      return 0;
    } catch (const topology_error& e) {
      std::cerr << "mailnet: " << e.what() << "\n";
      return 2;
    }
  });

  // Commands for a running network, from any terminal. Each gets its own
  // options, since CLI11 binds an option to one variable.
  struct target_options {
    std::string dir, net, target;
    bool flag = false;
    network_choice choice() const {
      network_choice c;
      if (!dir.empty()) c.dir = dir;
      c.net = net;
      return c;
    }
  };
  // may_be_down: the command only reads files, also after `mailnet down`.
  auto network_command = [&](const std::string& name, const std::string& help,
                             std::function<int(const run_folder&, const target_options&)> run, bool may_be_down = false) {
    auto opts = std::make_shared<target_options>();
    auto* cmd = app.add_subcommand(name, help);
    cmd->add_option("--dir", opts->dir, "the network's output folder");
    cmd->add_option("--net", opts->net, "the network's name, when several are up under ./run");
    commands.add(cmd, [opts, run, may_be_down] {
      // A node is named by its domain, in any case, with or without the root's dot.
      for (auto& ch : opts->target) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (opts->target.size() > 1 && opts->target.back() == '.') opts->target.pop_back();
      try {
        return run(may_be_down ? locate_network_files(opts->choice()) : locate_network(opts->choice()), *opts);
      } catch (const std::exception& e) {
        std::cerr << "mailnet: " << terminal_safe(e.what()) << "\n";
        return 1;
      }
    });
    return std::pair{cmd, opts};
  };
  // Sends one request; prints the error and returns 1 when the launcher says no.
  auto ask = [](const run_folder& folder, const nlohmann::json& request, nlohmann::json& reply) {
    reply = ask_launcher(folder, request);
    if (reply.value("ok", false)) return 0;
    std::cerr << "mailnet: " << terminal_safe(reply.value("error", "failed")) << "\n";
    return 1;
  };

  auto [status_cmd, status_opts] = network_command(
      "status", "show every node: state, pid, address, uptime, mail counters",
      [ask](const run_folder& folder, const target_options& o) {
        nlohmann::json reply;
        if (int rc = ask(folder, {{"cmd", "status"}}, reply)) return rc;
        // ASCII JSON (\uXXXX for the rest) is safe on a terminal and still JSON.
        if (o.flag)
          std::cout << terminal_safe(reply["status"].dump(2, ' ', true, json::error_handler_t::replace), newlines::keep)
                    << "\n";
        else print_status_table(reply["status"]);
        return 0;
      });
  status_cmd->add_flag("--json", status_opts->flag, "machine-readable output");

  for (const auto& [name, help] : std::vector<std::pair<std::string, std::string>>{
           {"kill", "SIGKILL a node (a simulated crash); it stays down"},
           {"stop", "stop a node gracefully"},
           {"start", "start a stopped node and wait until it is ready"},
           {"restart", "stop and start a node"}}) {
    auto [cmd, opts] = network_command(name, help, [ask, name = name](const run_folder& folder, const target_options& o) {
      nlohmann::json reply;
      if (int rc = ask(folder, {{"cmd", name}, {"name", o.target}}, reply)) return rc;
      std::cout << terminal_safe(o.target) << ": " << terminal_safe(reply.value("state", "ok")) << "\n";
      return 0;
    });
    cmd->add_option("node", opts->target, "a domain, or 'resolver'")->required();
  }

  network_command("down", "stop every node and the launcher", [ask](const run_folder& folder, const target_options&) {
    // The launcher's pidfd, taken before asking: its end is then seen the
    // moment it comes, not at the next turn of a polling loop.
    launcher_exit_watch gone(folder);
    const auto asked = std::chrono::steady_clock::now();
    nlohmann::json reply;
    if (int rc = ask(folder, {{"cmd", "down"}}, reply)) return rc;
    // The launcher answers first, then stops its children and waits for
    // each: wait for it to be gone. Said at once, for a wait that may take
    // seconds (a session in DATA has 5 s to finish).
    if (const long n = reply.value("stopping", 0L); n > 0)
      std::cout << "mailnet: stopping " << n << (n == 1 ? " process" : " processes") << " and the launcher"
                << std::endl;
    gone.wait(std::chrono::seconds(20));
    if (auto pid = folder.running_launcher()) {
      std::cerr << "mailnet: the launcher (pid " << *pid << ") is still running after 20 s\n";
      return 1;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
    std::cout << "mailnet: network is down (" << std::fixed << std::setprecision(2) << seconds << " s)\n";
    return 0;
  });

  auto [flush_cmd, flush_opts] = network_command(
      "flush", "retry waiting mail now", [ask](const run_folder& folder, const target_options& o) {
        nlohmann::json reply;
        if (int rc = ask(folder, {{"cmd", "flush"}, {"name", o.target}}, reply)) return rc;
        std::string told;
        for (const auto& n : reply.value("flushed", json::array()))
          told += (told.empty() ? "" : ", ") + n.get<std::string>();
        if (told.empty()) std::cout << "mailnet: no node is ready to retry its mail\n";
        else std::cout << terminal_safe(told) << ": retrying waiting mail now (see `mailnet queue`)\n";
        for (const auto& n : reply.value("skipped", json::array()))
          std::cout << terminal_safe(n.get<std::string>()) << ": not asked\n";
        return 0;
      });
  flush_cmd->add_option("domain", flush_opts->target, "only this node retries what it holds (default: every node)");

  network_command("web", "print the address of the network's dashboard and HTTP API",
                  [ask](const run_folder& folder, const target_options&) {
                    nlohmann::json reply;
                    if (int rc = ask(folder, {{"cmd", "status"}}, reply)) return rc;
                    if (!reply["status"].contains("web")) {
                      std::cerr << "mailnet: network " << terminal_safe(reply["status"].value("name", ""))
                                << " has no web server (\"web\": false in its topology)\n";
                      return 1;
                    }
                    std::cout << terminal_safe(reply["status"].value("web", "")) << "\n";
                    return 0;
                  });

  network_command(
      "ca", "print the path of the network's CA certificate (for openssl s_client -CAfile, smtplib's starttls)",
      [](const run_folder& folder, const target_options&) {
        const auto ca = std::filesystem::absolute(ca_certificate(folder.dir()));
        std::error_code ec;
        if (std::filesystem::symlink_status(ca, ec).type() != std::filesystem::file_type::regular) {
          std::cerr << "mailnet: " << terminal_safe(ca.string())
                    << " does not exist: the network has no certificate authority (\"tls\": false in its topology)\n";
          return 1;
        }
        std::cout << terminal_safe(ca.string()) << "\n";
        return 0;
      },
      true);

  auto [users_cmd, users_opts] = network_command(
      "users", "print a domain's users with their passwords (for AUTH on its submission listener, IMAP and POP3)",
      [](const run_folder& folder, const target_options& o) {
        const auto net = load_topology(folder.topology_json());
        const auto* d = net.find_domain(o.target);
        if (!d) {
          std::cerr << "mailnet: users: no domain \"" << terminal_safe(o.target) << "\" in network " << terminal_safe(net.name)
                    << "\n";
          return 1;
        }
        const auto entries = read_passwords(passwords_file(folder.dir()));
        // Columns: user names and passwords are printable ASCII (topology.hpp).
        const std::string missing = "(none: run up again)";
        std::size_t width = 0, pw_width = 0;
        for (const auto& u : d->users) {
          width = std::max(width, u.size() + 1 + d->name.size());
          const auto* e = find_password(entries, u, d->name);
          pw_width = std::max(pw_width, e ? e->password.size() : missing.size());
        }
        for (const auto& u : d->users) {
          const auto* e = find_password(entries, u, d->name);
          std::string address = u + "@" + d->name;
          std::string password = e ? e->password : missing;
          address.resize(width, ' ');
          password.resize(pw_width, ' ');
          std::cout << terminal_safe(address) << "  " << terminal_safe(password) << "  "
                    << (d->passwords.count(u) ? "(topology)" : "(generated)") << "\n";
        }
        if (d->submission) std::cout << "submission: " << d->submission->to_string() << " (STARTTLS, then AUTH PLAIN or LOGIN)\n";
        else std::cout << "submission: none (no \"submission\" for this domain in the topology)\n";
        // Dovecot's listeners, for reading the mail (README: IMAP and POP3).
        const std::string tls = net.tls ? "STARTTLS, " : "";
        if (net.mail_access.imap)
          std::cout << "imap: " << net.mail_access.imap->to_string() << " (" << tls << "login user@" << d->name << ")\n";
        if (net.mail_access.pop3)
          std::cout << "pop3: " << net.mail_access.pop3->to_string() << " (" << tls << "login user@" << d->name << ")\n";
        std::cout << "file: " << terminal_safe(std::filesystem::absolute(passwords_file(folder.dir())).string()) << "\n";
        return 0;
      },
      true);
  users_cmd->add_option("domain", users_opts->target, "a domain of the network")->required();

  auto [queue_cmd, queue_opts] = network_command(
      "queue", "list the mail waiting in the nodes' queues",
      [](const run_folder& folder, const target_options& o) { return print_queue(folder, o.target); });
  queue_cmd->add_option("domain", queue_opts->target, "only this domain's queue");

  auto [logs_cmd, logs_opts] = network_command(
      "logs", "print the nodes' event logs",
      [](const run_folder& folder, const target_options& o) { return print_logs(folder, o.target, o.flag); }, true);
  logs_cmd->add_option("node", logs_opts->target, "a domain, or 'resolver'");
  logs_cmd->add_flag("-f,--follow", logs_opts->flag, "keep printing new lines until the network goes down");
}

}  // namespace mailnet::launcher
