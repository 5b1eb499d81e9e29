#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/topology.hpp"
#include "resolver/dns_faults.hpp"

using namespace mailnet;
using mailnet::resolver::dns_faults;

namespace {

topology with_dns_rules(const std::string& rules) {
  return parse_topology(R"({"name": "t", "domains": [{"name": "jaku.com", "listen": "127.0.0.1:1025"},
                                                     {"name": "deathstar.com", "listen": "127.0.0.1:1030"}],
                           "faults": {"seed": 42, "rules": )" + rules + "}}",
                        "t.json");
}

}  // namespace

TEST_CASE("a dns rule covers its name and the names under it, not look-alikes") {
  CHECK(dns_faults::covers("deathstar.com", "deathstar.com"));
  CHECK(dns_faults::covers("deathstar.com", "deathstar.com."));
  CHECK(dns_faults::covers("deathstar.com", "_smtp._tcp.deathstar.com."));
  CHECK(dns_faults::covers("deathstar.com", "mx.deathstar.com"));
  CHECK_FALSE(dns_faults::covers("deathstar.com", "olddeathstar.com"));
  CHECK_FALSE(dns_faults::covers("deathstar.com", "deathstar.com.au"));
  CHECK_FALSE(dns_faults::covers("deathstar.com", "com"));
}

TEST_CASE("the resolver takes only dns rules, and decides like the node") {
  auto t = with_dns_rules(R"([
      {"name": "smtp", "to": "jaku.com", "stage": "rcpt", "reply": "451 4.3.0 x"},
      {"name": "flap", "to": "deathstar.com", "stage": "dns", "answer": "SERVFAIL", "every": 2},
      {"name": "gone", "to": "mx.deathstar.com", "stage": "dns", "answer": "NXDOMAIN", "first": 1}])");
  dns_faults faults(t.faults, 7, std::chrono::steady_clock::now());
  CHECK(faults.size() == 2);
  CHECK(faults.seed() == 42);
  CHECK_FALSE(faults.watches("jaku.com."));
  CHECK(faults.watches("mx.deathstar.com."));
  CHECK(faults.decide("deathstar.com.") == nullptr);  // flap reached once
  const auto* hit = faults.decide("deathstar.com.");   // twice: every 2
  REQUIRE(hit);
  CHECK(hit->name == "flap");
  // flap comes first in the list: reached (3rd, no fire), then gone fires its first.
  hit = faults.decide("mx.deathstar.com.");
  REQUIRE(hit);
  CHECK(hit->name == "gone");
  CHECK(faults.decide("mx.deathstar.com.")->name == "flap");  // 4th
  CHECK(faults.decide("jaku.com.") == nullptr);
}

TEST_CASE("a dns rule's time window counts from the resolver's start") {
  auto t = with_dns_rules(R"([{"name": "later", "to": "deathstar.com", "stage": "dns", "answer": "REFUSED",
                               "after": "1m", "for": "1m"}])");
  const auto start = std::chrono::steady_clock::now();
  dns_faults faults(t.faults, 7, start);
  CHECK(faults.decide("deathstar.com.", start + std::chrono::seconds(59)) == nullptr);
  CHECK(faults.decide("deathstar.com.", start + std::chrono::seconds(60)) != nullptr);
  CHECK(faults.decide("deathstar.com.", start + std::chrono::seconds(120)) == nullptr);
}

TEST_CASE("dns rules added and cleared at run time: a rule that stays keeps its count") {
  auto t = with_dns_rules(R"([{"name": "flap", "to": "deathstar.com", "stage": "dns", "answer": "SERVFAIL",
                               "every": 2}])");
  const auto start = std::chrono::steady_clock::now();
  dns_faults faults(t.faults, 7, start);
  CHECK(faults.decide("deathstar.com.", start) == nullptr);  // flap reached once
  auto added = with_dns_rules(R"([{"name": "gone", "to": "jaku.com", "stage": "dns", "answer": "NXDOMAIN",
                                   "for": "1m"},
                                  {"name": "smtp", "to": "jaku.com", "stage": "rcpt", "reply": "451 4.3.0 x"}])");
  const auto later = start + std::chrono::minutes(5);
  faults.set_run_time(added.faults.rules, {}, later);
  CHECK(faults.size() == 2);  // the rcpt rule is a node's
  CHECK(faults.watches("mx.jaku.com."));
  REQUIRE(faults.decide("deathstar.com.", later));  // flap's second reach: its count was kept
  // gone's "for" counts from when it was added, not from the resolver's start.
  REQUIRE(faults.decide("jaku.com.", later + std::chrono::seconds(59)));
  CHECK(faults.decide("jaku.com.", later + std::chrono::seconds(61)) == nullptr);
  // The topology's rule cleared, the added one gone: nothing covers either name.
  faults.set_run_time({}, {"flap"}, later);
  CHECK(faults.empty());
  CHECK_FALSE(faults.watches("deathstar.com."));
  CHECK(faults.decide("deathstar.com.", later) == nullptr);
  // Not cleared any more: the topology's rule comes back, counted from 0.
  faults.set_run_time({}, {}, later);
  CHECK(faults.size() == 1);
  CHECK(faults.decide("deathstar.com.", later) == nullptr);
}
