// Fuzzes the resolver with raw packets: no crash, bounded work, and every
// answer is a response to the query's id.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/topology.hpp"
#include "resolver/zone.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const mailnet::resolver::zone zone(mailnet::parse_topology(
      R"({"name":"f","domains":[{"name":"jaku.com","listen":"127.0.0.1:1025"},{"name":"deathstar.com","listen":"[::1]:1030"}]})",
      "fuzz.json"));
  auto reply = mailnet::resolver::answer_query(zone, std::span<const std::uint8_t>(data, size));
  if (!reply) return 0;
  if (reply->size() < 12 || size < 2) std::abort();
  if ((*reply)[0] != data[0] || (*reply)[1] != data[1]) std::abort();  // same id
  if (!((*reply)[2] & 0x80)) std::abort();                              // QR set
  return 0;
}
