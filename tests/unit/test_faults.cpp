#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/topology.hpp"
#include "node/fault_plan.hpp"

using namespace mailnet;
using mailnet::node::fault_plan;

namespace {

std::string with_rules(const std::string& rules, const std::string& seed = "") {
  return R"({"name": "t", "domains": [{"name": "jaku.com", "listen": "127.0.0.1:1025"},
                                       {"name": "deathstar.com", "listen": "127.0.0.1:1030"}],
             "faults": {)" + seed + R"("rules": )" + rules + "}}";
}

// The numbers of the times (from 1) the rules fired at stage for sender, over n times.
std::vector<int> fired(fault_plan& plan, fault_stage stage, const std::string& sender, int n) {
  std::vector<int> out;
  for (int i = 1; i <= n; ++i)
    if (plan.decide(stage, sender)) out.push_back(i);
  return out;
}

}  // namespace

TEST_CASE("fault rules round-trip through the resolved topology") {
  auto t = parse_topology(with_rules(R"([
      {"name": "a", "from": "Jaku.com", "to": "deathstar.com", "stage": "rcpt", "reply": "451 4.3.0 x", "probability": 0.25},
      {"name": "b", "to": "deathstar.com", "stage": "connect", "action": "delay", "delay": "200ms", "jitter": "50ms",
       "after": "0s", "for": "1h"},
      {"name": "c", "from": "clients", "to": "jaku.com", "stage": "end_of_data", "action": "hang", "every": 3, "first": 9}])",
                                     R"("seed": 42, )"),
                          "t.json");
  REQUIRE(t.faults.rules.size() == 3);
  CHECK(t.faults.seed == 42u);
  CHECK(t.faults.rules[0].from == "jaku.com");
  CHECK(t.faults.rules[0].action == fault_action::reply);
  CHECK(t.faults.rules[1].jitter == std::chrono::milliseconds(50));
  CHECK(t.faults.rules[2].every == 3);
  auto again = parse_topology(to_json_text(t), "again.json");
  CHECK(again.faults == t.faults);
}

TEST_CASE("a fault plan takes its own node's rules, by stage and sender") {
  auto t = parse_topology(with_rules(R"([
      {"name": "from-jaku", "from": "jaku.com", "to": "deathstar.com", "stage": "rcpt", "reply": "451 4.3.0 x"},
      {"name": "clients", "from": "clients", "to": "deathstar.com", "stage": "mail", "reply": "451 4.3.0 x"},
      {"name": "elsewhere", "to": "jaku.com", "stage": "quit", "action": "disconnect"}])"),
                          "t.json");
  fault_plan plan(t.faults, "deathstar.com", {"jaku.com", "deathstar.com"}, 7, std::chrono::steady_clock::now());
  CHECK(plan.size() == 2);
  CHECK(plan.seed() == 7);
  CHECK_FALSE(plan.watches(fault_stage::quit));
  CHECK_FALSE(plan.watches(fault_stage::ehlo));
  CHECK(plan.decide(fault_stage::rcpt, "jaku.com"));
  CHECK_FALSE(plan.decide(fault_stage::rcpt, "client.example"));
  CHECK(plan.decide(fault_stage::mail, "client.example"));
  CHECK(plan.decide(fault_stage::mail, ""));  // no EHLO: not a node
  CHECK(plan.decide(fault_stage::mail, "deathstar.com"));  // its own name: mailnet send, not a node
  CHECK_FALSE(plan.decide(fault_stage::mail, "jaku.com"));
}

TEST_CASE("fault decisions: every, first, and the same seed gives the same draws") {
  auto t = parse_topology(with_rules(R"([
      {"name": "every", "to": "deathstar.com", "stage": "rcpt", "reply": "451 4.3.0 x", "every": 3},
      {"name": "first", "to": "deathstar.com", "stage": "mail", "reply": "451 4.3.0 x", "first": 2},
      {"name": "coin", "to": "deathstar.com", "stage": "data", "reply": "451 4.3.0 x", "probability": 0.5}])"),
                          "t.json");
  const auto now = std::chrono::steady_clock::now();
  fault_plan a(t.faults, "deathstar.com", {}, 42, now);
  CHECK(fired(a, fault_stage::rcpt, "x", 9) == std::vector<int>{3, 6, 9});
  CHECK(fired(a, fault_stage::mail, "x", 5) == std::vector<int>{1, 2});
  auto coin = fired(a, fault_stage::data, "x", 64);
  fault_plan b(t.faults, "deathstar.com", {}, 42, now);
  fault_plan c(t.faults, "deathstar.com", {}, 43, now);
  CHECK(fired(b, fault_stage::data, "x", 64) == coin);
  CHECK(fired(c, fault_stage::data, "x", 64) != coin);
  CHECK(coin.size() > 16);
  CHECK(coin.size() < 48);
  CHECK(fault_plan::rule_seed(42, "coin") != fault_plan::rule_seed(42, "coin2"));
}

TEST_CASE("rules set at run time: added after the topology's, cleared by name, counts kept, windows from when added") {
  auto t = parse_topology(with_rules(R"([
      {"name": "topo", "to": "deathstar.com", "stage": "rcpt", "reply": "451 4.3.0 x", "every": 2}])"),
                          "t.json");
  using std::chrono::milliseconds;
  const auto start = std::chrono::steady_clock::now();
  fault_plan plan(t.faults, "deathstar.com", {"jaku.com", "deathstar.com"}, 1, start);
  CHECK(fired(plan, fault_stage::rcpt, "x", 3) == std::vector<int>{2});  // reached 3 times

  auto extra = parse_topology(with_rules(R"([
      {"name": "late", "to": "deathstar.com", "stage": "mail", "reply": "451 4.3.0 y", "after": "10s", "for": "5s"},
      {"name": "other-node", "to": "jaku.com", "stage": "mail", "reply": "451 4.3.0 z"}])"),
                              "x.json");
  const auto added_at = start + std::chrono::hours(1);  // long past the node's start
  plan.set_run_time(extra.faults.rules, {}, added_at);
  CHECK(plan.size() == 2);  // the rule for jaku.com is not this node's
  CHECK(plan.watches(fault_stage::mail));
  // The topology rule kept its count: its 4th time fires (every 2).
  CHECK(plan.decide(fault_stage::rcpt, "x", added_at));
  // after/for count from when the rule was added, not from the node's start.
  CHECK_FALSE(plan.decide(fault_stage::mail, "x", added_at + milliseconds(9999)));
  CHECK(plan.decide(fault_stage::mail, "x", added_at + milliseconds(10000)));
  CHECK_FALSE(plan.decide(fault_stage::mail, "x", added_at + milliseconds(15000)));

  // The same rules again keep their state; a hit's rule outlives a clear.
  auto hit = plan.decide(fault_stage::mail, "x", added_at + milliseconds(12000));
  REQUIRE(hit);
  plan.set_run_time({}, {"topo"}, added_at + milliseconds(13000));
  CHECK(plan.empty());
  CHECK_FALSE(plan.watches(fault_stage::rcpt));
  CHECK_FALSE(plan.decide(fault_stage::rcpt, "x"));
  CHECK(hit->rule->name == "late");
  // Un-cleared, the topology's rule starts over.
  plan.set_run_time({}, {}, added_at);
  CHECK(fired(plan, fault_stage::rcpt, "x", 2) == std::vector<int>{2});
}

TEST_CASE("an alter rule acts at end_of_data only, and its stage is named when wrong or missing") {
  auto t = parse_topology(with_rules(R"([{"name": "tamper", "from": "deathstar.com", "to": "jaku.com",
                                          "stage": "end_of_data", "action": "alter"}])"),
                          "t.json");
  REQUIRE(t.faults.rules.size() == 1);
  CHECK(t.faults.rules[0].action == fault_action::alter);
  CHECK(parse_topology(to_json_text(t), "again.json").faults == t.faults);

  auto error_of = [](const std::string& rules) -> std::string {
    try {
      parse_topology(with_rules(rules), "t.json");
      return "";
    } catch (const topology_error& e) {
      return e.what();
    }
  };
  auto wrong = error_of(R"([{"name": "x", "to": "jaku.com", "stage": "rcpt", "action": "alter"}])");
  CHECK(wrong.find("$.faults.rules[0].stage") != std::string::npos);
  CHECK(wrong.find("end_of_data") != std::string::npos);
  auto missing = error_of(R"([{"name": "x", "to": "jaku.com", "action": "alter"}])");
  CHECK(missing.find("$.faults.rules[0].stage") != std::string::npos);
  CHECK(missing.find("end_of_data") != std::string::npos);
  auto unknown = error_of(R"([{"name": "x", "to": "jaku.com", "stage": "data", "action": "mangle"}])");
  CHECK(unknown.find("alter") != std::string::npos);  // the list of actions names it
}
