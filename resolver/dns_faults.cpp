#include "resolver/dns_faults.hpp"

namespace mailnet::resolver {

dns_faults::dns_faults(const fault_settings& settings, std::uint64_t random_seed,
                       std::chrono::steady_clock::time_point start)
    : seed_(settings.seed.value_or(random_seed)), start_(start) {
  for (const auto& r : settings.rules)
    if (r.stage == fault_stage::dns) rules_.emplace_back(r, seed_);
}

bool dns_faults::covers(std::string_view rule_to, std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.size() < rule_to.size() || name.substr(name.size() - rule_to.size()) != rule_to) return false;
  return name.size() == rule_to.size() || name[name.size() - rule_to.size() - 1] == '.';
}

bool dns_faults::watches(std::string_view name) const {
  for (const auto& gate : rules_)
    if (covers(gate.rule().to, name)) return true;
  return false;
}

const fault_rule* dns_faults::decide(std::string_view name, std::chrono::steady_clock::time_point now) {
  for (auto& gate : rules_) {
    if (!covers(gate.rule().to, name) || !gate.open_at(now - start_)) continue;
    if (gate.reach()) return &gate.rule();
  }
  return nullptr;
}

}  // namespace mailnet::resolver
