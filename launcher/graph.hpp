// `mailnet graph`: the topology as Graphviz DOT or Mermaid. For a network
// that has run, edges carry the number of messages relayed between domains,
// counted from the nodes' logs.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher {

enum class graph_format { dot, mermaid };

struct relay_count {
  std::string from, to;
  std::size_t messages = 0;
};

// Successful relay attempts (event=relay_attempt with a 2xx reply) in each
// <run>/<domain>/node.log. Empty when the network never ran there.
std::vector<relay_count> relay_counts_from_logs(const std::filesystem::path& run_dir, const topology& net);

std::string render_graph(const topology& net, const std::vector<relay_count>& counts, graph_format format);

}  // namespace mailnet::launcher
