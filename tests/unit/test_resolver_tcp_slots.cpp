// Whom the resolver's TCP side drops when every slot is taken.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "resolver/tcp_slots.hpp"

using mailnet::resolver::tcp_slots;
using namespace std::chrono_literals;

namespace {

struct recorder {
  std::vector<std::string> closed;
  std::function<void()> closer(const std::string& name) {
    return [this, name] { closed.push_back(name); };
  }
};

}  // namespace

TEST_CASE("a full set of TCP slots drops the longest-idle connection first") {
  recorder r;
  tcp_slots slots(3);
  const auto t0 = tcp_slots::clock::now();
  const auto slow = slots.add(r.closer("slow"), t0);
  const auto answered = slots.add(r.closer("answered"), t0 + 1ms);
  const auto silent = slots.add(r.closer("silent"), t0 + 2ms);
  CHECK(slots.full());
  slots.query_started(slow, t0 + 3ms);
  slots.query_started(answered, t0 + 4ms);
  slots.query_done(answered, t0 + 5ms);  // idle again since 5ms; silent is idle since 2ms
  REQUIRE(slots.evict());
  CHECK(r.closed == std::vector<std::string>{"silent"});
  CHECK(slots.size() == 2);
  REQUIRE(slots.evict());
  CHECK(r.closed.back() == "answered");  // idle beats busy even when busy is older
  slots.remove(silent);                  // the evicted session ending later is harmless
  slots.query_done(silent, t0 + 6ms);
  CHECK(slots.size() == 1);
  CHECK_FALSE(slots.full());
}

TEST_CASE("with no idle connection the oldest query in progress is dropped") {
  recorder r;
  tcp_slots slots(2);
  const auto t0 = tcp_slots::clock::now();
  const auto a = slots.add(r.closer("a"), t0);
  const auto b = slots.add(r.closer("b"), t0 + 1ms);
  slots.query_started(b, t0 + 2ms);
  slots.query_started(a, t0 + 3ms);
  REQUIRE(slots.evict());
  CHECK(r.closed == std::vector<std::string>{"b"});
  slots.close_all();
  CHECK(r.closed == std::vector<std::string>{"b", "a"});
  CHECK(slots.size() == 0);
  CHECK_FALSE(slots.evict());
}
