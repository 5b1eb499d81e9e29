// The "when" of one fault rule, shared by the node (SMTP stages) and the
// resolver (dns): its own generator, seeded from the network's seed and the
// rule's name, and its count of the times it was reached. The same seed and
// the same sequence of reaches give the same decisions, run after run.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string_view>

#include "common/faults.hpp"

namespace mailnet {

// The generator's seed for one rule: a mix of the network's seed and the name.
std::uint64_t fault_rule_seed(std::uint64_t seed, std::string_view name);

class fault_gate {
 public:
  fault_gate(fault_rule rule, std::uint64_t network_seed);

  const fault_rule& rule() const { return rule_; }
  std::uint64_t reached() const { return reached_; }

  // Is the rule's after/for window open this long after the start?
  bool open_at(std::chrono::steady_clock::duration since_start) const;

  // Counts one reach and says whether the rule fires (first, every,
  // probability: every one given must hold). Call only inside the window.
  bool reach();

  // A delay rule's wait, with its jitter drawn from the rule's generator.
  std::chrono::milliseconds draw_delay();

 private:
  fault_rule rule_;
  std::mt19937_64 rng_;
  std::uint64_t reached_ = 0;
};

}  // namespace mailnet
