#include "launcher/child_spawn.hpp"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

extern char** environ;

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)  // <linux/close_range.h>, Linux 5.11
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

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

// The kernel's struct sigaction (rt_sigaction), not glibc's: the child calls
// the system call itself. Only the handler is read, and only SIG_DFL or
// SIG_IGN written, so the restorer is never needed.
struct kernel_sigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  unsigned long mask;
};
constexpr int highest_signal = 64;

// What the child needs, all made before clone; error is the child's answer.
struct child_plan {
  const char* exe;
  char* const* argv;
  char* const* envp;
  int null_fd, out_fd, err_fd;
  pid_t parent;
  sigset_t mask_after;  // the spawning thread's mask, restored just before exec
  int fd_limit;         // for kernels without close_range
  int error = 0;        // written by the child when something fails (shared memory)
  const char* failed_step = nullptr;
};

// The child, in the launcher's memory until execve: raw system calls only.
// Not instrumented: a sanitizer's stack poisoning or interceptor here would
// change the launcher's own state.
__attribute__((no_sanitize("address", "undefined"))) int child_main(void* arg) {
  auto* plan = static_cast<child_plan*>(arg);
  auto fail = [plan](const char* step) {
    plan->error = errno;
    plan->failed_step = step;
    ::syscall(SYS_exit, 127);
  };
  ::syscall(SYS_setpgid, 0, 0);
  // The launcher's handlers become the default again (a handler run here
  // would run on the launcher's memory), and a SIGINT or SIGTERM meant for
  // the launcher's group before setpgid is dropped (ignoring a signal
  // discards it when pending). Ignored signals stay ignored, as exec keeps them.
  for (int sig = 1; sig <= highest_signal; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    kernel_sigaction current{};
    if (::syscall(SYS_rt_sigaction, sig, nullptr, &current, sizeof(unsigned long)) != 0 || current.handler == SIG_IGN)
      continue;
    kernel_sigaction action{};
    action.handler = SIG_DFL;
    if (sig == SIGINT || sig == SIGTERM) {
      kernel_sigaction ignore{};
      ignore.handler = SIG_IGN;
      ::syscall(SYS_rt_sigaction, sig, &ignore, nullptr, sizeof(unsigned long));
    }
    if (current.handler != SIG_DFL || sig == SIGINT || sig == SIGTERM)
      ::syscall(SYS_rt_sigaction, sig, &action, nullptr, sizeof(unsigned long));
  }
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &plan->mask_after, nullptr, sizeof(unsigned long));
  if (::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) fail("prctl");
  if (::syscall(SYS_getppid) != plan->parent) ::syscall(SYS_exit, 1);  // the launcher died before prctl took effect
  // dup3 clears close-on-exec on the copy, so only 0, 1 and 2 cross exec.
  if (::syscall(SYS_dup3, plan->null_fd, 0, 0) < 0 || ::syscall(SYS_dup3, plan->out_fd, 1, 0) < 0 ||
      ::syscall(SYS_dup3, plan->err_fd, 2, 0) < 0)
    fail("dup3");
  // Asio and OpenSSL open some descriptors without close-on-exec; none may reach the node.
  if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
    for (int fd = 3; fd < plan->fd_limit; ++fd) ::syscall(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
  ::syscall(SYS_execve, plan->exe, plan->argv, plan->envp);
  fail("exec");
  return 127;
}

int descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1024;
  return static_cast<int>(limit.rlim_cur > 1 << 20 ? 1 << 20 : limit.rlim_cur);
}

// The child's own stack (it must not use the blocked thread's): 64 KiB is
// far more than child_main's frames.
struct child_stack {
  static constexpr std::size_t size = 64 * 1024;
  void* base = MAP_FAILED;
  child_stack() { base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0); }
  ~child_stack() {
    if (base != MAP_FAILED) ::munmap(base, size);
  }
  void* top() const { return static_cast<char*>(base) + size; }
};

}  // namespace

spawned_child spawn_child(const std::string& exe, const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 2);
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  int out[2] = {-1, -1}, err[2] = {-1, -1};
  int null_fd = -1;
  fd_set_guard guard{{&out[0], &out[1], &err[0], &err[1], &null_fd}};
  auto fail = [](int e, const std::string& what) { throw std::system_error(e, std::generic_category(), what); };
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) fail(errno, "pipe");
  null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) fail(errno, "/dev/null");
  child_stack stack;
  if (stack.base == MAP_FAILED) fail(errno, "mmap");

  child_plan plan{exe.c_str(), argv.data(), environ, null_fd, out[1], err[1], ::getpid(), {}, descriptor_limit()};
  // Every signal blocked across clone: no handler of the launcher's may run
  // in the child, which shares its memory, before the child has put every
  // handler back to the default.
  sigset_t all;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &plan.mask_after);
  // CLONE_VFORK: this thread waits here until the child has exec'd or exited.
  const pid_t pid = ::clone(child_main, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  const int clone_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &plan.mask_after, nullptr);
  if (pid < 0) fail(clone_errno, "clone");
  if (plan.failed_step) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const std::string step = plan.failed_step;
    fail(plan.error, step == "exec" ? "exec " + exe : step + " in the child for " + exe);
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

spawn_pool::spawn_pool(unsigned threads) {
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

spawn_pool::~spawn_pool() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void spawn_pool::run(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void spawn_pool::work() {
  // The thread's signal mask is its creator's (the launcher's main thread):
  // spawn_child gives it to the children, as a spawn from the main thread would.
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return closing_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // closing, and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace mailnet::launcher
