#include "imap/dovecot_runner.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "common/event_log.hpp"

namespace mailnet::imap {

namespace {

namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;

// How long Dovecot may take to listen: generous for a loaded machine under a
// sanitizer; the launcher's own start deadline is the one that counts.
constexpr auto listen_deadline = std::chrono::seconds(60);

struct listener {
  std::string protocol;  // "imap" or "pop3"
  std::string text;      // as given, "127.0.0.1:1143"
  sockaddr_storage address{};
  socklen_t length = 0;
};

std::optional<listener> parse_listener(const std::string& protocol, const std::string& text) {
  listener l{protocol, text, {}, 0};
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string host = text.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(text.substr(colon + 1));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (port <= 0 || port > 65535) return std::nullopt;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* a = reinterpret_cast<sockaddr_in6*>(&l.address);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a->sin6_addr) != 1) return std::nullopt;
    l.length = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&l.address);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return std::nullopt;
    l.length = sizeof(sockaddr_in);
  }
  return l;
}

// Connects and reads the greeting's first line (up to 2 s): "* OK" for IMAP,
// "+OK" for POP3. nullopt when nothing accepts there.
std::optional<std::string> greeting(const listener& l) {
  int fd = ::socket(l.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&l.address), l.length) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  std::string line;
  const auto until = clock::now() + std::chrono::seconds(2);
  char buf[512];
  while (line.find('\n') == std::string::npos && line.size() < 4096) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return line.substr(0, line.find('\r'));
}

bool greets(const listener& l) {
  auto g = greeting(l);
  return g && g->rfind(l.protocol == "imap" ? "* OK" : "+OK", 0) == 0;
}

void write_proc_file(const char* file, const std::string& text) {
  int fd = ::open(file, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int saved = errno;
    std::cerr << "mailnet-imap: cannot write " << file << ": " << std::strerror(saved) << "\n";
    _exit(126);
  }
  ::close(fd);
}

// In the forked child (this process has one thread): the namespace, the
// parent-death signal, then Dovecot.
[[noreturn]] void exec_dovecot(const std::string& dovecot, const std::string& config, const std::string& userns,
                               const sigset_t& old_mask, pid_t parent) {
  if (!userns.empty()) {
    const auto colon = userns.find(':');
    const std::string uid = userns.substr(0, colon), gid = userns.substr(colon + 1);
    const auto outer_uid = ::geteuid();
    const auto outer_gid = ::getegid();
    if (::unshare(CLONE_NEWUSER) != 0) {
      std::cerr << "mailnet-imap: cannot make a user namespace for Dovecot (" << std::strerror(errno)
                << "): as root, Dovecot runs as an unprivileged user in one (see README: IMAP and POP3); "
                   "run mailnet as another user\n";
      _exit(126);
    }
    // One line each, mapping our own ids: what a process may write for itself.
    write_proc_file("/proc/self/setgroups", "deny");
    write_proc_file("/proc/self/uid_map", uid + " " + std::to_string(outer_uid) + " 1\n");
    write_proc_file("/proc/self/gid_map", gid + " " + std::to_string(outer_gid) + " 1\n");
  }
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) _exit(1);  // the runner died before prctl
  ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  std::vector<char*> argv{const_cast<char*>(dovecot.c_str()), const_cast<char*>("-F"), const_cast<char*>("-c"),
                          const_cast<char*>(config.c_str()), nullptr};
  ::execv(dovecot.c_str(), argv.data());
  std::cerr << "mailnet-imap: cannot run " << dovecot << ": " << std::strerror(errno) << "\n";
  _exit(127);
}

// SIGKILL to every other process of our process group (Dovecot's, once its
// master is gone), found by pid in /proc.
void kill_rest_of_group() {
  const pid_t self = ::getpid(), group = ::getpgrp();
  for (int round = 0; round < 3; ++round) {
    bool found = false;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
      const auto name = e.path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = std::stoi(name);
      if (pid == self) continue;
      std::ifstream stat(e.path() / "stat");
      std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
      const auto close = text.rfind(')');
      if (close == std::string::npos) continue;
      // After ") ": state, ppid, pgrp.
      char state = 0;
      int ppid = 0, pgrp = 0;
      if (std::sscanf(text.c_str() + close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3) continue;
      if (pgrp != group || state == 'Z') continue;
      ::kill(pid, SIGKILL);
      found = true;
    }
    if (!found) return;
    ::usleep(20000);
  }
}

// The last line of Dovecot's log that says why it stopped, for the launcher.
std::string last_fatal(const fs::path& log) {
  std::ifstream in(log);
  std::string line, found;
  while (std::getline(in, line))
    if (line.find("Fatal:") != std::string::npos || line.find("Error:") != std::string::npos) found = line;
  return found;
}

std::string exit_text(int status) {
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "exit " + std::to_string(WEXITSTATUS(status));
}

}  // namespace

int dovecot_runner_main(int argc, char** argv) {
  std::string dovecot, config, folder, userns;
  std::vector<listener> listeners;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--dovecot") dovecot = value;
    else if (key == "--config") config = value;
    else if (key == "--folder") folder = value;
    else if (key == "--user-namespace") userns = value;
    else if (key == "--imap" || key == "--pop3") {
      auto l = parse_listener(key.substr(2), value);
      if (!l) {
        std::cerr << "mailnet-imap: " << key << ": expected host:port, found " << value << "\n";
        return 2;
      }
      listeners.push_back(*l);
    } else {
      std::cerr << "mailnet-imap: unknown option " << key << "\n";
      return 2;
    }
  }
  if (dovecot.empty() || config.empty() || folder.empty() || listeners.empty() ||
      (!userns.empty() && userns.find(':') == std::string::npos)) {
    std::cerr << "usage: mailnet-imap --dovecot BIN --config FILE --folder DIR (--imap|--pop3 HOST:PORT)... "
                 "[--user-namespace UID:GID]\n";
    return 2;
  }
  event_log log;
  try {
    log.open(fs::path(folder) / "imap.log", true);
  } catch (const std::exception& e) {
    std::cerr << "mailnet-imap: " << e.what() << "\n";
    return 1;
  }
  // A port another program holds would make the readiness check below greet
  // that program: say so instead.
  for (const auto& l : listeners)
    if (greeting(l)) {
      std::cerr << "mailnet-imap: " << l.text << " (" << l.protocol
                << ") is taken by another program: stop it, or choose another address for $." << l.protocol
                << ".listen\n";
      return 1;
    }
  // A master killed with SIGKILL leaves its pid file; Dovecot refuses to start
  // while the pid in it is alive, and that pid may be anyone's by now.
  std::error_code ignored;
  fs::remove(fs::path(folder) / "run" / "master.pid", ignored);

  sigset_t wanted, old_mask;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGTERM);
  sigaddset(&wanted, SIGINT);
  sigaddset(&wanted, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &wanted, &old_mask);
  const pid_t parent = ::getpid();
  const pid_t master = ::fork();
  if (master < 0) {
    std::cerr << "mailnet-imap: fork: " << std::strerror(errno) << "\n";
    return 1;
  }
  if (master == 0) exec_dovecot(dovecot, config, userns, old_mask, parent);

  bool ready = false, stopping = false;
  const auto deadline = clock::now() + listen_deadline;
  for (;;) {
    // Not ready yet: look every 50 ms; then wait for a signal alone.
    timespec wait{0, 50'000'000};
    siginfo_t info{};
    const int sig = ready || stopping ? ::sigwaitinfo(&wanted, &info) : ::sigtimedwait(&wanted, &info, &wait);
    if (sig == SIGTERM || sig == SIGINT) {
      stopping = true;
      ::kill(master, SIGTERM);
    }
    int status = 0;
    if (::waitpid(master, &status, WNOHANG) == master) {
      kill_rest_of_group();
      if (stopping) {
        log.write({{"event", "stopped"}, {"dovecot", exit_text(status)}});
        return 0;
      }
      const auto why = last_fatal(fs::path(folder) / "dovecot.log");
      std::cerr << "mailnet-imap: Dovecot " << (ready ? "stopped" : "stopped before it listened") << " ("
                << exit_text(status) << ")" << (why.empty() ? "" : ": " + why) << "; see " << folder
                << "/dovecot.log\n";
      return 1;
    }
    if (ready || stopping) continue;
    bool all = true;
    for (const auto& l : listeners) all = all && greets(l);
    if (all) {
      ready = true;
      std::string imap_at = "no", pop3_at = "no";
      for (const auto& l : listeners) (l.protocol == "imap" ? imap_at : pop3_at) = l.text;
      log.write({{"event", "ready"}, {"imap", imap_at}, {"pop3", pop3_at}, {"dovecot_pid", std::to_string(master)},
                 {"user_namespace", userns.empty() ? "no" : userns}});
    } else if (clock::now() > deadline) {
      std::cerr << "mailnet-imap: Dovecot did not listen within " << listen_deadline.count() << " s; see " << folder
                << "/dovecot.log\n";
      ::kill(master, SIGKILL);
      ::waitpid(master, &status, 0);
      kill_rest_of_group();
      return 1;
    }
  }
}

}  // namespace mailnet::imap
