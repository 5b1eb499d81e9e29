#include "node/fault_plan.hpp"

#include <algorithm>

namespace mailnet::node {

fault_plan::fault_plan(const fault_settings& settings, std::string_view own_domain,
                       std::vector<std::string> network_domains, std::uint64_t random_seed,
                       std::chrono::steady_clock::time_point start)
    : own_domain_(own_domain),
      network_domains_(std::move(network_domains)),
      seed_(settings.seed.value_or(random_seed)),
      start_(start) {
  for (const auto& r : settings.rules) {
    const bool rate_limit = r.action == fault_action::rate_limit;
    const bool bandwidth = r.action == fault_action::bandwidth;
    if (r.to != own_domain || r.stage == fault_stage::dns || (r.stage == fault_stage::none && !rate_limit && !bandwidth))
      continue;
    rules_.emplace_back(r, seed_);
    recent_.emplace_back();
    if (bandwidth) {
      bandwidth_ = true;
    } else if (rate_limit) {
      mask_ |= bit(fault_stage::mail);
    } else if (r.stage == fault_stage::any) {
      // Every point where the node answers; connect and greeting are one
      // point (before EHLO), taken by a rule of stage any as its greeting.
      mask_ |= ~(bit(fault_stage::none) | bit(fault_stage::dns) | bit(fault_stage::connect));
    } else {
      mask_ |= bit(r.stage);
    }
  }
}

bool fault_plan::from_matches(const fault_rule& r, std::string_view sender_helo) const {
  if (r.from == "*") return true;
  // A node never sends to itself over SMTP: a session named after this node's
  // own domain is a client (mailnet send EHLOs with the sender's domain).
  if (r.from == "clients")
    return sender_helo == own_domain_ || std::find(network_domains_.begin(), network_domains_.end(), sender_helo) == network_domains_.end();
  return r.from == sender_helo;
}

std::optional<fault_hit> fault_plan::decide(fault_stage s, std::string_view sender_helo,
                                            std::chrono::steady_clock::time_point now) {
  if (!watches(s)) return std::nullopt;
  const bool before_ehlo = s == fault_stage::connect || s == fault_stage::greeting;
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    auto& gate = rules_[i];
    const auto& r = gate.rule();
    const bool rate_limit = r.action == fault_action::rate_limit;
    if (r.action == fault_action::bandwidth) continue;  // decide_bandwidth()
    const bool stage_matches =
        rate_limit ? s == fault_stage::mail : r.stage == s || (r.stage == fault_stage::any && s != fault_stage::connect);
    if (!stage_matches) continue;
    // Before EHLO the sender is unknown: only rules for any sender apply.
    if (before_ehlo ? r.from != "*" : !from_matches(r, sender_helo)) continue;
    if (!gate.open_at(now - start_)) continue;
    if (rate_limit) {
      auto& recent = recent_[i];
      while (!recent.empty() && now - recent.front() >= r.per) recent.pop_front();
      if (recent.size() < r.messages) {  // under the limit: let it through, and count it
        recent.push_back(now);
        continue;
      }
    }
    if (!gate.reach()) continue;
    return fault_hit{&r, s, gate.draw_delay()};
  }
  return std::nullopt;
}

std::optional<fault_hit> fault_plan::decide_bandwidth(std::chrono::steady_clock::time_point now) {
  if (!bandwidth_) return std::nullopt;
  for (auto& gate : rules_) {
    const auto& r = gate.rule();
    if (r.action != fault_action::bandwidth || !gate.open_at(now - start_)) continue;
    if (gate.reach()) return fault_hit{&r, fault_stage::connect, {}};
  }
  return std::nullopt;
}

}  // namespace mailnet::node
