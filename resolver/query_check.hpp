// Structural checks on a DNS query before ldns sees it (RFC 1035 §4.1,
// RFC 6891 §6.1.1, RFC 9267). ldns 1.8.3 accepts forward compression
// pointers, several OPT records, an OPT with a non-root owner, several
// questions and trailing bytes, and it follows pointer loops up to 65535
// jumps; this walk rejects all of those in time linear in the packet size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace mailnet::resolver {

inline constexpr std::size_t dns_header_size = 12;

enum class query_verdict {
  ok,       // well formed: hand it to ldns
  drop,     // no usable header, or not a query: send nothing
  formerr,  // a query header we can echo, with a malformed body
  notimp,   // an opcode other than QUERY
};

struct query_check_result {
  query_verdict verdict = query_verdict::ok;
  std::string reason;  // empty when ok
};

query_check_result check_query(std::span<const std::uint8_t> packet);

}  // namespace mailnet::resolver
