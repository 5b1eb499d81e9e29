#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/mail/data_reader.hpp"

using mailnet::node::data_reader;
using mailnet::node::dot_stuff_for_wire;

namespace {

struct outcome {
  bool done;
  std::string message;
  std::size_t consumed;
};

outcome feed_all(const std::string& input, std::size_t chunk = 0, std::uint64_t max_size = 1 << 20,
                 std::size_t max_line = 1000) {
  data_reader r(max_size, max_line);
  std::size_t consumed = 0;
  if (chunk == 0) chunk = input.size() ? input.size() : 1;
  for (std::size_t pos = 0; pos < input.size() && !r.done(); pos += chunk) {
    auto piece = std::string_view(input).substr(pos, chunk);
    auto n = r.feed(piece);
    consumed += n;
    if (n < piece.size()) break;
  }
  return {r.done(), r.message(), consumed};
}

}  // namespace

TEST_CASE("only CRLF.CRLF ends the message, in any chunking") {
  struct row {
    const char* name;
    std::string input;
    bool done;
    std::string message;
  };
  const std::vector<row> table = {
      {"plain", "Hi\r\n.\r\n", true, "Hi\r\n"},
      {"empty message", ".\r\n", true, ""},
      {"dot-stuffed line", "..x\r\n.\r\n", true, ".x\r\n"},
      {"dot-stuffed lone dot", "..\r\n.\r\n", true, ".\r\n"},
      {"leading dot dropped", ".x\r\n.\r\n", true, "x\r\n"},
      {"no end yet", "Hi\r\n", false, "Hi\r\n"},
      // SMTP smuggling: none of these end the message.
      {"bare LF dot bare LF", "a\n.\nb\r\n.\r\n", true, "a\n.\nb\r\n"},
      {"CRLF dot bare LF", "a\r\n.\nb\r\n.\r\n", true, "a\r\n\nb\r\n"},
      {"bare LF dot CRLF", "a\n.\r\nb\r\n.\r\n", true, "a\n.\r\nb\r\n"},
      {"bare CR dot bare CR", "a\r.\rb\r\n.\r\n", true, "a\r.\rb\r\n"},
      {"CRLF dot bare CR", "a\r\n.\rb\r\n.\r\n", true, "a\r\n\rb\r\n"},
      {"bare CR dot CRLF", "a\r.\r\nb\r\n.\r\n", true, "a\r.\r\nb\r\n"},
      {"CR CR LF", "a\r\r\n.\r\n", true, "a\r\r\n"},
      {"dot CR CR LF", "a\r\n.\r\r\n.\r\n", true, "a\r\n\r\r\n"},
      {"only a smuggled end", "a\n.\n", false, "a\n.\n"},
  };
  for (const auto& t : table) {
    for (std::size_t chunk : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(3)}) {
      CAPTURE(t.name);
      CAPTURE(chunk);
      auto o = feed_all(t.input, chunk);
      CHECK(o.done == t.done);
      CHECK(o.message == t.message);
    }
  }
}

TEST_CASE("bytes after the end marker are left for the next command") {
  data_reader r(1 << 20, 1000);
  std::string input = "one\r\n.\r\nMAIL FROM:<a@b.c>\r\n";
  auto n = r.feed(input);
  CHECK(r.done());
  CHECK(input.substr(n) == "MAIL FROM:<a@b.c>\r\n");
}

TEST_CASE("two end markers make two messages, each reader stopping at its own") {
  // At most one message per real end marker: the first reader stops after the
  // first marker, and a second reader fed the rest gets exactly the second message.
  const std::string input = "one\r\n.\r\ntwo\r\n.\r\n";
  data_reader first(1 << 20, 1000);
  auto n = first.feed(input);
  CHECK(first.done());
  CHECK(first.message() == "one\r\n");
  REQUIRE(n == 8);
  data_reader second(1 << 20, 1000);
  CHECK(second.feed(std::string_view(input).substr(n)) == input.size() - n);
  CHECK(second.done());
  CHECK(second.message() == "two\r\n");
  // Two bare markers: two empty messages, three bytes each.
  data_reader empty_one(1 << 20, 1000), empty_two(1 << 20, 1000);
  CHECK(empty_one.feed(".\r\n.\r\n") == 3);
  CHECK(empty_one.done());
  CHECK(empty_one.message().empty());
  CHECK(empty_two.feed(".\r\n") == 3);
  CHECK(empty_two.done());
  CHECK(empty_two.message().empty());
}

TEST_CASE("size limit: the stream is still read to its end, nothing is kept") {
  std::string body(100, 'x');
  auto o = feed_all(body + "\r\n.\r\n", 7, 50);
  CHECK(o.done);
  data_reader r(50, 1000);
  r.feed(body + "\r\n.\r\n");
  CHECK(r.done());
  CHECK(r.too_big());
  CHECK(r.message().empty());
  CHECK(r.size() == 102);
  data_reader exact(10, 1000);
  exact.feed("12345678\r\n.\r\n");
  CHECK_FALSE(exact.too_big());
}

TEST_CASE("text line limit counts bytes without CRLF and without a stuffed dot") {
  data_reader ok(1 << 20, 1000);
  ok.feed("." + std::string(998, 'a') + "\r\n.\r\n");  // stuffed dot does not count
  CHECK(ok.done());
  CHECK_FALSE(ok.line_too_long());
  data_reader too_long(1 << 20, 1000);
  too_long.feed(std::string(999, 'a') + "\r\n.\r\n");
  CHECK(too_long.done());
  CHECK(too_long.line_too_long());
}

TEST_CASE("dot_stuff_for_wire makes CRLF lines and stuffs leading dots") {
  CHECK(dot_stuff_for_wire("a\r\n.b\r\n") == "a\r\n..b\r\n");
  CHECK(dot_stuff_for_wire(".") == "..\r\n");
  CHECK(dot_stuff_for_wire("a\n.\nb") == "a\r\n..\r\nb\r\n");
  CHECK(dot_stuff_for_wire("a\r.\rb\r\n") == "a\r\n..\r\nb\r\n");
  CHECK(dot_stuff_for_wire("") == "");
  // Round trip through the reader: what goes on the wire comes back.
  std::string message = "x\r\n.\r\n..\r\n.y\r\n";
  auto o = feed_all(dot_stuff_for_wire(message) + ".\r\n");
  CHECK(o.done);
  CHECK(o.message == message);
}

namespace {

// The DATA reader's rules byte by byte, written plainly: the oracle for the
// reader's fast path, which takes runs without CR in one step.
struct reference_reader {
  reference_reader(std::uint64_t size_limit, std::size_t line_limit) : max_size(size_limit), max_line(line_limit) {}
  std::uint64_t max_size;
  std::size_t max_line;
  enum { bol, mid, cr, dot, dot_cr, end } state = bol;
  std::string message;
  std::uint64_t size = 0;
  std::size_t line_len = 0;
  bool too_big = false, line_too_long = false;

  void emit(char c) {
    ++size;
    if (c != '\r' && c != '\n' && ++line_len > max_line - 2) line_too_long = true;
    if (too_big) return;
    if (size > max_size) {
      too_big = true;
      message.clear();
      return;
    }
    message += c;
  }
  std::size_t feed(std::string_view bytes) {
    std::size_t i = 0;
    for (; i < bytes.size() && state != end; ++i) {
      const char c = bytes[i];
      if (state == bol) {
        line_len = 0;
        if (c == '.') {
          state = dot;
          continue;
        }
        emit(c);
        state = c == '\r' ? cr : mid;
      } else if (state == mid) {
        emit(c);
        if (c == '\r') state = cr;
      } else if (state == cr) {
        emit(c);
        state = c == '\n' ? bol : c == '\r' ? cr : mid;
      } else if (state == dot) {
        if (c == '\r') {
          state = dot_cr;
        } else {
          emit(c);
          state = mid;
        }
      } else if (state == dot_cr) {
        if (c == '\n') {
          state = end;
        } else {
          emit('\r');
          emit(c);
          state = c == '\r' ? cr : mid;
        }
      }
    }
    return i;
  }
};

}  // namespace

TEST_CASE("the reader agrees with the plain byte-by-byte rules on any stream and chunking") {
  // Pseudo-random streams over the bytes that matter, limits small enough to be crossed.
  const char alphabet[] = {'a', 'b', '\r', '\n', '.', 'x'};
  std::uint32_t seed = 12345;
  auto next = [&] { return seed = seed * 1664525u + 1013904223u; };
  for (int round = 0; round < 3000; ++round) {
    std::string input;
    const std::size_t length = next() % 200;
    for (std::size_t i = 0; i < length; ++i) input += alphabet[(next() >> 8) % sizeof alphabet];
    if (round % 3 == 0) input += "\r\n.\r\n";
    const std::uint64_t max_size = 20 + next() % 200;
    const std::size_t max_line = 8 + next() % 40;
    const std::size_t chunk = 1 + next() % 64;
    CAPTURE(input);
    CAPTURE(chunk);
    data_reader reader(max_size, max_line);
    reference_reader oracle(max_size, max_line);
    std::size_t used = 0;
    while (used < input.size() && !reader.done()) {
      auto piece = std::string_view(input).substr(used, chunk);
      auto n = reader.feed(piece);
      used += n;
      if (n < piece.size()) break;
    }
    const auto oracle_used = oracle.feed(input);
    CHECK(used == oracle_used);
    CHECK(reader.done() == (oracle.state == reference_reader::end));
    CHECK(reader.message() == oracle.message);
    CHECK(reader.too_big() == oracle.too_big);
    CHECK(reader.line_too_long() == oracle.line_too_long);
  }
}
