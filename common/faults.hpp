// Faults on purpose: rules in the topology's "faults" object that make one
// link of the network fail in a chosen, reproducible way (a reply instead of
// the real one, a closed connection, a delay, a session that hangs).
// The model only; the node applies the rules (node/fault_plan.hpp), the
// resolver its dns rules (resolver/dns_faults.hpp), both deciding with
// common/fault_gate.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet {

// Where in a connection a rule acts. dns is the resolver's; the others are
// the receiving node's points of the SMTP conversation.
enum class fault_stage { none, dns, connect, greeting, ehlo, mail, rcpt, data, end_of_data, quit, any };

// alter: the receiving node changes the message as it arrives (end_of_data
// only): it appends a footer to the body, as a mailing list or a careless
// relay does, so that a DKIM signature over the body no longer verifies.
enum class fault_action { reply, disconnect, delay, bandwidth, hang, rate_limit, dns_answer, alter };

std::string_view to_string(fault_stage s);
std::string_view to_string(fault_action a);
std::optional<fault_stage> fault_stage_from(std::string_view name);
std::optional<fault_action> fault_action_from(std::string_view name);

struct fault_rule {
  std::string name;              // unique in the network: [A-Za-z0-9._-]+
  std::string from = "*";        // a domain of the network (lower case), "clients" or "*"
  std::string to;                // lower case: the domain whose node (or DNS name) the rule acts on
  fault_stage stage = fault_stage::none;  // none: bandwidth and rate_limit act on the whole connection
  fault_action action = fault_action::reply;
  std::string reply;             // "451 4.3.0 Simulated trouble": reply and rate_limit
  std::chrono::milliseconds delay{0};   // delay
  std::chrono::milliseconds jitter{0};  // delay: up to this much less or more, drawn per fault
  // When: every given condition must hold; none given means always.
  std::optional<double> probability;    // 0..1
  std::uint64_t every = 0;              // 0: not given; N: the Nth, 2Nth, ... time the rule is reached
  std::uint64_t first = 0;              // 0: not given; N: the first N times
  std::optional<std::chrono::milliseconds> after;   // the window opens this long after the node's start
  std::optional<std::chrono::milliseconds> for_;    // and stays open this long
  std::uint64_t bytes_per_second = 0;   // bandwidth
  std::uint64_t messages = 0;           // rate_limit: this many messages ...
  std::chrono::milliseconds per{0};     // ... per interval
  std::string answer;                   // dns: SERVFAIL, NXDOMAIN, REFUSED, truncated, timeout
  friend bool operator==(const fault_rule&, const fault_rule&) = default;
};

struct fault_settings {
  std::optional<std::uint64_t> seed;  // none: each node picks one and logs it
  std::vector<fault_rule> rules;
  friend bool operator==(const fault_settings&, const fault_settings&) = default;
};

}  // namespace mailnet
