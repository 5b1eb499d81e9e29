// Fuzzes the DATA byte stream: the reader must stop exactly after the first
// real <CRLF>.<CRLF> (the CRLF of the DATA command counts as the first one),
// whatever the chunking, and never anywhere else: at most one message per
// real end marker, so no SMTP smuggling.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/mail/data_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t chunk = 1 + data[0] % 17;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  // The reference: where does "\r\n.\r\n" first occur in CRLF + input?
  const std::string framed = "\r\n" + std::string(input);
  const auto marker = framed.find("\r\n.\r\n");
  const bool ends = marker != std::string::npos;
  const std::size_t expected_consumed = ends ? marker + 5 - 2 : input.size();

  mailnet::node::data_reader whole(1 << 20, 1000), pieces(1 << 20, 1000);
  const std::size_t consumed = whole.feed(input);
  std::size_t pieces_consumed = 0;
  for (std::size_t pos = 0; pos < input.size() && !pieces.done(); pos += chunk)
    pieces_consumed += pieces.feed(input.substr(pos, chunk));

  if (whole.done() != ends || consumed != expected_consumed) std::abort();
  if (pieces.done() != ends || pieces_consumed != expected_consumed) std::abort();
  if (whole.message() != pieces.message()) std::abort();
  // What was kept, stuffed again for the wire, reads back to itself.
  if (ends && !whole.too_big()) {
    mailnet::node::data_reader again(1 << 22, 1 << 20);
    auto wire = mailnet::node::dot_stuff_for_wire(whole.message()) + ".\r\n";
    again.feed(wire);
    if (!again.done()) std::abort();
  }
  return 0;
}
