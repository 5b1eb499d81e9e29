#include "common/dns/dns_message.hpp"

// ldns/common.h defines bool, true and false as macros unless stdbool.h came
// first, and those macros break every standard header included after it.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>
#include <stdexcept>

namespace mailnet::node {
namespace {

struct pkt_deleter {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using pkt_ptr = std::unique_ptr<ldns_pkt, pkt_deleter>;

struct rdf_deleter {
  void operator()(ldns_rdf* r) const { ldns_rdf_deep_free(r); }
};
using rdf_ptr = std::unique_ptr<ldns_rdf, rdf_deleter>;

struct malloc_deleter {
  void operator()(void* p) const { std::free(p); }
};

std::string rdf_text(const ldns_rdf* rdf) {
  if (!rdf) return {};
  std::unique_ptr<char, malloc_deleter> text(ldns_rdf2str(rdf));
  return text ? std::string(text.get()) : std::string();
}

std::string dname_text(const ldns_rdf* rdf) { return canonical_name(rdf_text(rdf)); }

std::uint16_t rdf_u16(const ldns_rdf* rdf) {
  return rdf && ldns_rdf_size(rdf) == 2 ? ldns_rdf2native_int16(rdf) : 0;
}

dns_reply failure(std::string detail) {
  dns_reply r;
  r.kind = reply_kind::failure;
  r.detail = std::move(detail);
  return r;
}

// RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM).
std::uint32_t negative_ttl(const ldns_pkt* p) {
  const ldns_rr_list* authority = ldns_pkt_authority(p);
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(authority); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(authority, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA || ldns_rr_rd_count(rr) < 7) continue;
    const ldns_rdf* minimum = ldns_rr_rdf(rr, 6);
    const std::uint32_t min_field = ldns_rdf_size(minimum) == 4 ? ldns_rdf2native_int32(minimum) : 0;
    return std::min(ldns_rr_ttl(rr), min_field);
  }
  return 0;  // no SOA: do not cache
}

}  // namespace

std::string canonical_name(std::string_view name) {
  std::string out(name);
  if (out.size() > 1 && out.back() == '.') out.pop_back();
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return out;
}

bool is_queryable_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}

std::vector<std::uint8_t> make_query(std::uint16_t id, std::string_view name, std::uint16_t type) {
  if (!is_queryable_name(name)) throw std::invalid_argument("not a queryable DNS name: " + std::string(name));
  std::string absolute(name);
  if (absolute.back() != '.') absolute += '.';
  ldns_rdf* owner = ldns_dname_new_frm_str(absolute.c_str());
  if (!owner) throw std::invalid_argument("not a queryable DNS name: " + std::string(name));
  // ldns_pkt_query_new takes the owner.
  pkt_ptr p(ldns_pkt_query_new(owner, static_cast<ldns_rr_type>(type), LDNS_RR_CLASS_IN, 0));
  if (!p) throw std::bad_alloc();
  ldns_pkt_set_id(p.get(), id);
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  if (ldns_pkt2wire(&data, p.get(), &size) != LDNS_STATUS_OK) {
    std::free(data);
    throw std::runtime_error("ldns could not encode a query for " + std::string(name));
  }
  std::unique_ptr<std::uint8_t, malloc_deleter> owner_of_data(data);
  return {data, data + size};
}

std::optional<dns_reply> parse_response(std::span<const std::uint8_t> bytes, std::uint16_t id,
                                        std::string_view name, std::uint16_t type) {
  // The header by hand first: it decides whether the datagram is ours at all.
  if (bytes.size() < 12) return std::nullopt;
  if (static_cast<std::uint16_t>((bytes[0] << 8) | bytes[1]) != id) return std::nullopt;
  if ((bytes[2] & 0x80) == 0) return std::nullopt;  // a query, not a reply

  ldns_pkt* raw = nullptr;
  const ldns_status status = ldns_wire2pkt(&raw, bytes.data(), bytes.size());
  pkt_ptr p(raw);
  if (status != LDNS_STATUS_OK || !p) {
    return failure(std::string("malformed reply: ") + ldns_get_errorstr_by_id(status));
  }

  const std::string wanted = canonical_name(name);
  const ldns_rr_list* question = ldns_pkt_question(p.get());
  if (ldns_rr_list_rr_count(question) == 1) {
    const ldns_rr* q = ldns_rr_list_rr(question, 0);
    // RFC 5452 §9.1: a reply must echo our question; otherwise it is not ours.
    if (dname_text(ldns_rr_owner(q)) != wanted || ldns_rr_get_type(q) != type ||
        ldns_rr_get_class(q) != LDNS_RR_CLASS_IN) {
      return std::nullopt;
    }
  } else if (ldns_pkt_get_rcode(p.get()) == LDNS_RCODE_NOERROR ||
             ldns_pkt_get_rcode(p.get()) == LDNS_RCODE_NXDOMAIN) {
    return std::nullopt;  // an answer without our question is not an answer to us
  }

  switch (ldns_pkt_get_rcode(p.get())) {
    case LDNS_RCODE_NOERROR:
      break;
    case LDNS_RCODE_NXDOMAIN: {
      dns_reply r;
      r.kind = reply_kind::nxdomain;
      r.ttl = negative_ttl(p.get());
      r.detail = "NXDOMAIN for " + wanted;
      return r;
    }
    case LDNS_RCODE_SERVFAIL: return failure("SERVFAIL for " + wanted);
    case LDNS_RCODE_REFUSED: return failure("REFUSED for " + wanted);
    case LDNS_RCODE_FORMERR: return failure("FORMERR for " + wanted);
    case LDNS_RCODE_NOTIMPL: return failure("NOTIMP for " + wanted);
    default: return failure("rcode " + std::to_string(ldns_pkt_get_rcode(p.get())) + " for " + wanted);
  }
  if (ldns_pkt_tc(p.get())) return failure("truncated reply for " + wanted + " (no TCP fallback)");

  dns_reply r;
  std::uint32_t ttl = std::numeric_limits<std::uint32_t>::max();
  const ldns_rr_list* answer = ldns_pkt_answer(p.get());
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(answer); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answer, i);
    // No CNAME chasing: the mailnet resolver never answers with aliases.
    if (ldns_rr_get_type(rr) != type || dname_text(ldns_rr_owner(rr)) != wanted) continue;
    if (type == dns_type::srv && ldns_rr_rd_count(rr) == 4) {
      r.srv.push_back({rdf_u16(ldns_rr_rdf(rr, 0)), rdf_u16(ldns_rr_rdf(rr, 1)), rdf_u16(ldns_rr_rdf(rr, 2)),
                       dname_text(ldns_rr_rdf(rr, 3))});
    } else if (type == dns_type::mx && ldns_rr_rd_count(rr) == 2) {
      r.mx.push_back({rdf_u16(ldns_rr_rdf(rr, 0)), dname_text(ldns_rr_rdf(rr, 1))});
    } else if (type == dns_type::txt) {
      std::string text;
      for (std::size_t k = 0; k < ldns_rr_rd_count(rr); ++k) {
        const ldns_rdf* part = ldns_rr_rdf(rr, k);
        const std::uint8_t* data = ldns_rdf_data(part);
        const std::size_t size = ldns_rdf_size(part);
        if (size == 0 || data[0] + 1U > size) continue;  // a character-string: its length, then its bytes
        text.append(reinterpret_cast<const char*>(data + 1), data[0]);
      }
      r.texts.push_back(std::move(text));
    } else if (type == dns_type::ptr && ldns_rr_rd_count(rr) == 1) {
      r.names.push_back(dname_text(ldns_rr_rdf(rr, 0)));
    } else if ((type == dns_type::a || type == dns_type::aaaa) && ldns_rr_rd_count(rr) == 1) {
      r.addresses.push_back({wanted, rdf_text(ldns_rr_rdf(rr, 0))});
    } else {
      continue;
    }
    ttl = std::min(ttl, ldns_rr_ttl(rr));
  }
  if (r.srv.empty() && r.mx.empty() && r.addresses.empty() && r.names.empty() && r.texts.empty()) {
    r.kind = reply_kind::nodata;
    r.ttl = negative_ttl(p.get());
    std::unique_ptr<char, malloc_deleter> type_name(ldns_rr_type2str(static_cast<ldns_rr_type>(type)));
    r.detail = "no " + std::string(type_name ? type_name.get() : "?") + " records for " + wanted;
    return r;
  }
  r.kind = reply_kind::answer;
  r.ttl = ttl;

  // Glue for SRV/MX targets; trusted only for the targets we were given.
  const ldns_rr_list* additional = ldns_pkt_additional(p.get());
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(additional); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(additional, i);
    const auto rr_type = ldns_rr_get_type(rr);
    if ((rr_type != LDNS_RR_TYPE_A && rr_type != LDNS_RR_TYPE_AAAA) || ldns_rr_rd_count(rr) != 1) continue;
    const std::string owner = dname_text(ldns_rr_owner(rr));
    const bool is_target =
        std::any_of(r.srv.begin(), r.srv.end(), [&](const srv_data& s) { return s.target == owner; }) ||
        std::any_of(r.mx.begin(), r.mx.end(), [&](const mx_data& m) { return m.exchange == owner; });
    if (!is_target) continue;
    r.addresses.push_back({owner, rdf_text(ldns_rr_rdf(rr, 0))});
    r.ttl = std::min(r.ttl, ldns_rr_ttl(rr));
  }
  return r;
}

}  // namespace mailnet::node
