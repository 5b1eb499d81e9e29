// The launcher's spawn (clone with CLONE_VM | CLONE_VFORK, then exec): what
// the child gets (arguments, environment, stdin, stdout and stderr, no other
// descriptor, its own process group), its exit status, a failed exec, and
// the parent-death signal: the child dies with the thread that spawned it,
// and with the launcher when the launcher is killed.
#include <doctest/doctest.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>

#include "launcher/child_spawn.hpp"

using namespace mailnet::launcher;

namespace {

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

// One line from fd (without its newline), byte by byte: what follows is not read.
std::string read_line(int fd) {
  std::string out;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') out += c;
  return out;
}

// The child's wait status once it has ended, polled up to a deadline
// (generous: a loaded machine under a sanitizer); nullopt when it has not.
std::optional<int> wait_ended(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void close_fds(spawned_child& c) {
  for (int* fd : {&c.out, &c.err})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

// Kills and reaps a child a failed check left behind.
struct reaper {
  pid_t pid = -1;
  ~reaper() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

}  // namespace

TEST_CASE("spawn_child: arguments, environment, stdio, no other descriptor, own process group, exit status") {
  ::setenv("MAILNET_SPAWN_TEST", "seen by the child", 1);
  const int leak = ::open("/dev/null", O_RDONLY);  // no close-on-exec: the spawn must keep it from the child
  REQUIRE(leak > 2);
  const std::string script =
      "echo \"$0|$1|$MAILNET_SPAWN_TEST\"; readlink /proc/$$/fd/0; "
      "if [ -e /proc/$$/fd/" + std::to_string(leak) + " ]; then echo leaked; else echo closed; fi; "
      "echo to-stderr >&2; exit 7";
  auto child = spawn_child("/bin/sh", {"-c", script, "first arg", "second arg"});
  reaper guard{child.pid};
  ::unsetenv("MAILNET_SPAWN_TEST");
  ::close(leak);
  CHECK(::getpgid(child.pid) == child.pid);  // its own group, even as a zombie
  CHECK((::fcntl(child.out, F_GETFD) & FD_CLOEXEC) != 0);
  const std::string out = read_all(child.out);
  const std::string err = read_all(child.err);
  CHECK(out == "first arg|second arg|seen by the child\n/dev/null\nclosed\n");
  CHECK(err == "to-stderr\n");
  auto status = wait_ended(child.pid);
  REQUIRE(status);
  guard.pid = -1;
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 7);
  close_fds(child);
}

TEST_CASE("spawn_child: an exec that fails throws with the child's errno, the child already reaped") {
  try {
    spawn_child("/nonexistent/mailnet-node", {"--domain", "x.test"});
    FAIL("no exception");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == ENOENT);
    CHECK(std::string(e.what()).find("/nonexistent/mailnet-node") != std::string::npos);
  }
}

TEST_CASE("spawn_child: the child gets SIGKILL when the thread that spawned it ends (PR_SET_PDEATHSIG)") {
  spawned_child child;
  std::thread spawner([&] { child = spawn_child("/bin/sleep", {"600"}); });
  spawner.join();
  reaper guard{child.pid};
  REQUIRE(child.pid > 0);
  auto status = wait_ended(child.pid);
  REQUIRE(status);
  guard.pid = -1;
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGKILL);
  close_fds(child);
}

TEST_CASE("spawn_pool: a child outlives its spawning job and dies by SIGKILL with the launcher") {
  // The launcher here is this test binary run again as "spawn helper" (below):
  // it starts a sleep from its spawn_pool, prints the sleep's pid and waits.
  // This process becomes the subreaper of the orphaned sleep, so it can wait for it.
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  struct subreaper_off {
    ~subreaper_off() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
  } off;
  ::setenv("MAILNET_SPAWN_HELPER", "1", 1);
  auto helper = spawn_child("/proc/self/exe", {"--no-intro=true", "--test-case=spawn helper*"});
  ::unsetenv("MAILNET_SPAWN_HELPER");
  reaper helper_guard{helper.pid};
  const std::string line = read_line(helper.out);
  const pid_t sleeper = static_cast<pid_t>(std::atoi(line.c_str()));
  reaper sleeper_guard{sleeper};
  REQUIRE_MESSAGE(sleeper > 0, "the helper said: " << line);
  // The spawning job has returned (the pid was printed after it): the sleep
  // still runs, a child of the helper.
  std::ifstream stat("/proc/" + std::to_string(sleeper) + "/stat");
  std::string stat_line;
  std::getline(stat, stat_line);
  const auto after_name = stat_line.substr(stat_line.rfind(')') + 2);  // "S 1234 ..."
  CHECK(after_name.substr(0, 2) != "Z ");
  CHECK(after_name.substr(2, after_name.find(' ', 2) - 2) == std::to_string(helper.pid));

  ::kill(helper.pid, SIGKILL);  // the launcher dies without a word
  auto helper_status = wait_ended(helper.pid);
  REQUIRE(helper_status);
  helper_guard.pid = -1;
  auto sleeper_status = wait_ended(sleeper);
  REQUIRE(sleeper_status);
  sleeper_guard.pid = -1;
  CHECK(WIFSIGNALED(*sleeper_status));
  CHECK(WTERMSIG(*sleeper_status) == SIGKILL);
  close_fds(helper);
}

// Not a test of its own: the launcher of the test above, run in a process of
// its own (MAILNET_SPAWN_HELPER set). Anywhere else it does nothing.
TEST_CASE("spawn helper: spawns a sleep from a spawn_pool, prints its pid, waits to be killed") {
  if (!std::getenv("MAILNET_SPAWN_HELPER")) return;
  spawn_pool pool(2);
  pid_t pid = -1;
  bool done = false;
  std::mutex m;
  std::condition_variable cv;
  pool.run([&] {
    auto c = spawn_child("/bin/sleep", {"600"});
    std::lock_guard lock(m);
    pid = c.pid;
    done = true;
    cv.notify_all();
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return done; });
  }
  const std::string line = std::to_string(pid) + "\n";
  CHECK(::write(STDOUT_FILENO, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  for (;;) ::pause();  // until the test kills this process
}
