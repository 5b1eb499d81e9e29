// Fuzzes the reading of comments in MIME fields (common/mail/mime_comments.hpp),
// which runs in the node on every delivered message: no crash, no hang, and
// a rewritten message is never longer (a comment becomes one space).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/mail/mime_comments.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)mailnet::node::may_carry_attachments(text);
  if (mailnet::node::strip_comments(text).size() > size) std::abort();
  if (auto out = mailnet::node::without_mime_comments(text); out && (out->size() > size || *out == text)) std::abort();
  return 0;
}
