#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include "common/mail/durable_file.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using mailnet::node::group_committer;
using mailnet::node::stage_file;
using mailnet::node::staged_file;

namespace {

struct maildir_root : mailnet::test::temp_dir {
  maildir_root() : temp_dir("gc") {
    for (const char* box : {"a", "b"})
      for (const char* sub : {"tmp", "new"}) fs::create_directories(path / box / sub);
  }

  std::size_t count(const char* box, const char* sub) const {
    return static_cast<std::size_t>(std::distance(fs::directory_iterator(path / box / sub), {}));
  }
};

// Waits (bounded) for done callbacks, which come from the committer's thread.
struct outcomes {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::string> results;  // "ok" or the error text

  group_committer::done_fn recorder() {
    return [this](std::exception_ptr e) {
      std::string text = "ok";
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          text = ex.what();
        }
      }
      std::lock_guard lock(mutex);
      results.push_back(text);
      changed.notify_all();
    };
  }
  bool wait_for(std::size_t n) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(20), [&] { return results.size() >= n; });
  }
};

group_committer::work_fn copies(const fs::path& root, std::vector<std::string> boxes, std::string name) {
  return [=] {
    std::vector<staged_file> staged;
    for (const auto& box : boxes)
      staged.push_back(stage_file(root / box / "tmp" / name, root / box / "new" / name, "Subject: x\r\n\r\nbody\r\n",
                                  false, false));
    return staged;
  };
}

}  // namespace

TEST_CASE("group commit: every copy is published before done, with nothing left in tmp/") {
  for (bool whole_filesystem : {true, false}) {
    CAPTURE(whole_filesystem);
    maildir_root root;
    outcomes seen;
    {
      group_committer committer(root.path, whole_filesystem);
      for (int i = 0; i < 50; ++i)
        committer.submit(copies(root.path, {"a", "b"}, "m" + std::to_string(i)), seen.recorder());
      REQUIRE(seen.wait_for(50));
    }
    CHECK(std::count(seen.results.begin(), seen.results.end(), "ok") == 50);
    CHECK(root.count("a", "new") == 50);
    CHECK(root.count("b", "new") == 50);
    CHECK(root.count("a", "tmp") == 0);
    CHECK(root.count("b", "tmp") == 0);
  }
}

TEST_CASE("group commit: a message whose copy cannot be linked is published nowhere, the others are") {
  maildir_root root;
  outcomes seen;
  fs::remove_all(root.path / "b" / "new");
  std::ofstream(root.path / "b" / "new") << "a file where the folder should be";
  {
    group_committer committer(root.path);
    committer.submit(copies(root.path, {"a"}, "fine1"), seen.recorder());
    committer.submit(copies(root.path, {"a", "b"}, "broken"), seen.recorder());
    committer.submit(copies(root.path, {"a"}, "fine2"), seen.recorder());
    committer.submit([]() -> std::vector<staged_file> { throw std::runtime_error("work failed"); }, seen.recorder());
    REQUIRE(seen.wait_for(4));
  }
  CHECK(std::count(seen.results.begin(), seen.results.end(), "ok") == 2);
  CHECK(std::count(seen.results.begin(), seen.results.end(), "work failed") == 1);
  CHECK(root.count("a", "new") == 2);  // fine1 and fine2; not broken's copy for a
  CHECK_FALSE(fs::exists(root.path / "a" / "new" / "broken"));
  CHECK(root.count("a", "tmp") == 0);
  CHECK(root.count("b", "tmp") == 0);
}

TEST_CASE("group commit: stop drops what was not started and publishes nothing without its done") {
  maildir_root root;
  outcomes seen;
  std::mutex gate_mutex;
  std::condition_variable gate;
  bool released = false;
  std::atomic<int> calls{0};
  {
    group_committer committer(root.path, true, 1);
    committer.submit(
        [&]() -> std::vector<staged_file> {
          ++calls;
          std::unique_lock lock(gate_mutex);  // held until stop() has begun
          gate.wait_for(lock, std::chrono::seconds(20), [&] { return released; });
          return copies(root.path, {"a"}, "in_flight")();
        },
        seen.recorder());
    for (int i = 0; i < 5; ++i)
      committer.submit(copies(root.path, {"a"}, "queued" + std::to_string(i)), seen.recorder());
    const auto started_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (calls.load() == 0 && std::chrono::steady_clock::now() < started_by) std::this_thread::yield();
    REQUIRE(calls.load() == 1);  // the first work is running (and waits); the rest are queued
    std::thread release([&] {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!committer.stopping() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
      std::lock_guard lock(gate_mutex);
      released = true;
      gate.notify_all();
    });
    committer.stop();
    release.join();
  }
  CHECK(calls.load() == 1);            // the queued ones never ran
  CHECK(seen.results.empty());         // and nobody was told "done"
  CHECK(root.count("a", "new") == 0);  // nothing published without its done
  CHECK(root.count("a", "tmp") == 0);  // and what was written is gone
}

TEST_CASE("group commit: a name already taken is never replaced; that message fails, nothing of it stays") {
  // maildir(5) and the queue publish with a no-replace rename or link():
  // the file already under the name keeps its bytes, the committing message
  // gets its error (a 451 for the session) and none of its copies stays
  // visible, in any mailbox, in either sync mode.
  for (bool whole_filesystem : {true, false}) {
    CAPTURE(whole_filesystem);
    maildir_root root;
    outcomes seen;
    std::ofstream(root.path / "a" / "new" / "taken", std::ios::binary) << "the message that was there first";
    {
      group_committer committer(root.path, whole_filesystem);
      committer.submit(copies(root.path, {"b", "a"}, "taken"), seen.recorder());  // b's copy links first
      committer.submit(copies(root.path, {"a", "b"}, "free"), seen.recorder());
      REQUIRE(seen.wait_for(2));
    }
    std::sort(seen.results.begin(), seen.results.end());
    REQUIRE(seen.results.size() == 2);
    CHECK(seen.results[0] == "ok");
    CHECK(seen.results[1].find("publish " + (root.path / "a" / "new" / "taken").string()) != std::string::npos);
    CHECK(seen.results[1].find("File exists") != std::string::npos);
    CHECK(mailnet::test::read_file(root.path / "a" / "new" / "taken") == "the message that was there first");
    CHECK_FALSE(fs::exists(root.path / "b" / "new" / "taken"));  // taken back: all or nothing
    CHECK(fs::exists(root.path / "a" / "new" / "free"));
    CHECK(fs::exists(root.path / "b" / "new" / "free"));
    CHECK(root.count("a", "new") == 2);
    CHECK(root.count("b", "new") == 1);
    CHECK(root.count("a", "tmp") == 0);
    CHECK(root.count("b", "tmp") == 0);
  }
}

TEST_CASE("publish_durably: never over an existing file unless asked to replace (a queue rewrite)") {
  maildir_root root;
  const auto target = root.path / "a" / "new" / "m1";
  std::ofstream(target, std::ios::binary) << "first";
  CHECK_THROWS_AS(mailnet::node::publish_durably(root.path / "a" / "tmp" / "m1", target, "second"),
                  std::system_error);
  CHECK(mailnet::test::read_file(target) == "first");
  CHECK(root.count("a", "tmp") == 0);
  mailnet::node::publish_durably(root.path / "a" / "tmp" / "m1", target, "rewritten", true);
  CHECK(mailnet::test::read_file(target) == "rewritten");
  CHECK(root.count("a", "tmp") == 0);
}

TEST_CASE("group commit: no thread before the first request; one writer while requests come one by one") {
  maildir_root root;
  outcomes seen;
  group_committer committer(root.path, true, 2);
  CHECK(committer.threads() == 0);  // an idle node runs none
  for (int i = 0; i < 10; ++i) {
    committer.submit(copies(root.path, {"a"}, "one" + std::to_string(i)), seen.recorder());
    REQUIRE(seen.wait_for(static_cast<std::size_t>(i + 1)));
  }
  CHECK(committer.threads() == 2);  // the sync thread and one writer
  CHECK(root.count("a", "new") == 10);
}

TEST_CASE("group commit: a request that waits while the writer is busy starts the second writer") {
  maildir_root root;
  outcomes seen;
  std::mutex gate_mutex;
  std::condition_variable gate_changed;
  bool inside = false, open = false;
  group_committer committer(root.path, true, 2);
  committer.submit(
      [&]() -> std::vector<staged_file> {
        std::unique_lock lock(gate_mutex);
        inside = true;
        gate_changed.notify_all();
        gate_changed.wait_for(lock, std::chrono::seconds(30), [&] { return open; });
        return copies(root.path, {"a"}, "held")();
      },
      seen.recorder());
  {
    std::unique_lock lock(gate_mutex);
    REQUIRE(gate_changed.wait_for(lock, std::chrono::seconds(30), [&] { return inside; }));
  }
  committer.submit(copies(root.path, {"b"}, "next"), seen.recorder());
  REQUIRE(seen.wait_for(1));  // written by the second writer while the first is held
  CHECK(seen.results.front() == "ok");
  CHECK(committer.threads() == 3);
  {
    std::lock_guard lock(gate_mutex);
    open = true;
  }
  gate_changed.notify_all();
  REQUIRE(seen.wait_for(2));
  CHECK(root.count("a", "new") == 1);
  CHECK(root.count("b", "new") == 1);
}
