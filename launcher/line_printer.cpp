#include "launcher/line_printer.hpp"

#include <cstdio>

namespace mailnet::launcher {

line_printer::line_printer(std::size_t max_pending_bytes)
    : max_pending_bytes_(max_pending_bytes), thread_([this] { run(); }) {}

line_printer::~line_printer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void line_printer::print(std::string line) {
  line += '\n';
  print_block(std::move(line), 1);
}

void line_printer::print_block(std::string lines, std::size_t count) {
  if (count == 0) return;
  {
    std::lock_guard lock(mutex_);
    if (pending_bytes_ + lines.size() > max_pending_bytes_) {
      dropped_ += count;
      return;
    }
    pending_bytes_ += lines.size();
    pending_.push_back(std::move(lines));
  }
  wake_.notify_one();
}

void line_printer::flush() {
  std::unique_lock lock(mutex_);
  drained_.wait(lock, [this] { return pending_.empty() && !writing_; });
}

void line_printer::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty() && stopping_) return;
    std::string batch;
    if (dropped_) {
      batch = "mailnet: " + std::to_string(dropped_) + " log lines not shown (the output was too slow); see the nodes' node.log\n";
      dropped_ = 0;
    }
    while (!pending_.empty()) {
      batch += pending_.front();
      pending_.pop_front();
    }
    pending_bytes_ = 0;
    writing_ = true;
    lock.unlock();
    std::fwrite(batch.data(), 1, batch.size(), stdout);
    std::fflush(stdout);
    lock.lock();
    writing_ = false;
    if (pending_.empty()) drained_.notify_all();
  }
}

}  // namespace mailnet::launcher
