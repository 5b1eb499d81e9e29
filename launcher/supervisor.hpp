// The launcher's supervisor: starts the resolver and one node per domain,
// waits until each reports ready, relays their log lines, and stops them all
// on SIGINT/SIGTERM. The only translation unit that includes Boost.Process.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

namespace mailnet::launcher {

struct up_options {
  std::filesystem::path topology_file;
  std::optional<std::filesystem::path> dir;  // default: ./run/<name>
  bool fresh = false;                        // remove earlier mail and queues first
  std::chrono::milliseconds ready_timeout{15000};
};

// Blocks until the network is brought down. Returns the process exit code:
// 0 after a clean shutdown, 1 when a child failed to start, 2 for a bad topology.
int run_up(const up_options& options);

}  // namespace mailnet::launcher
