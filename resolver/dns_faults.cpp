#include "resolver/dns_faults.hpp"

#include <algorithm>

namespace mailnet::resolver {

dns_faults::dns_faults(const fault_settings& settings, std::uint64_t random_seed,
                       std::chrono::steady_clock::time_point start)
    : seed_(settings.seed.value_or(random_seed)), start_(start) {
  for (const auto& r : settings.rules)
    if (r.stage == fault_stage::dns) {
      topology_rules_.push_back(r);
      rules_.push_back(state{fault_gate(r, seed_), start_, false});
    }
}

void dns_faults::set_run_time(const std::vector<fault_rule>& added, const std::vector<std::string>& cleared,
                              std::chrono::steady_clock::time_point now) {
  std::vector<state> next;
  std::vector<bool> taken(rules_.size(), false);
  // An old state is taken over by the same rule of the same origin.
  auto take = [&](const fault_rule& r, bool run_time, std::chrono::steady_clock::time_point start) {
    for (std::size_t i = 0; i < rules_.size(); ++i)
      if (!taken[i] && rules_[i].run_time == run_time && rules_[i].gate.rule() == r) {
        taken[i] = true;
        next.push_back(std::move(rules_[i]));
        return;
      }
    next.push_back(state{fault_gate(r, seed_), start, run_time});
  };
  for (const auto& r : topology_rules_)
    if (std::find(cleared.begin(), cleared.end(), r.name) == cleared.end()) take(r, false, start_);
  for (const auto& r : added)
    if (r.stage == fault_stage::dns) take(r, true, now);
  rules_ = std::move(next);
}

bool dns_faults::covers(std::string_view rule_to, std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.size() < rule_to.size() || name.substr(name.size() - rule_to.size()) != rule_to) return false;
  return name.size() == rule_to.size() || name[name.size() - rule_to.size() - 1] == '.';
}

bool dns_faults::watches(std::string_view name) const {
  for (const auto& st : rules_)
    if (covers(st.gate.rule().to, name)) return true;
  return false;
}

const fault_rule* dns_faults::decide(std::string_view name, std::chrono::steady_clock::time_point now) {
  for (auto& st : rules_) {
    if (!covers(st.gate.rule().to, name) || !st.gate.open_at(now - st.start)) continue;
    if (st.gate.reach()) return &st.gate.rule();
  }
  return nullptr;
}

}  // namespace mailnet::resolver
