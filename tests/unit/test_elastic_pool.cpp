#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>

#include "common/elastic_pool.hpp"

using mailnet::elastic_pool;

namespace {

// Jobs that hold their thread until released, so that the test decides
// when they overlap.
struct gate {
  std::mutex mutex;
  std::condition_variable changed;
  int inside = 0;
  bool open = false;

  void enter_and_wait() {
    std::unique_lock lock(mutex);
    ++inside;
    changed.notify_all();
    changed.wait_for(lock, std::chrono::seconds(30), [&] { return open; });
  }
  bool wait_inside(int n) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(30), [&] { return inside >= n; });
  }
  void release() {
    std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }
};

}  // namespace

TEST_CASE("elastic pool: no thread before the first job, one for jobs that never overlap") {
  elastic_pool pool(4);
  CHECK(pool.threads() == 0);
  std::atomic<int> done{0};
  for (int i = 0; i < 20; ++i) {
    pool.post([&] { ++done; });
    // Each job is over, and its thread free again, before the next is
    // posted: the one thread takes them all.
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
         (done.load() <= i || pool.idle_threads() != 1) && std::chrono::steady_clock::now() < until;)
      std::this_thread::yield();
  }
  CHECK(done.load() == 20);
  CHECK(pool.threads() == 1);
}

TEST_CASE("elastic pool: a job that finds every thread busy starts another, up to the maximum") {
  elastic_pool pool(3);
  gate g;
  for (int i = 0; i < 3; ++i) pool.post([&] { g.enter_and_wait(); });
  REQUIRE(g.wait_inside(3));  // three at once: three threads
  CHECK(pool.threads() == 3);
  std::atomic<int> later{0};
  for (int i = 0; i < 5; ++i) pool.post([&] { ++later; });  // the maximum: queued, no fourth thread
  CHECK(pool.threads() == 3);
  g.release();
  pool.join();  // runs what was queued
  CHECK(later.load() == 5);
}

TEST_CASE("elastic pool: need_thread starts one; nothing is posted after join") {
  elastic_pool pool(2);
  pool.need_thread();
  CHECK(pool.threads() == 1);
  pool.join();
  CHECK(pool.threads() == 0);
  CHECK_THROWS_AS(pool.post([] {}), std::system_error);
}
