#include "common/fault_gate.hpp"

namespace mailnet {

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

std::uint64_t fault_rule_seed(std::uint64_t seed, std::string_view name) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a: stable across builds, unlike std::hash
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return splitmix64(seed ^ splitmix64(h));
}

fault_gate::fault_gate(fault_rule rule, std::uint64_t network_seed)
    : rule_(std::move(rule)), rng_(fault_rule_seed(network_seed, rule_.name)) {}

bool fault_gate::open_at(std::chrono::steady_clock::duration since_start) const {
  const auto opens = rule_.after.value_or(std::chrono::milliseconds(0));
  if (since_start < opens) return false;
  return !rule_.for_ || since_start < opens + *rule_.for_;
}

bool fault_gate::reach() {
  const std::uint64_t n = ++reached_;
  bool fire = true;
  if (rule_.first && n > rule_.first) fire = false;
  if (rule_.every && n % rule_.every != 0) fire = false;
  // Drawn each time the rule is reached, so the sequence depends only on the count.
  if (rule_.probability && !(unit_draw(rng_) < *rule_.probability)) fire = false;
  return fire;
}

std::chrono::milliseconds fault_gate::draw_delay() {
  if (rule_.action != fault_action::delay || rule_.jitter.count() <= 0) return rule_.delay;
  const auto span = static_cast<std::uint64_t>(rule_.jitter.count()) * 2 + 1;
  return rule_.delay - rule_.jitter + std::chrono::milliseconds(static_cast<std::int64_t>(rng_() % span));
}

}  // namespace mailnet
