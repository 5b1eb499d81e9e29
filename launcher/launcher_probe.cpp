// run_folder's view of the launcher named in launcher.pid: alive and ours,
// alive and another user's, or gone (leftovers to clean). kill(pid, 0)
// failing with EPERM means the process exists and runs as someone else: its
// network is up, and its files are not ours to remove.
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/run_folder.hpp"

namespace mailnet::launcher {

namespace {

using probe = run_folder::launcher_probe;

// /proc/<pid>/stat is "pid (comm) state ...". Empty comm when unreadable.
void read_stat(int pid, std::string& comm, char& state) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  auto open = stat.find('('), close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 >= stat.size()) return;
  comm = stat.substr(open + 1, close - open - 1);
  state = stat[close + 2];
}

std::string uid_text(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "another user";
  return "another user (uid " + std::to_string(st.st_uid) + ")";
}

probe other_users_launcher(const run_folder& folder, int pid) {
  std::string comm;
  char state = '?';
  read_stat(pid, comm, state);
  probe p{probe::state::other_user, pid, {}};
  p.why = "the launcher of " + folder.dir().string() + " (pid " + std::to_string(pid) +
          (comm.empty() ? "" : ", " + comm) + ") runs as " + uid_text("/proc/" + std::to_string(pid)) +
          ", not as you (uid " + std::to_string(::geteuid()) +
          "): only that user or root can control this network";
  if (comm != "mailnet")
    p.why += " (if pid " + std::to_string(pid) + " is not a mailnet launcher, that user can remove " +
             folder.pid_file().string() + ")";
  return p;
}

// The pid written in the file, or 0 when it holds none.
int read_pid(int fd) {
  char text[32] = {};
  ssize_t n;
  do n = ::read(fd, text, sizeof text - 1);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;
  try {
    long pid = std::stol(std::string(text, static_cast<std::size_t>(n)));
    return pid > 0 && pid <= 0x3fffffff ? static_cast<int>(pid) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

run_folder::launcher_probe run_folder::probe_launcher() const {
  const int fd = ::open(pid_file().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != EACCES && errno != EPERM) return {};
    return {probe::state::other_user, 0,
            "cannot read " + pid_file().string() + " (" + std::strerror(errno) + "): the network belongs to " +
                uid_text(dir().string()) + ", and only that user or root can control it"};
  }
  const int pid = read_pid(fd);
  ::close(fd);
  if (pid == 0) return {probe::state::gone, 0, {}};
  if (::kill(pid, 0) != 0) {
    if (errno == EPERM) return other_users_launcher(*this, pid);
    return {probe::state::gone, pid, {}};  // ESRCH: really gone
  }
  // A pid we may signal: a reused pid of another program is not ours, and a
  // zombie nobody reaped yet is dead.
  std::string comm;
  char state = '?';
  read_stat(pid, comm, state);
  const bool alive = comm == "mailnet" && state != 'Z' && state != 'X';
  return {alive ? probe::state::running : probe::state::gone, pid, {}};
}

std::optional<int> run_folder::running_launcher() const {
  const auto p = probe_launcher();
  if (p.what == probe::state::running || p.what == probe::state::other_user) return p.pid;
  if (p.what == probe::state::gone) {
    std::error_code ec;
    std::filesystem::remove(pid_file(), ec);
    std::filesystem::remove(control_socket(), ec);
  }
  return std::nullopt;
}

void run_folder::refuse_other_users_launcher() const {
  if (auto p = probe_launcher(); p.what == probe::state::other_user) throw std::runtime_error(p.why);
}

}  // namespace mailnet::launcher
