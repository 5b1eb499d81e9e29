#include "launcher/child_spawn.hpp"

#include <cerrno>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <pthread.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

#include "launcher/control_socket.hpp"

extern char** environ;

namespace mailnet::launcher {

namespace {

// Closes whichever of the descriptors are open; used on every error path.
struct fd_set_guard {
  std::vector<int*> fds;
  ~fd_set_guard() {
    for (int* fd : fds)
      if (*fd >= 0) ::close(*fd);
  }
};

[[noreturn]] void fail_in_child(int report_fd) {
  int e = errno;
  ssize_t unused = ::write(report_fd, &e, sizeof e);
  (void)unused;
  ::_exit(127);
}

}  // namespace

spawned_child spawn_child(const std::string& exe, const std::vector<std::string>& args) {
  // Everything the child needs is made here, before fork.
  std::vector<char*> argv;
  argv.reserve(args.size() + 2);
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  int out[2] = {-1, -1}, err[2] = {-1, -1}, report[2] = {-1, -1};
  int null_fd = -1;
  fd_set_guard guard{{&out[0], &out[1], &err[0], &err[1], &report[0], &report[1], &null_fd}};
  auto fail = [](const char* what) { throw std::system_error(errno, std::generic_category(), what); };
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 || ::pipe2(report, O_CLOEXEC) != 0)
    fail("pipe");
  null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) fail("/dev/null");

  // Every signal blocked across fork: the launcher's handlers (Asio's write
  // into the launcher's own signal pipe) must never run in the child, where a
  // Ctrl-C before setpgid would count as a second Ctrl-C in the launcher.
  sigset_t all, before;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &before);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: system calls only, no allocation, no lock.
    ::setpgid(0, 0);
    // The launcher's handlers become the default again, and a SIGINT or
    // SIGTERM meant for the launcher's group before setpgid is dropped
    // (ignoring a signal discards it when pending). Ignored signals stay
    // ignored, as exec would keep them.
    for (int sig = 1; sig < NSIG; ++sig) {
      struct sigaction current {};
      if (::sigaction(sig, nullptr, &current) != 0 || current.sa_handler == SIG_IGN) continue;
      struct sigaction action {};
      action.sa_handler = SIG_DFL;
      if (sig == SIGINT || sig == SIGTERM) {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        ::sigaction(sig, &ignore, nullptr);
      }
      if (current.sa_handler != SIG_DFL || sig == SIGINT || sig == SIGTERM) ::sigaction(sig, &action, nullptr);
    }
    ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail_in_child(report[1]);
    if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl took effect
    // dup2 clears close-on-exec on the copy, so only 0, 1 and 2 cross exec.
    if (::dup2(null_fd, 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) fail_in_child(report[1]);
    // Asio opens some descriptors without close-on-exec; none may reach the node.
    close_on_exec_above_stderr();
    ::execve(exe.c_str(), argv.data(), environ);
    fail_in_child(report[1]);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  if (pid < 0) {
    errno = fork_errno;
    fail("fork");
  }

  ::close(out[1]);
  out[1] = -1;
  ::close(err[1]);
  err[1] = -1;
  ::close(report[1]);
  report[1] = -1;
  // End of file: exec succeeded (the pipe closed on exec). An int: it failed.
  int child_errno = 0;
  ssize_t n;
  do n = ::read(report[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw std::system_error(child_errno, std::generic_category(), "exec " + exe);
  }
  spawned_child result{pid, out[0], err[0]};
  out[0] = err[0] = -1;  // handed over
  return result;
}

void discard_child(spawned_child& child) {
  if (child.pid > 0) {
    ::kill(child.pid, SIGKILL);
    while (::waitpid(child.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    child.pid = -1;
  }
  for (int* fd : {&child.out, &child.err})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

void ensure_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    const int opened = ::open("/dev/null", O_RDWR);  // takes the lowest free number: fd
    if (opened > 2) ::close(opened);
  }
}

}  // namespace mailnet::launcher
