// DNS messages as the node's resolver client needs them: a query's bytes,
// and a reply's bytes turned into plain values. Pure code (ldns inside),
// no sockets, so that tests can feed it any bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::node {

namespace dns_type {
inline constexpr std::uint16_t a = 1;
inline constexpr std::uint16_t ptr = 12;
inline constexpr std::uint16_t mx = 15;
inline constexpr std::uint16_t txt = 16;
inline constexpr std::uint16_t aaaa = 28;
inline constexpr std::uint16_t srv = 33;
}  // namespace dns_type

// Letters, digits, '-' and '_' in non-empty labels of at most 63 octets,
// 253 characters in all; one final dot allowed. Anything else is not a
// name we will ask about.
bool is_queryable_name(std::string_view name);

// A query with RD clear (the resolver is authoritative) and no EDNS.
// Throws std::invalid_argument when !is_queryable_name(name).
std::vector<std::uint8_t> make_query(std::uint16_t id, std::string_view name, std::uint16_t type);

enum class reply_kind {
  answer,    // records of the asked type for the asked name
  nodata,    // the name exists, without that type
  nxdomain,  // the name does not exist
  failure,   // SERVFAIL, REFUSED, truncated, malformed: try again later
};

struct srv_data {
  std::uint16_t priority = 0;
  std::uint16_t weight = 0;
  std::uint16_t port = 0;
  std::string target;  // lower case, no final dot; "." when no service (RFC 2782)
};

struct mx_data {
  std::uint16_t preference = 0;
  std::string exchange;  // lower case, no final dot; "." for a null MX (RFC 7505)
};

struct address_data {
  std::string owner;    // lower case, no final dot
  std::string address;  // "127.0.0.1", "::1"
};

struct dns_reply {
  reply_kind kind = reply_kind::failure;
  std::vector<srv_data> srv;
  std::vector<mx_data> mx;
  std::vector<address_data> addresses;  // A/AAAA from the answer and additional sections
  std::vector<std::string> names;       // PTR targets: lower case, no final dot
  std::vector<std::string> texts;       // TXT: each record's strings joined (RFC 7208 §3.3), raw bytes
  std::uint32_t ttl = 0;                // seconds it may be cached; 0: do not cache
  std::string detail;                   // readable reason for nodata/nxdomain/failure
};

// nullopt when the bytes are not a reply to this query (too short, another
// id, not a response, another question): the caller keeps waiting. A reply
// with our id that is otherwise unusable comes back as reply_kind::failure.
std::optional<dns_reply> parse_response(std::span<const std::uint8_t> bytes, std::uint16_t id,
                                        std::string_view name, std::uint16_t type);

// Lower case, without the final dot: the form used in keys and results.
std::string canonical_name(std::string_view name);

}  // namespace mailnet::node
