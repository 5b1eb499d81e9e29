#include <doctest/doctest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/event_log.hpp"
#include "launcher/web/event_feed.hpp"
#include "launcher/web/event_names.hpp"

using namespace mailnet::launcher::web;
using json = nlohmann::json;

namespace {

std::string line(int n) {
  return "2026-11-22T03:01:02.345Z id=Q" + std::to_string(n) + " event=accepted";
}

json data_of(const std::string& frame) {
  const auto at = frame.find("\ndata: ");
  REQUIRE(at != std::string::npos);
  REQUIRE(frame.ends_with("\n\n"));
  return json::parse(frame.substr(at + 7, frame.size() - at - 9));
}

}  // namespace

TEST_CASE("event_frame: one SSE event of an event line, fields unquoted as the nodes quote them") {
  const std::string nasty = "a \"b\" = c\x01\n";
  std::string l = "2026-11-22T03:01:02.345Z id=Q1 event=relay_failed";
  mailnet::append_log_fields(l, {{"error", nasty}, {"empty", ""}, {"node", "spoof"}});
  const auto frame = event_frame(7, "jaku.com", l);
  REQUIRE(frame);
  CHECK(frame->starts_with("id: 7\ndata: {"));
  CHECK(std::count(frame->begin(), frame->end(), '\n') == 3);  // the JSON is one line
  const auto doc = data_of(*frame);
  CHECK(doc["time"] == "2026-11-22T03:01:02.345Z");
  CHECK(doc["node"] == "jaku.com");  // the child's name, never a field's
  CHECK(doc["event"] == "relay_failed");
  CHECK(doc["id"] == "Q1");
  CHECK(doc["error"] == nasty);
  CHECK(doc["empty"] == "");
  CHECK_FALSE(event_frame(1, "n", "not an event line"));
  CHECK_FALSE(event_frame(1, "n", "2026-11-22T03:01:02.345Z id=Q1 no_event=here"));
}

TEST_CASE("state_event_line: the launcher's own event when a child's state changes") {
  const auto frame = event_frame(3, "deathstar.com", state_event_line("killed", "signal 9"));
  REQUIRE(frame);
  const auto doc = data_of(*frame);
  CHECK(doc["event"] == "state");
  CHECK(doc["state"] == "killed");
  CHECK(doc["exit"] == "signal 9");
  CHECK(doc["node"] == "deathstar.com");
  const auto ready = data_of(*event_frame(4, "jaku.com", state_event_line("ready", "")));
  CHECK(ready["state"] == "ready");
  CHECK_FALSE(ready.contains("exit"));
}

TEST_CASE("event_feed: increasing ids, resume after Last-Event-ID, the recent past bounded") {
  event_feed_limits limits;
  limits.recent_events = 3;
  event_feed feed(limits);
  feed.publish("n", "ignored: not an event");
  for (int i = 1; i <= 5; ++i) feed.publish("n", line(i));
  CHECK(feed.last_id() == 5);
  auto live = feed.subscribe(std::nullopt);
  CHECK(live->frames.empty());  // without Last-Event-ID: from now on only
  auto resumed = feed.subscribe(3);
  REQUIRE(resumed->frames.size() == 2);
  CHECK(resumed->frames[0].starts_with("id: 4\n"));
  auto old = feed.subscribe(0);
  REQUIRE(old->frames.size() == 3);  // only the last 3 are kept
  CHECK(old->frames[0].starts_with("id: 3\n"));
  int woken = 0;
  live->wake = [&] { ++woken; };
  feed.publish("n", line(6));
  CHECK(woken == 1);
  REQUIRE(live->frames.size() == 1);
  CHECK(live->frames[0].starts_with("id: 6\n"));
  feed.unsubscribe(live);
  feed.publish("n", line(7));
  CHECK(woken == 1);
  CHECK(feed.clients() == 2);
}

TEST_CASE("event_feed: a client too far behind is dropped, the others go on") {
  event_feed_limits limits;
  limits.client_events = 4;
  event_feed feed(limits);
  auto slow = feed.subscribe(std::nullopt);
  auto fast = feed.subscribe(std::nullopt);
  bool told = false;
  slow->wake = [&] { told = slow->dropped; };
  for (int i = 1; i <= 10; ++i) {
    feed.publish("n", line(i));
    fast->frames.clear();  // this one reads
    fast->bytes = 0;
  }
  CHECK(slow->dropped);
  CHECK(told);
  CHECK(slow->frames.empty());  // its memory is given back
  CHECK_FALSE(fast->dropped);
  CHECK(feed.dropped() == 1);
}

TEST_CASE("parse_events_query: since, a list of known events, and a reason for anything else") {
  const auto none = parse_events_query("");
  CHECK(none.error.empty());
  CHECK_FALSE(none.since);
  CHECK(none.filter.names.empty());

  const auto both = parse_events_query("since=0&events=state,relayed%2Cdeferred,state");
  REQUIRE(both.error.empty());
  CHECK(both.since == 0u);
  CHECK(both.filter.names == std::vector<std::string>{"state", "relayed", "deferred"});
  CHECK(both.filter.wants("relayed"));
  CHECK_FALSE(both.filter.wants("accepted"));

  CHECK(parse_events_query("events=state,nonsense").error.find("unknown event 'nonsense'") != std::string::npos);
  CHECK(parse_events_query("events=state,nonsense").error.find("known: accept_error") != std::string::npos);
  CHECK(parse_events_query("event=state").error.find("unknown query parameter 'event'") != std::string::npos);
  CHECK(parse_events_query("events=").error.find("empty name") != std::string::npos);
  CHECK(parse_events_query("events=state,").error.find("empty name") != std::string::npos);
  CHECK(parse_events_query("events=state&events=relayed").error.find("twice") != std::string::npos);
  CHECK(parse_events_query("since=x").error.find("since must be") != std::string::npos);
  CHECK(parse_events_query("since=").error.find("since must be") != std::string::npos);
  CHECK(parse_events_query("events=%zz").error.find("broken %-escape") != std::string::npos);
}

TEST_CASE("known_events: sorted, and holds the events the dashboard asks for") {
  for (const auto name : {"state", "relayed", "deferred", "accepted", "delivered", "query", "ready"})
    CHECK(is_known_event(name));
  CHECK_FALSE(is_known_event("nonsense"));
  CHECK_FALSE(is_known_event(""));
}

TEST_CASE("event_feed: a client with a filter gets only the events it names, live and resumed") {
  event_feed feed;
  auto state = [](const char* s) { return state_event_line(s, ""); };
  feed.publish("n", line(1));                                            // id 1, accepted
  feed.publish("n", state("ready"));                                     // id 2
  feed.publish("n", "2026-11-22T03:01:02.345Z id=Q3 event=relayed rcpt=a@b");  // id 3
  event_filter only;
  only.names = {"state", "relayed"};
  auto picky = feed.subscribe(0, only);
  REQUIRE(picky->frames.size() == 2);
  CHECK(picky->frames[0].starts_with("id: 2\n"));
  CHECK(picky->frames[1].starts_with("id: 3\n"));
  auto all = feed.subscribe(std::nullopt);
  int picky_woken = 0;
  picky->wake = [&] { ++picky_woken; };
  picky->frames.clear();
  feed.publish("n", line(4));  // accepted: not for picky
  CHECK(picky->frames.empty());
  CHECK(picky_woken == 0);
  REQUIRE(all->frames.size() == 1);
  CHECK(all->frames[0].starts_with("id: 4\n"));
  feed.publish("n", state("killed"));
  REQUIRE(picky->frames.size() == 1);
  CHECK(picky->frames[0].starts_with("id: 5\n"));
  CHECK(data_of(picky->frames[0])["state"] == "killed");
  CHECK(picky_woken == 1);
  CHECK(all->frames.size() == 2);
}

TEST_CASE("event_name: the line's own event, found without parsing the line") {
  CHECK(event_name("2026-11-22T03:01:02.345Z id=Q1 event=accepted size=3") == "accepted");
  CHECK(event_name("2026-11-22T03:01:02.345Z event=state state=ready") == "state");
  CHECK(event_name("2026-11-22T03:01:02.345Z id=Q1 no_event=x").empty());
  CHECK(event_name("not an event").empty());
}
