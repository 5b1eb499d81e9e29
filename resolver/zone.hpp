// The resolver's data and its answers: pure code, bytes in and bytes out.
//
// The resolver is authoritative for one synthetic zone rooted at "." (it
// stands in for the whole DNS of the simulated network), so every name it
// does not know is NXDOMAIN with the root SOA in the authority section, and
// ancestors of known names (com., _tcp.jaku.com.) are empty non-terminals
// that answer NODATA (RFC 8020).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet {
struct topology;
struct fault_rule;
struct dns_record;
}

namespace mailnet::resolver {

class dns_faults;

// For a zone built without a topology's $.resolver.ttl (the resolver itself
// always passes the topology's, common/topology.hpp).
inline constexpr std::uint32_t default_ttl = 60;

class zone {
 public:
  struct record {
    std::uint16_t type = 0;
    std::string rdata;    // presentation format, e.g. "0 0 1025 mx.jaku.com."
    std::string summary;  // for the log, e.g. "mx.jaku.com:1025"
    std::string target;   // SRV/MX target (lower case, trailing dot), else empty
  };

  explicit zone(const topology& t, std::uint32_t ttl = default_ttl);

  // Names are lower case with a trailing dot. nullptr: the name does not
  // exist; an empty vector: an empty non-terminal.
  const std::vector<record>* find(std::string_view name) const;

  std::uint32_t ttl() const { return ttl_; }
  // ". 60 IN SOA ns.mailnet. hostmaster.mailnet. 1 3600 600 86400 60"
  std::string soa_text() const;

 private:
  void add(std::string name, record r);

  std::map<std::string, std::vector<record>, std::less<>> names_;
  std::uint32_t ttl_;
};

// What happened to one datagram, for the reply and for the log line.
struct query_outcome {
  std::optional<std::vector<std::uint8_t>> reply;  // nullopt: drop silently
  std::string name = "-";    // the question name as asked, without the final dot
  std::string type = "-";    // "SRV", "TYPE65280"
  std::string rcode = "-";   // "NOERROR", "NXDOMAIN", "FORMERR", ...
  std::string answer = "-";  // "mx.jaku.com:1025", "127.0.0.1", ...
  std::string reason;        // why it was dropped or refused, else empty
  bool fault_watched = false;        // a dns fault rule covers the name: decided each time, never cached
  const fault_rule* fault = nullptr;  // the rule that made this answer (its "answer"), else null
};

// over_tcp: the reply may be as large as a TCP message (65535 bytes); over
// UDP it is cut to 512 bytes or the query's EDNS size, with TC set.
// faults: the dns fault rules, consulted for every well-formed question;
// a rule that fires answers SERVFAIL, NXDOMAIN (with the SOA), REFUSED, an
// empty reply with TC set, or nothing (timeout: reply is nullopt).
query_outcome handle_query(const zone& z, std::span<const std::uint8_t> query, bool over_tcp = false,
                           dns_faults* faults = nullptr);

// The reply bytes only.
std::optional<std::vector<std::uint8_t>> answer_query(const zone& z,
                                                      std::span<const std::uint8_t> query);

}  // namespace mailnet::resolver
