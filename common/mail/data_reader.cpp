#include "common/mail/data_reader.hpp"

#include <algorithm>
#include <cstring>

namespace mailnet::node {

data_reader::data_reader(std::uint64_t max_size, std::size_t max_line)
    : max_size_(max_size), max_line_(max_line) {}

void data_reader::emit(char c) {
  if (c != '\r' && c != '\n' && ++line_len_ > max_line_ - 2) line_too_long_ = true;
  keep({&c, 1});
}

void data_reader::emit_run(std::string_view run) {
  line_len_ += run.size() - static_cast<std::size_t>(std::count(run.begin(), run.end(), '\n'));
  if (line_len_ > max_line_ - 2) line_too_long_ = true;
  keep(run);
}

void data_reader::keep(std::string_view bytes) {
  size_ += bytes.size();
  if (too_big_) return;
  if (size_ > max_size_) {
    too_big_ = true;
    message_.clear();
    message_.shrink_to_fit();
    return;
  }
  message_.append(bytes);
}

std::size_t data_reader::feed(std::string_view bytes) {
  std::size_t i = 0;
  for (; i < bytes.size() && state_ != state::end; ++i) {
    const char c = bytes[i];
    switch (state_) {
      case state::bol:
        line_len_ = 0;
        if (c == '.') {
          state_ = state::dot;
          break;
        }
        emit(c);
        state_ = c == '\r' ? state::cr : state::mid;
        break;
      case state::mid: {
        // The middle of a line: everything up to the next CR at once.
        const char* here = bytes.data() + i;
        const auto* cr = static_cast<const char*>(std::memchr(here, '\r', bytes.size() - i));
        if (!cr) {
          emit_run(bytes.substr(i));
          i = bytes.size() - 1;
          break;
        }
        emit_run({here, static_cast<std::size_t>(cr - here)});
        emit('\r');
        state_ = state::cr;
        i = static_cast<std::size_t>(cr - bytes.data());
        break;
      }
      case state::cr:
        emit(c);
        state_ = c == '\n' ? state::bol : c == '\r' ? state::cr : state::mid;
        break;
      case state::dot:
        // A leading dot is removed (it was stuffed); ".\r" may still end.
        if (c == '\r') {
          state_ = state::dot_cr;
        } else {
          emit(c);
          state_ = state::mid;
        }
        break;
      case state::dot_cr:
        if (c == '\n') {
          state_ = state::end;
        } else {
          emit('\r');
          emit(c);
          state_ = c == '\r' ? state::cr : state::mid;
        }
        break;
      case state::end:
        break;
    }
  }
  return i;
}

std::string dot_stuff_for_wire(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 64 + 8);
  bool bol = true;
  for (std::size_t i = 0; i < message.size(); ++i) {
    char c = message[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
      out += "\r\n";
      bol = true;
      continue;
    }
    if (bol && c == '.') out += '.';
    out += c;
    bol = false;
  }
  if (!bol) out += "\r\n";  // a message must end with a line end before "."
  return out;
}

}  // namespace mailnet::node
