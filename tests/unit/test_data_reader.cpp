#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "node/data_reader.hpp"

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
  // At most one message per real end marker: two markers, two messages.
  data_reader second(1 << 20, 1000);
  std::string rest = input.substr(n);
  CHECK(second.feed(".\r\n.\r\n") == 3);
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

TEST_CASE("a whole buffer reads exactly as the same bytes one at a time") {
  // The reader takes runs without CR in one step; byte by byte is the
  // reference. Pseudo-random streams over the bytes that matter, with limits
  // small enough to be crossed.
  const char alphabet[] = {'a', 'b', '\r', '\n', '.', 'x'};
  std::uint32_t seed = 12345;
  auto next = [&] { return seed = seed * 1664525u + 1013904223u; };
  for (int round = 0; round < 2000; ++round) {
    std::string input;
    const std::size_t length = next() % 200;
    for (std::size_t i = 0; i < length; ++i) input += alphabet[(next() >> 8) % sizeof alphabet];
    if (round % 3 == 0) input += "\r\n.\r\n";
    const std::uint64_t max_size = 20 + next() % 200;
    const std::size_t max_line = 8 + next() % 40;
    CAPTURE(input);
    data_reader whole(max_size, max_line), bytewise(max_size, max_line);
    const auto used = whole.feed(input);
    std::size_t used_bytewise = 0;
    while (used_bytewise < input.size() && !bytewise.done()) used_bytewise += bytewise.feed(input.substr(used_bytewise, 1));
    CHECK(used == used_bytewise);
    CHECK(whole.done() == bytewise.done());
    CHECK(whole.message() == bytewise.message());
    CHECK(whole.too_big() == bytewise.too_big());
    CHECK(whole.line_too_long() == bytewise.line_too_long());
  }
}
