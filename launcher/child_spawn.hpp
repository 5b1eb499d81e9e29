// Starting a node or the resolver: fork and exec with nothing but system
// calls in between. The launcher has other threads (the printer), and a child
// of a multi-threaded process may only make async-signal-safe calls before
// exec: an allocation there can wait forever on a lock that another thread
// held at the moment of fork (seen under AddressSanitizer, whose allocator
// lock is not reset in the child). So the argument vector is built before
// fork, and the child only sets up its process group, its parent-death
// signal and its descriptors, then execs.
#pragma once

#include <string>
#include <sys/types.h>
#include <vector>

namespace mailnet::launcher {

struct spawned_child {
  pid_t pid = -1;
  int out = -1;  // read end of the child's stdout, close-on-exec
  int err = -1;  // read end of the child's stderr, close-on-exec
};

// Starts exe with args (argv[0] is exe), stdin from /dev/null, stdout and
// stderr into two new pipes. In the child: its own process group (a Ctrl-C
// at the terminal reaches only the launcher, which stops its children in
// order), SIGKILL when the launcher dies (even by SIGKILL), and no
// descriptor of the launcher's but stdio across exec. Throws
// std::system_error naming what failed, also when exec fails (the child's
// errno comes back through a close-on-exec pipe).
spawned_child spawn_child(const std::string& exe, const std::vector<std::string>& args);

// For a child that could not be taken in hand after spawn_child: SIGKILL,
// reaped, and its descriptors that are still >= 0 closed. Nothing when pid < 0.
void discard_child(spawned_child& child);

// At the launcher's start: descriptors 0, 1 and 2 open (on /dev/null if they
// were closed), so that no pipe of a child is ever made on one of them.
void ensure_standard_descriptors();

}  // namespace mailnet::launcher
