// One event per line, `key=value`, the session or queue id first:
//   2026-11-22T03:01:02.345Z id=S3 event=accepted client=127.0.0.1:40112
// Lines go to a log file and, when echo is on, to stdout, where the launcher
// picks them up and prefixes them with the child's name.
#pragma once

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace mailnet {

using log_field = std::pair<std::string_view, std::string_view>;

// Quotes a value when it is empty or holds spaces, quotes, '=' or control bytes,
// so that every line splits back into the same fields.
std::string log_value(std::string_view value);

// Appends " key=value" for each field, values through log_value(): the
// fields of an event line.
void append_log_fields(std::string& out, std::initializer_list<log_field> fields);

// Appends c as "\xNN": how logs show a control byte.
void append_hex_escape(std::string& out, unsigned char c);

// "2026-11-22T03:01:02.345Z" (UTC, milliseconds).
std::string utc_timestamp();

class event_log {
 public:
  event_log() = default;  // discards everything until open()
  ~event_log();
  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  // Appends to file (created with its folder). Throws std::system_error.
  void open(const std::filesystem::path& file, bool echo_stdout);

  // prompt: written in this pass of the event loop (or at once without
  // coalesce). batched: may wait for the batch scheduler (a node's 20 ms
  // timer), for the lines every message brings; a prompt line takes the
  // waiting ones with it, so lines keep their order.
  enum class pace { prompt, batched };
  void write(std::initializer_list<log_field> fields, pace p = pace::prompt);
  void write_raw(std::string_view line, pace p = pace::prompt);  // a preformatted line, timestamp added
  // Whole lines that already start with utc_timestamp() and end in '\n', in
  // one write: a session's command and its reply cost one system call, not two.
  void write_stamped_lines(std::string_view lines);

  // Coalesced writes: lines are gathered and written by one task handed to
  // schedule (a post to the event loop), so that all the lines of one pass
  // of the loop cost one write(2) per destination instead of one each. The
  // lines of a crash's last pass can be lost; a 250 never depends on them.
  // Without it (the default) every line is written at once.
  using scheduler = std::function<void(std::function<void()>)>;
  void coalesce(scheduler schedule, scheduler batch_schedule = {});

  void flush();  // writes what is gathered now

 private:
  void emit(std::string_view text, pace p = pace::prompt);  // whole lines
  void flush_batch();  // the batch scheduler's task

  std::mutex mutex_;
  int fd_ = -1;
  bool echo_ = false;
  scheduler schedule_;
  std::string pending_;
  bool flush_posted_ = false;
  scheduler batch_schedule_;
  bool batch_armed_ = false;  // a batch task is scheduled and has not run
};

}  // namespace mailnet
