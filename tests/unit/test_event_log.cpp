// event_log's coalesced writes: lines of one pass in one write, batched lines
// held for the batch task, and the order of lines kept across both paces.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "common/event_log.hpp"
#include "temp_dir.hpp"

using namespace mailnet;

namespace {

// Stands in for the event loop: scheduled tasks wait in a list until run.
struct manual_loop {
  std::vector<std::function<void()>> pass;   // asio::post in a node
  std::vector<std::function<void()>> batch;  // the 20 ms timer in a node
  static void run(std::vector<std::function<void()>>& tasks) {
    auto now = std::move(tasks);
    tasks.clear();
    for (auto& t : now) t();
  }
};

// The event names in the file, in order.
std::vector<std::string> events_in(const std::filesystem::path& file) {
  std::vector<std::string> out;
  const std::string text = test::read_file(file);
  for (std::size_t pos = 0; (pos = text.find("event=", pos)) != std::string::npos;) {
    auto end = text.find_first_of(" \n", pos);
    out.push_back(text.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

}  // namespace

TEST_CASE("event log: batched lines wait for the batch task; a prompt line takes them along, in order") {
  test::temp_dir dir("event_log");
  const auto file = dir.path / "node.log";
  manual_loop loop;
  {
    event_log log;
    log.open(file, false);
    log.coalesce([&](std::function<void()> f) { loop.pass.push_back(std::move(f)); },
                 [&](std::function<void()> f) { loop.batch.push_back(std::move(f)); });

    log.write({{"event", "connect"}}, event_log::pace::batched);
    log.write({{"event", "accepted"}}, event_log::pace::batched);
    CHECK(loop.batch.size() == 1);  // one batch task for both
    CHECK(loop.pass.empty());
    manual_loop::run(loop.pass);
    CHECK(events_in(file).empty());  // nothing until the batch task
    manual_loop::run(loop.batch);
    CHECK(events_in(file) == std::vector<std::string>{"connect", "accepted"});

    // A batched line, then a prompt one: the pass writes both, in order.
    log.write({{"event", "delivered"}}, event_log::pace::batched);
    log.write({{"event", "relayed"}});
    CHECK(loop.pass.size() == 1);
    manual_loop::run(loop.pass);
    CHECK(events_in(file) == std::vector<std::string>{"connect", "accepted", "delivered", "relayed"});
    // The batch task armed for "delivered" finds nothing left, and a new
    // batched line arms no second task while that one is pending.
    log.write({{"event", "disconnect"}}, event_log::pace::batched);
    CHECK(loop.batch.size() == 1);
    manual_loop::run(loop.batch);
    CHECK(events_in(file).back() == "disconnect");

    // flush() writes what waits at once (a node's last session closing).
    log.write({{"event", "connect"}}, event_log::pace::batched);
    log.flush();
    CHECK(events_in(file).size() == 6);

    // What is still waiting when the log goes away is written, not lost.
    log.write({{"event", "late"}}, event_log::pace::batched);
  }
  CHECK(events_in(file).back() == "late");
  CHECK(events_in(file).size() == 7);
}

TEST_CASE("event log: without a batch scheduler, batched lines go with the pass") {
  test::temp_dir dir("event_log_pass");
  const auto file = dir.path / "smtp.log";
  manual_loop loop;
  event_log log;
  log.open(file, false);
  log.coalesce([&](std::function<void()> f) { loop.pass.push_back(std::move(f)); });
  log.write({{"event", "a"}}, event_log::pace::batched);
  log.write({{"event", "b"}});
  CHECK(loop.pass.size() == 1);
  CHECK(events_in(file).empty());
  manual_loop::run(loop.pass);
  CHECK(events_in(file) == std::vector<std::string>{"a", "b"});
}
