// <run>/resolver/faults.json: the dns fault rules added and the topology's
// rules cleared while the network runs (mailnet fault add, fault clear),
// written by the launcher, which then sends the resolver SIGUSR2:
//   {"generation": G, "rules": [rule, ...], "cleared": ["name", ...]}
// the same form as a node's <domain>/faults.json, with dns rules only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/faults.hpp"

namespace mailnet::resolver {

struct run_time_faults {
  std::uint64_t generation = 0;
  std::vector<fault_rule> added;
  std::vector<std::string> cleared;
};

// Reads and checks the file, never through a link (a planted link, a file of
// another user or with several links is refused). domains: the network's.
// Throws std::exception whose what() names the file and, for a mistake in
// it, the JSON path and what was expected.
run_time_faults read_run_time_faults(const std::filesystem::path& file, const std::vector<std::string>& domains);

}  // namespace mailnet::resolver
