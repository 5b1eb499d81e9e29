// The topology's dns fault rules, as the resolver applies them: a rule acts
// on a question for its "to" or any name under it (deathstar.com covers
// _smtp._tcp.deathstar.com and mx.deathstar.com), whoever asks (every node
// asks from 127.0.0.1, so "from" is always "*"), and decides with the same
// seeded per-rule generator as the node's rules (common/fault_gate.hpp).
// Rules added and cleared while the network runs come in through
// set_run_time (resolver/dns_fault_file.hpp reads them).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fault_gate.hpp"
#include "common/faults.hpp"

namespace mailnet::resolver {

class dns_faults {
 public:
  dns_faults() = default;  // no rules
  // Without a seed in settings, random_seed is used.
  dns_faults(const fault_settings& settings, std::uint64_t random_seed, std::chrono::steady_clock::time_point start);

  // The rules added while the network runs (mailnet fault add), in the order
  // added, after the topology's; and the topology's rules cleared by name.
  // A rule still in force keeps its count and generator; a new one's
  // after/for count from now. Rules of other stages are left out.
  void set_run_time(const std::vector<fault_rule>& added, const std::vector<std::string>& cleared,
                    std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  bool empty() const { return rules_.empty(); }
  std::size_t size() const { return rules_.size(); }
  std::uint64_t seed() const { return seed_; }

  // Does any rule cover this name (lower case, with or without the final
  // dot)? Answers to such names are decided each time, never cached.
  bool watches(std::string_view name) const;

  // The first rule covering the name that fires now; each covering rule
  // reached (inside its window) counts once. nullptr: answer for real.
  // The pointer is good until the next set_run_time.
  const fault_rule* decide(std::string_view name,
                           std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  // Does rule_to ("deathstar.com") cover name ("mx.deathstar.com.")?
  static bool covers(std::string_view rule_to, std::string_view name);

 private:
  // One rule in force: its decisions, and when its after/for begin (the
  // resolver's start, or the moment a run-time rule was added).
  struct state {
    fault_gate gate;
    std::chrono::steady_clock::time_point start;
    bool run_time = false;
  };

  std::vector<fault_rule> topology_rules_;  // the topology's dns rules
  std::vector<state> rules_;
  std::uint64_t seed_ = 0;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace mailnet::resolver
