#include "common/elastic_pool.hpp"

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace mailnet {

elastic_pool::elastic_pool(unsigned max_threads) : max_threads_(std::max(1u, max_threads)) {}

elastic_pool::~elastic_pool() { join(); }

void elastic_pool::start_thread() {
  threads_.emplace_back([this] { work(); });
  ++idle_;  // free for a job from its start, not from its first wait
}

void elastic_pool::need_thread() {
  std::lock_guard lock(mutex_);
  if (stopping_) throw std::system_error(ECANCELED, std::generic_category(), "the thread pool is stopping");
  if (threads_.empty()) start_thread();
}

void elastic_pool::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw std::system_error(ECANCELED, std::generic_category(), "the thread pool is stopping");
    if (threads_.empty()) start_thread();  // throws before anything is queued
    jobs_.push_back(std::move(job));
    // More jobs waiting than threads free to take them: one more thread.
    if (jobs_.size() > idle_ && threads_.size() < max_threads_) {
      try {
        start_thread();
      } catch (const std::system_error&) {
        // The job is queued and a thread runs: it waits its turn.
      }
    }
  }
  wake_.notify_one();
}

void elastic_pool::join() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    threads.swap(threads_);
  }
  wake_.notify_all();
  for (auto& t : threads) t.join();
}

std::size_t elastic_pool::threads() {
  std::lock_guard lock(mutex_);
  return threads_.size();
}

std::size_t elastic_pool::idle_threads() {
  std::lock_guard lock(mutex_);
  return idle_;
}

void elastic_pool::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) {  // stopping, and nothing left
      --idle_;
      return;
    }
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    --idle_;
    lock.unlock();
    job();  // a job handles its own errors: one that throws ends the process, as on any thread
    job = nullptr;  // its captures go before the lock is taken again
    lock.lock();
    ++idle_;
  }
}

}  // namespace mailnet
