// The DATA byte stream as a state machine (RFC 5321 §4.1.1.4, §4.5.2):
// bytes in, the unstuffed message out. Only <CRLF>.<CRLF> ends the message;
// a bare LF or bare CR never starts a line, so "\n.\n", "\r.\r" and their
// mixes are ordinary content (SMTP smuggling cannot end a message early).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mailnet::node {

class data_reader {
 public:
  data_reader(std::uint64_t max_size, std::size_t max_line);

  // Consumes bytes up to and including the end marker; returns how many it
  // took. Bytes after the marker (pipelined commands) are left to the caller.
  std::size_t feed(std::string_view bytes);

  bool done() const { return state_ == state::end; }
  bool too_big() const { return too_big_; }
  bool line_too_long() const { return line_too_long_; }
  std::uint64_t size() const { return size_; }  // unstuffed bytes seen, kept or not
  std::string& message() { return message_; }   // empty once too_big()

 private:
  enum class state { bol, mid, cr, dot, dot_cr, end };
  void emit(char c);
  void emit_run(std::string_view run);  // emit() for each byte of a run holding no '\r'
  void keep(std::string_view bytes);    // counts the bytes; stores them while under the size limit


  state state_ = state::bol;  // the DATA command's CRLF came just before
  std::uint64_t max_size_;
  std::size_t max_line_;      // including CRLF
  std::size_t line_len_ = 0;
  std::uint64_t size_ = 0;
  bool too_big_ = false;
  bool line_too_long_ = false;
  std::string message_;
};

// Prepares a stored message for the wire: every line end becomes CRLF
// (bare LF and bare CR included) and lines starting with '.' get one more.
std::string dot_stuff_for_wire(std::string_view message);

}  // namespace mailnet::node
