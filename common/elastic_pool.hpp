// A pool of worker threads that are started when work needs them: the
// first at the first job, another only when a job is queued while every
// thread is busy, up to a maximum. A node that is idle runs none, and one
// whose jobs never overlapped runs one. Threads cost each process memory
// (a stack, a malloc arena) and cost the kernel work when it exits: at
// `mailnet down` of a thousand nodes after a load that was a third of the
// machine's CPU (bench/README.md, "Threads at first need").
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mailnet {

class elastic_pool {
 public:
  explicit elastic_pool(unsigned max_threads);
  ~elastic_pool();  // join()
  elastic_pool(const elastic_pool&) = delete;
  elastic_pool& operator=(const elastic_pool&) = delete;

  // Queues a job for a thread of the pool. Throws std::system_error, with
  // nothing queued, only when the pool has no thread and none can start
  // (the process or memory limit); a further thread that cannot start is
  // not an error: the job waits for a busy one.
  void post(std::function<void()> job);
  // Makes sure a thread runs, so that post() cannot throw; throws as post.
  void need_thread();
  // Runs every queued job, then ends the threads. Nothing is posted after.
  void join();
  // Threads started so far, and those of them not running a job.
  std::size_t threads();
  std::size_t idle_threads();

 private:
  void start_thread();  // with mutex_ held
  void work();

  const unsigned max_threads_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;  // threads started and not running a job
  bool stopping_ = false;
};

}  // namespace mailnet
