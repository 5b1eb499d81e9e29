#include "resolver/query_check.hpp"

#include <optional>

namespace mailnet::resolver {
namespace {

constexpr std::size_t max_name_length = 255;  // RFC 1035 §3.1, wire octets
constexpr std::size_t max_pointer_jumps = 128;  // a 255-octet name has < 128 labels
constexpr std::uint16_t type_opt = 41;

std::uint16_t read_u16(std::span<const std::uint8_t> p, std::size_t at) {
  return static_cast<std::uint16_t>((p[at] << 8) | p[at + 1]);
}

// Walks one (possibly compressed) name at `pos`; on success returns the
// offset just after it in the record. RFC 9267 §2-3: every pointer must
// land strictly before the segment it was read from, which makes loops
// impossible; label types 01 and 10 are not defined (RFC 6891 §5).
std::optional<std::size_t> skip_name(std::span<const std::uint8_t> p, std::size_t pos,
                                     bool& is_root, std::string& reason) {
  std::size_t segment_start = pos;
  std::optional<std::size_t> end_in_record;
  std::size_t length = 1;  // the final root label
  std::size_t jumps = 0;
  bool first_label = true;
  for (;;) {
    if (pos >= p.size()) {
      reason = "name runs past the end of the packet";
      return std::nullopt;
    }
    const std::uint8_t octet = p[pos];
    if (octet == 0) {
      is_root = first_label;
      return end_in_record ? *end_in_record : pos + 1;
    }
    const std::uint8_t kind = octet & 0xC0;
    if (kind == 0xC0) {
      if (pos + 1 >= p.size()) {
        reason = "compression pointer cut short";
        return std::nullopt;
      }
      const std::size_t target = read_u16(p, pos) & 0x3FFF;
      if (target < dns_header_size || target >= segment_start) {
        reason = target >= p.size() ? "compression pointer out of bounds"
                                    : "compression pointer does not point backwards";
        return std::nullopt;
      }
      if (++jumps > max_pointer_jumps) {
        reason = "too many compression pointers";
        return std::nullopt;
      }
      if (!end_in_record) end_in_record = pos + 2;
      pos = segment_start = target;
      continue;
    }
    if (kind != 0) {
      reason = "reserved label type";
      return std::nullopt;
    }
    length += octet + 1u;
    if (length > max_name_length) {
      reason = "name longer than 255 octets";
      return std::nullopt;
    }
    if (pos + 1 + octet > p.size()) {
      reason = "label runs past the end of the packet";
      return std::nullopt;
    }
    pos += 1 + octet;
    first_label = false;
  }
}

}  // namespace

query_check_result check_query(std::span<const std::uint8_t> p) {
  if (p.size() < dns_header_size) return {query_verdict::drop, "shorter than a DNS header"};
  if ((p[2] & 0x80) != 0) return {query_verdict::drop, "a response, not a query"};
  const unsigned opcode = (p[2] >> 3) & 0x0F;
  if (opcode != 0) return {query_verdict::notimp, "opcode " + std::to_string(opcode)};

  const std::uint16_t qdcount = read_u16(p, 4);
  const std::uint16_t ancount = read_u16(p, 6);
  const std::uint16_t nscount = read_u16(p, 8);
  const std::uint16_t arcount = read_u16(p, 10);
  if (qdcount != 1) {
    return {query_verdict::formerr, std::to_string(qdcount) + " questions instead of 1"};
  }

  std::string reason;
  std::size_t pos = dns_header_size;
  bool is_root = false;
  auto name_end = skip_name(p, pos, is_root, reason);
  if (!name_end) return {query_verdict::formerr, "question: " + reason};
  if (*name_end + 4 > p.size()) return {query_verdict::formerr, "question: QTYPE/QCLASS cut short"};
  pos = *name_end + 4;

  // Every record is walked even though a query rarely carries any, so that
  // counts larger than the packet are caught here and not deep inside ldns.
  const std::size_t records = std::size_t{ancount} + nscount + arcount;
  int opt_records = 0;
  for (std::size_t i = 0; i < records; ++i) {
    const bool additional = i >= std::size_t{ancount} + nscount;
    name_end = skip_name(p, pos, is_root, reason);
    if (!name_end) return {query_verdict::formerr, "record " + std::to_string(i + 1) + ": " + reason};
    pos = *name_end;
    if (pos + 10 > p.size()) {
      return {query_verdict::formerr, "record " + std::to_string(i + 1) + " cut short"};
    }
    const std::uint16_t type = read_u16(p, pos);
    const std::size_t rdlength = read_u16(p, pos + 8);
    pos += 10;
    if (pos + rdlength > p.size()) {
      return {query_verdict::formerr, "record " + std::to_string(i + 1) + ": RDATA past the end"};
    }
    pos += rdlength;
    if (type == type_opt) {
      // RFC 6891 §6.1.1: one OPT at most, in the additional section, owned by the root.
      if (!additional || !is_root || ++opt_records > 1) {
        return {query_verdict::formerr, "misplaced or repeated OPT record"};
      }
    }
  }
  if (pos != p.size()) {
    return {query_verdict::formerr, std::to_string(p.size() - pos) + " bytes after the last record"};
  }
  return {};
}

}  // namespace mailnet::resolver
