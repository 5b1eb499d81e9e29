#include "common/event_log.hpp"

#include <cerrno>
#include <chrono>
#include <ctime>
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
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // roomy enough for any int the format could print
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

event_log::~event_log() {
  if (file_) std::fclose(file_);
}

void event_log::open(const std::filesystem::path& file, bool echo_stdout) {
  std::filesystem::create_directories(file.parent_path());
  std::FILE* f = std::fopen(file.c_str(), "a");
  if (!f) throw std::system_error(errno, std::generic_category(), "cannot open " + file.string());
  std::lock_guard lock(mutex_);
  if (file_) std::fclose(file_);
  file_ = f;
  echo_ = echo_stdout;
}

void event_log::write(std::initializer_list<log_field> fields) {
  std::string line;
  for (const auto& [key, value] : fields) {
    if (!line.empty()) line += ' ';
    line += key;
    line += '=';
    line += log_value(value);
  }
  write_raw(line);
}

void event_log::write_raw(std::string_view text) {
  std::string line = utc_timestamp();
  line += ' ';
  line += text;
  line += '\n';
  emit(line);
}

void event_log::write_stamped_lines(std::string_view lines) {
  if (!lines.empty()) emit(lines);
}

void event_log::emit(std::string_view line) {
  std::lock_guard lock(mutex_);
  // Line-at-a-time flushing: a crash loses at most the line being written,
  // and the launcher sees each event as it happens.
  if (file_) {
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }
  if (echo_) {
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }
}

}  // namespace mailnet
