// The launcher's supervisor: starts the resolver, one node per domain and,
// with "imap" or "pop3" in the topology, Dovecot (the child named imap,
// through mailnet-imap), waits until each reports ready, relays their log lines, serves the control
// socket (status, kill, stop, start, restart, flush, down), restarts nodes
// that crash when the topology asks for it, and stops them all on SIGINT,
// SIGTERM or `mailnet down`. The only translation unit with Boost.Process.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

namespace mailnet::launcher {

struct up_options {
  std::filesystem::path topology_file;
  std::optional<std::filesystem::path> dir;  // default: ./run/<name>
  bool fresh = false;                        // remove earlier mail and queues first
  bool detach = false;                       // -d: return once ready, keep running in the background
  std::chrono::milliseconds ready_timeout{30000};
};

// Blocks until the network is brought down (or, with detach, until it is
// ready). Returns the exit code: 0 after a clean start or shutdown, 1 when a
// child failed to start or the network is already up, 2 for a bad topology.
int run_up(const up_options& options);

}  // namespace mailnet::launcher
