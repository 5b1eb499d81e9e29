#include "common/event_log.hpp"

#include "common/private_files.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fcntl.h>
#include <unistd.h>
#include <system_error>

namespace mailnet {

void append_hex_escape(std::string& out, unsigned char c) {
  static const char hex[] = "0123456789abcdef";
  out += "\\x";
  out += hex[c >> 4];
  out += hex[c & 15];
}

std::string log_value(std::string_view value) {
  bool plain = !value.empty();
  for (unsigned char c : value)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) plain = false;
  if (plain) return std::string(value);
  std::string out = "\"";
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < ' ' || c == 0x7f) {
      append_hex_escape(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string utc_timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  // Every log line asks; the date and time change once a second.
  thread_local std::time_t cached_secs = -1;
  thread_local char cached[80];
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  std::string out(cached);
  const char tail[] = {'.', static_cast<char>('0' + ms / 100), static_cast<char>('0' + ms / 10 % 10),
                       static_cast<char>('0' + ms % 10), 'Z'};
  out.append(tail, sizeof tail);
  return out;
}

namespace {

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a log that cannot be written must not stop the server
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

event_log::~event_log() {
  flush();
  if (fd_ >= 0) ::close(fd_);
}

void event_log::open(const std::filesystem::path& file, bool echo_stdout) {
  // Logs live in the run folder: 0600, never through a link. The folder is
  // checked by the process that owns it (node_service, resolver_app).
  if (!file.parent_path().empty() && !std::filesystem::exists(std::filesystem::symlink_status(file.parent_path())))
    make_private_folder(file.parent_path());
  int fd = open_private_file(file, O_WRONLY | O_CREAT | O_APPEND);
  std::lock_guard lock(mutex_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  echo_ = echo_stdout;
}

void event_log::coalesce(scheduler schedule, scheduler batch_schedule) {
  std::lock_guard lock(mutex_);
  schedule_ = std::move(schedule);
  batch_schedule_ = std::move(batch_schedule);
}

void append_log_fields(std::string& out, std::initializer_list<log_field> fields) {
  for (const auto& [key, value] : fields) {
    out += ' ';
    out += key;
    out += '=';
    out += log_value(value);
  }
}

void event_log::write(std::initializer_list<log_field> fields, pace p) {
  std::string line;
  append_log_fields(line, fields);
  write_raw(std::string_view(line).substr(line.empty() ? 0 : 1), p);
}

void event_log::write_raw(std::string_view text, pace p) {
  std::string line = utc_timestamp();
  line += ' ';
  line += text;
  line += '\n';
  emit(line, p);
}

void event_log::write_stamped_lines(std::string_view lines) {
  if (!lines.empty()) emit(lines);
}

void event_log::emit(std::string_view line, pace p) {
  std::unique_lock lock(mutex_);
  if (schedule_) {
    pending_ += line;
    if (flush_posted_) return;  // the pass's flush takes it
    const bool batch = p == pace::batched && batch_schedule_;
    if (batch && batch_armed_) return;  // the next batch takes it
    (batch ? batch_armed_ : flush_posted_) = true;
    auto schedule = batch ? batch_schedule_ : schedule_;
    void (event_log::*task)() = batch ? &event_log::flush_batch : &event_log::flush;
    lock.unlock();
    try {
      schedule([this, task] { (this->*task)(); });
    } catch (...) {  // out of memory: write now rather than hold lines forever
      (this->*task)();
    }
    return;
  }
  // Line at a time: a crash loses at most the line being written, and the
  // launcher sees each event as it happens.
  if (fd_ >= 0) write_all(fd_, line);
  if (echo_) write_all(STDOUT_FILENO, line);
}

void event_log::flush_batch() {
  {
    std::lock_guard lock(mutex_);
    batch_armed_ = false;
  }
  flush();
}

void event_log::flush() {
  std::lock_guard lock(mutex_);  // written under the lock, so that lines keep their order between threads
  flush_posted_ = false;
  if (pending_.empty()) return;
  if (fd_ >= 0) write_all(fd_, pending_);
  if (echo_) write_all(STDOUT_FILENO, pending_);
  pending_.clear();
}

}  // namespace mailnet
