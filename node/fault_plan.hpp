// The fault rules of one node (those whose "to" is its domain, but not its
// dns rules: those are the resolver's), and their decisions: each rule has
// its own generator (common/fault_gate.hpp), so that the same seed and the
// same sequence of sessions give the same faults, run after run.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fault_gate.hpp"
#include "common/faults.hpp"

namespace mailnet::node {

// A fault to inject now.
struct fault_hit {
  // Shared: a rule cleared at run time stays alive for a session that is
  // still acting on it (a delay under way).
  std::shared_ptr<const fault_rule> rule;
  fault_stage stage = fault_stage::none;  // where it fires (a rule of stage any names the real one)
  std::chrono::milliseconds delay{0};     // delay: with its jitter drawn
};

class fault_plan {
 public:
  fault_plan() = default;  // no rules
  // settings: the network's; own_domain: this node's; network_domains: every
  // domain of the network (a sender whose EHLO name is none of them is a
  // client). Without a seed in settings, random_seed is used.
  fault_plan(const fault_settings& settings, std::string_view own_domain, std::vector<std::string> network_domains,
             std::uint64_t random_seed, std::chrono::steady_clock::time_point start);

  bool empty() const { return rules_.empty(); }
  // Rules added while the network runs (mailnet fault add), in the order
  // added, after the topology's; and the topology's rules cleared by name.
  // A rule still in force keeps its count and generator; a new one's
  // after/for count from now. Rules for other nodes are left out here too.
  void set_run_time(const std::vector<fault_rule>& added, const std::vector<std::string>& cleared,
                    std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // Every domain of the network, when it was not known at construction.
  void set_network_domains(std::vector<std::string> network_domains) { network_domains_ = std::move(network_domains); }
  std::size_t size() const { return rules_.size(); }
  std::uint64_t seed() const { return seed_; }

  // Cheap: is any rule watching this stage? Checked before anything else.
  bool watches(fault_stage s) const { return (mask_ & bit(s)) != 0; }

  // The first rule for this stage that fires now for a sender known by its
  // EHLO name (empty before EHLO). Each matching rule reached counts once.
  // A rate_limit rule acts at MAIL: it lets "messages" MAIL commands from
  // its senders through per "per" (a sliding window), and is reached by each
  // one over the limit (whose when-conditions then decide).
  std::optional<fault_hit> decide(fault_stage s, std::string_view sender_helo,
                                  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  // A bandwidth rule (its from is "*") that fires for a session just
  // accepted: reached once per session, before any other rule.
  bool watches_bandwidth() const { return bandwidth_; }
  std::optional<fault_hit> decide_bandwidth(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  // The generator's seed for one rule (common/fault_gate.hpp).
  static std::uint64_t rule_seed(std::uint64_t seed, std::string_view name) { return fault_rule_seed(seed, name); }

 private:
  static unsigned bit(fault_stage s) { return 1u << static_cast<unsigned>(s); }

  // One rule in force: its decisions (generator and count), and for a
  // rate_limit the times of the MAIL commands it let through within its last
  // "per" (at most "messages" of them).
  struct state {
    std::shared_ptr<const fault_rule> rule;
    fault_gate gate;
    std::deque<std::chrono::steady_clock::time_point> recent;
    std::chrono::steady_clock::time_point start{};  // after/for count from here
    bool run_time = false;                          // added by mailnet fault add
  };

  bool from_matches(const fault_rule& r, std::string_view sender_helo) const;
  bool acts_here(const fault_rule& r) const;
  state fresh(const fault_rule& r, std::chrono::steady_clock::time_point start, bool run_time) const;
  void compute_mask();

  std::vector<fault_rule> topology_rules_;  // this node's, as the topology has them
  std::vector<state> rules_;
  std::string own_domain_;
  std::vector<std::string> network_domains_;
  std::uint64_t seed_ = 0;
  unsigned mask_ = 0;
  bool bandwidth_ = false;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace mailnet::node
