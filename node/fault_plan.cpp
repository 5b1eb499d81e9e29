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
    if (!acts_here(r)) continue;
    topology_rules_.push_back(r);
    rules_.push_back(fresh(r, start_, false));
  }
  compute_mask();
}

bool fault_plan::acts_here(const fault_rule& r) const {
  const bool stageless = r.action == fault_action::rate_limit || r.action == fault_action::bandwidth;
  return r.to == own_domain_ && r.stage != fault_stage::dns && (r.stage != fault_stage::none || stageless);
}

fault_plan::state fault_plan::fresh(const fault_rule& r, std::chrono::steady_clock::time_point start,
                                    bool run_time) const {
  return state{std::make_shared<const fault_rule>(r), fault_gate(r, seed_), {}, start, run_time};
}

void fault_plan::compute_mask() {
  mask_ = 0;
  bandwidth_ = false;
  for (const auto& st : rules_) {
    const auto& r = *st.rule;
    if (r.action == fault_action::bandwidth) {
      bandwidth_ = true;
    } else if (r.action == fault_action::rate_limit) {
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

void fault_plan::set_run_time(const std::vector<fault_rule>& added, const std::vector<std::string>& cleared,
                              std::chrono::steady_clock::time_point now) {
  std::vector<state> next;
  // An old state is taken over by the same rule of the same origin.
  auto take = [&](const fault_rule& r, bool run_time, std::chrono::steady_clock::time_point start) {
    for (auto& st : rules_)
      if (st.rule && st.run_time == run_time && *st.rule == r) {
        next.push_back(std::move(st));
        st.rule.reset();
        return;
      }
    next.push_back(fresh(r, start, run_time));
  };
  for (const auto& r : topology_rules_)
    if (std::find(cleared.begin(), cleared.end(), r.name) == cleared.end()) take(r, false, start_);
  for (const auto& r : added)
    if (acts_here(r)) take(r, true, now);
  rules_ = std::move(next);
  compute_mask();
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
  for (auto& st : rules_) {
    const auto& r = *st.rule;
    const bool rate_limit = r.action == fault_action::rate_limit;
    if (r.action == fault_action::bandwidth) continue;  // decide_bandwidth()
    const bool stage_matches =
        rate_limit ? s == fault_stage::mail : r.stage == s || (r.stage == fault_stage::any && s != fault_stage::connect);
    if (!stage_matches) continue;
    // Before EHLO the sender is unknown: only rules for any sender apply.
    if (before_ehlo ? r.from != "*" : !from_matches(r, sender_helo)) continue;
    if (!st.gate.open_at(now - st.start)) continue;
    if (rate_limit) {
      while (!st.recent.empty() && now - st.recent.front() >= r.per) st.recent.pop_front();
      if (st.recent.size() < r.messages) {  // under the limit: let it through, and count it
        st.recent.push_back(now);
        continue;
      }
    }
    if (!st.gate.reach()) continue;
    return fault_hit{st.rule, s, st.gate.draw_delay()};
  }
  return std::nullopt;
}

std::optional<fault_hit> fault_plan::decide_bandwidth(std::chrono::steady_clock::time_point now) {
  if (!bandwidth_) return std::nullopt;
  for (auto& st : rules_) {
    const auto& r = *st.rule;
    if (r.action != fault_action::bandwidth || !st.gate.open_at(now - st.start)) continue;
    if (st.gate.reach()) return fault_hit{st.rule, fault_stage::connect, {}};
  }
  return std::nullopt;
}

}  // namespace mailnet::node
