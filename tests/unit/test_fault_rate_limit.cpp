#include <doctest/doctest.h>

#include <string>

#include "common/topology.hpp"
#include "node/fault_plan.hpp"

using namespace mailnet;
using mailnet::node::fault_plan;

TEST_CASE("a rate_limit rule lets N MAIL commands through per sliding interval, from its senders only") {
  auto t = parse_topology(R"({"name": "t", "domains": [{"name": "jaku.com", "listen": "127.0.0.1:1025"},
                                                        {"name": "deathstar.com", "listen": "127.0.0.1:1030"}],
                              "faults": {"seed": 1, "rules": [
                                {"name": "throttle", "from": "jaku.com", "to": "deathstar.com",
                                 "action": "rate_limit", "messages": 2, "per": "10s", "reply": "421 4.7.0 Slow down"}]}})",
                          "t.json");
  const auto t0 = std::chrono::steady_clock::now();
  fault_plan plan(t.faults, "deathstar.com", {"jaku.com", "deathstar.com"}, 7, t0);
  using std::chrono::seconds;
  CHECK(plan.watches(fault_stage::mail));
  CHECK_FALSE(plan.watches(fault_stage::rcpt));
  CHECK_FALSE(plan.decide(fault_stage::mail, "jaku.com", t0));
  CHECK_FALSE(plan.decide(fault_stage::mail, "jaku.com", t0 + seconds(4)));
  auto hit = plan.decide(fault_stage::mail, "jaku.com", t0 + seconds(5));
  REQUIRE(hit);
  CHECK(hit->rule->reply == "421 4.7.0 Slow down");
  CHECK_FALSE(plan.decide(fault_stage::mail, "client.example", t0 + seconds(5)));  // not its sender
  CHECK(plan.decide(fault_stage::mail, "jaku.com", t0 + seconds(9)));
  CHECK_FALSE(plan.decide(fault_stage::mail, "jaku.com", t0 + seconds(10)));  // the first has left the window
  CHECK(plan.decide(fault_stage::mail, "jaku.com", t0 + seconds(11)));        // the one at 4 s has not
  CHECK_FALSE(plan.decide(fault_stage::mail, "jaku.com", t0 + seconds(14)));
}
