// The topology's dns fault rules, as the resolver applies them: a rule acts
// on a question for its "to" or any name under it (deathstar.com covers
// _smtp._tcp.deathstar.com and mx.deathstar.com), whoever asks (every node
// asks from 127.0.0.1, so "from" is always "*"), and decides with the same
// seeded per-rule generator as the node's rules (common/fault_gate.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
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

  bool empty() const { return rules_.empty(); }
  std::size_t size() const { return rules_.size(); }
  std::uint64_t seed() const { return seed_; }

  // Does any rule cover this name (lower case, with or without the final
  // dot)? Answers to such names are decided each time, never cached.
  bool watches(std::string_view name) const;

  // The first rule covering the name that fires now; each covering rule
  // reached (inside its window) counts once. nullptr: answer for real.
  const fault_rule* decide(std::string_view name,
                           std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  // Does rule_to ("deathstar.com") cover name ("mx.deathstar.com.")?
  static bool covers(std::string_view rule_to, std::string_view name);

 private:
  std::vector<fault_gate> rules_;
  std::uint64_t seed_ = 0;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace mailnet::resolver
