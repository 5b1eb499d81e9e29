#include "node/fault_plan.hpp"

#include <algorithm>

namespace mailnet::node {

namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A number in [0, 1) from 53 bits of the generator, the same on every platform.
double unit_draw(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

std::uint64_t fault_plan::rule_seed(std::uint64_t seed, std::string_view name) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a: stable across builds, unlike std::hash
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return splitmix64(seed ^ splitmix64(h));
}

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
  return r.to == own_domain_ && r.stage != fault_stage::dns && r.stage != fault_stage::none;
}

fault_plan::state fault_plan::fresh(const fault_rule& r, std::chrono::steady_clock::time_point start,
                                    bool run_time) const {
  return {std::make_shared<const fault_rule>(r), std::mt19937_64(rule_seed(seed_, r.name)), 0, start, run_time};
}

void fault_plan::compute_mask() {
  mask_ = 0;
  for (const auto& st : rules_) {
    if (st.rule->stage == fault_stage::any) {
      // Every point where the node answers; connect and greeting are one
      // point (before EHLO), taken by a rule of stage any as its greeting.
      mask_ |= ~(bit(fault_stage::none) | bit(fault_stage::dns) | bit(fault_stage::connect));
    } else {
      mask_ |= bit(st.rule->stage);
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
    const bool stage_matches = r.stage == s || (r.stage == fault_stage::any && s != fault_stage::connect);
    if (!stage_matches) continue;
    // Before EHLO the sender is unknown: only rules for any sender apply.
    if (before_ehlo ? r.from != "*" : !from_matches(r, sender_helo)) continue;
    const auto since_start = now - st.start;
    const auto opens = r.after.value_or(std::chrono::milliseconds(0));
    if (since_start < opens) continue;
    if (r.for_ && since_start >= opens + *r.for_) continue;
    const std::uint64_t n = ++st.reached;
    bool fire = true;
    if (r.first && n > r.first) fire = false;
    if (r.every && n % r.every != 0) fire = false;
    // Drawn each time the rule is reached, so the sequence depends only on the count.
    if (r.probability && !(unit_draw(st.rng) < *r.probability)) fire = false;
    if (!fire) continue;
    fault_hit hit{st.rule, s, r.delay};
    if (r.action == fault_action::delay && r.jitter.count() > 0) {
      const auto span = static_cast<std::uint64_t>(r.jitter.count()) * 2 + 1;
      hit.delay = r.delay - r.jitter + std::chrono::milliseconds(static_cast<std::int64_t>(st.rng() % span));
    }
    return hit;
  }
  return std::nullopt;
}

}  // namespace mailnet::node
