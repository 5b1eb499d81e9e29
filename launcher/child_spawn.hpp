// Starting a node or the resolver the way posix_spawn does: clone with
// CLONE_VM | CLONE_VFORK, so the child runs in the launcher's memory until it
// calls execve, and the launcher's page tables are never copied. A fork of a
// launcher with 1,000 children copied tens of MiB of page tables per spawn
// and made every child tear that copy down again in exec: most of the
// launcher's time and a good part of each node's start at that size.
//
// The child shares the launcher's memory, and the launcher has other threads
// (the printer, the web server): between clone and exec the child makes raw
// system calls only, no allocation, no lock, no libc function that keeps
// state (nor the sanitizers' interceptors of them). Everything it needs (the
// argument vector, the descriptors, the signal mask) is made before clone.
//
// PR_SET_PDEATHSIG is tied to the THREAD that spawned the child, not to the
// launcher process: a child spawned by a thread that ends is killed then.
// So spawn_child runs only on threads that live as long as the launcher (the
// main thread, or a spawn_pool's).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace mailnet::launcher {

struct spawned_child {
  pid_t pid = -1;
  int out = -1;  // read end of the child's stdout, close-on-exec
  int err = -1;  // read end of the child's stderr, close-on-exec
};

// Starts exe with args (argv[0] is exe), the launcher's environment, stdin
// from /dev/null, stdout and stderr into two new pipes. In the child: its own
// process group (a Ctrl-C at the terminal reaches only the launcher, which
// stops its children in order), SIGKILL when the spawning thread dies (the
// launcher, even by SIGKILL), the launcher's signal handlers back to the
// default, and no descriptor of the launcher's but stdio across exec. Returns
// once the child has called execve. Throws std::system_error naming what
// failed, also when exec fails (then the child is reaped already).
spawned_child spawn_child(const std::string& exe, const std::vector<std::string>& args);

// For a child that could not be taken in hand after spawn_child: SIGKILL,
// reaped, and its descriptors that are still >= 0 closed. Nothing when pid < 0.
void discard_child(spawned_child& child);

// At the launcher's start: descriptors 0, 1 and 2 open (on /dev/null if they
// were closed), so that no pipe of a child is ever made on one of them.
void ensure_standard_descriptors();

// Threads that spawn children while the launcher's event loop goes on
// reading the ones already started. Each spawn blocks its thread until the
// child has exec'd; a thousand nodes start faster from a few threads than
// from the loop's one. The threads live until the pool is destroyed, which
// the launcher does only after its children are down (see PR_SET_PDEATHSIG
// above): the destructor waits for the queued jobs, then joins.
class spawn_pool {
 public:
  explicit spawn_pool(unsigned threads);
  ~spawn_pool();
  spawn_pool(const spawn_pool&) = delete;
  spawn_pool& operator=(const spawn_pool&) = delete;

  // Runs job on one of the threads, in the order given.
  void run(std::function<void()> job);

 private:
  void work();
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool closing_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mailnet::launcher
