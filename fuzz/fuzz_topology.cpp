// Fuzzes the topology parser: any text is either a valid topology (which
// round-trips through to_json_text) or a topology_error naming the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/topology.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto t = mailnet::parse_topology(text, "fuzz.json");
    auto again = mailnet::parse_topology(mailnet::to_json_text(t), "again.json");
    if (again.domains.size() != t.domains.size() || again.name != t.name) std::abort();
  } catch (const mailnet::topology_error& e) {
    if (std::string_view(e.what()).substr(0, 10) != "fuzz.json:") std::abort();
  }
  return 0;
}
