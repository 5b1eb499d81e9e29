// The launcher's stdout, written by a thread of its own. The supervisor's
// event loop must never wait on a slow terminal or pipe: while it waits it
// reads no child output (so children would block on their pipes) and serves
// no control request. Past a bound, lines are dropped and counted; every line
// is in the children's log files anyway.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace mailnet::launcher {

class line_printer {
 public:
  explicit line_printer(std::size_t max_pending_bytes = 4 << 20);
  ~line_printer();  // prints what is pending, then stops
  line_printer(const line_printer&) = delete;
  line_printer& operator=(const line_printer&) = delete;

  void print(std::string line);  // a newline is added
  // count lines, each already ending in a newline: one hand-over for a
  // whole read of a child's output (the resolver logs 70,000 lines a second).
  void print_block(std::string lines, std::size_t count);
  void flush();                  // returns once everything pushed so far is written

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_, drained_;
  std::deque<std::string> pending_;
  std::size_t pending_bytes_ = 0;
  std::size_t max_pending_bytes_;
  std::size_t dropped_ = 0;
  bool writing_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mailnet::launcher
