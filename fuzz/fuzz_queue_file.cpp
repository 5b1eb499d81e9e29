// Fuzzes the queue-file reader: any bytes either fail to decode or decode to
// a message that encodes and decodes back to the same thing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/mail/spool.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mailnet::node;
  auto m = decode_queue_file(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m) return 0;
  auto again = decode_queue_file(encode_queue_file(*m));
  // The whole value, every field and every recipient, not a sample of them.
  if (!again || *again != *m) std::abort();
  return 0;
}
