// The records of the network's synthetic zone, from its topology: what the
// resolver serves (resolver/zone.cpp builds its zone from this list) and
// what the launcher's GET /api/v1/dns shows. Plain data, no DNS library.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet {

struct topology;

struct zone_record {
  std::string name;     // lower case, trailing dot: "_smtp._tcp.jaku.com."
  std::uint16_t type;   // RFC 1035 type number (SRV 33, MX 15, A 1, AAAA 28)
  std::string rdata;    // presentation format, e.g. "0 0 1025 mx.jaku.com."
  std::string summary;  // for the resolver's log, e.g. "mx.jaku.com:1025"
  std::string target;   // SRV/MX target (lower case, trailing dot), else empty
  std::string domain;   // the topology's domain it belongs to
};

// Per domain, in the topology's order: its SRV _smtp._tcp (none for a domain
// on port 25 of its own address: MX and A lead there, as on the internet),
// its MX, its mail host's address, the PTR of that address (once per address
// and name), its SPF, DKIM (once `up` wrote the public key in) and DMARC
// TXT records, then the records its "dns": {"records": [...]} adds. (The zone's
// SOA is the resolver's own.)
std::vector<zone_record> zone_records(const topology& t);

// A TXT value as its character-strings: 255 octets each (RFC 1035 §3.3.14).
std::vector<std::string> txt_strings(std::string_view text);

// "SRV", "MX", "A", "AAAA", "TXT", "PTR", "CNAME", "SOA", else "TYPE<n>".
std::string zone_type_name(std::uint16_t type);

}  // namespace mailnet
