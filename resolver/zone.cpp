#include "resolver/zone.hpp"

// ldns/common.h defines bool, true and false as macros unless stdbool.h came
// first, and those macros break every standard header included after it.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <arpa/inet.h>
#include <cstdio>
#include <set>

#include "common/dns/zone_records.hpp"
#include "common/faults.hpp"
#include "common/topology.hpp"
#include "resolver/dns_faults.hpp"
#include "resolver/query_check.hpp"

namespace mailnet::resolver {
namespace {

// RFC 1035 §4.2.1 without EDNS; RFC 6891 §6.2.5 with it (the DNS Flag Day
// 2020 figure, which never fragments on real paths).
constexpr std::size_t classic_udp_size = 512;
constexpr std::uint16_t edns_udp_size = 1232;

struct pkt_deleter {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using pkt_ptr = std::unique_ptr<ldns_pkt, pkt_deleter>;

struct malloc_deleter {
  void operator()(void* p) const { std::free(p); }
};

std::string take_string(char* text) {
  std::unique_ptr<char, malloc_deleter> owner(text);
  return text ? std::string(text) : std::string();
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return out;
}

std::string without_final_dot(std::string name) {
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  return name;
}

std::string rcode_name(ldns_pkt_rcode rcode, bool badvers) {
  if (badvers) return "BADVERS";
  switch (rcode) {
    case LDNS_RCODE_NOERROR: return "NOERROR";
    case LDNS_RCODE_FORMERR: return "FORMERR";
    case LDNS_RCODE_SERVFAIL: return "SERVFAIL";
    case LDNS_RCODE_NXDOMAIN: return "NXDOMAIN";
    case LDNS_RCODE_NOTIMPL: return "NOTIMP";
    case LDNS_RCODE_REFUSED: return "REFUSED";
    default: return "RCODE" + std::to_string(static_cast<int>(rcode));
  }
}

std::optional<std::vector<std::uint8_t>> to_wire(const ldns_pkt* p) {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  if (ldns_pkt2wire(&data, p, &size) != LDNS_STATUS_OK) {
    std::free(data);
    return std::nullopt;
  }
  std::unique_ptr<std::uint8_t, malloc_deleter> owner(data);
  return std::vector<std::uint8_t>(data, data + size);
}

// A reply that only echoes the header: for queries whose body we cannot or
// will not read (FORMERR, NOTIMP). The id, opcode, RD and CD come from the raw bytes.
std::optional<std::vector<std::uint8_t>> header_only_reply(std::span<const std::uint8_t> q,
                                                           ldns_pkt_rcode rcode) {
  pkt_ptr p(ldns_pkt_new());
  if (!p) return std::nullopt;
  ldns_pkt_set_id(p.get(), static_cast<std::uint16_t>((q[0] << 8) | q[1]));
  ldns_pkt_set_qr(p.get(), true);
  ldns_pkt_set_opcode(p.get(), static_cast<ldns_pkt_opcode>((q[2] >> 3) & 0x0F));
  ldns_pkt_set_rd(p.get(), (q[2] & 0x01) != 0);
  ldns_pkt_set_cd(p.get(), (q[3] & 0x10) != 0);
  ldns_pkt_set_rcode(p.get(), static_cast<std::uint8_t>(rcode));
  return to_wire(p.get());
}

// Builds "owner ttl IN TYPE rdata" with ldns, then gives it the owner as
// asked so that the answer keeps the question's letter case (RFC 4343).
ldns_rr* make_rr(std::string_view owner_text, const ldns_rdf* owner_as_asked, std::uint32_t ttl,
                 const zone::record& r) {
  const std::string type = take_string(ldns_rr_type2str(static_cast<ldns_rr_type>(r.type)));
  const std::string line =
      std::string(owner_text) + " " + std::to_string(ttl) + " IN " + type + " " + r.rdata;
  ldns_rr* rr = nullptr;
  if (ldns_rr_new_frm_str(&rr, line.c_str(), 0, nullptr, nullptr) != LDNS_STATUS_OK) return nullptr;
  if (owner_as_asked) {
    ldns_rdf_deep_free(ldns_rr_owner(rr));
    ldns_rr_set_owner(rr, ldns_rdf_clone(owner_as_asked));
  }
  return rr;
}

struct reply_plan {
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  bool badvers = false;
  std::vector<const zone::record*> answers;  // owned by the name asked
  // Answers reached through a CNAME, after it (RFC 1034 §4.3.2): owner, record.
  std::vector<std::pair<std::string, const zone::record*>> chased;
  std::vector<std::pair<std::string, const zone::record*>> additional;  // owner, record
  bool soa_in_authority = false;
};

reply_plan plan_reply(const zone& z, const std::string& name, std::uint16_t qtype) {
  reply_plan plan;
  const auto* records = z.find(name);
  if (!records) {
    plan.rcode = LDNS_RCODE_NXDOMAIN;
    plan.soa_in_authority = true;
    return plan;
  }
  for (const auto& r : *records) {
    if (r.type == qtype || qtype == LDNS_RR_TYPE_ANY) plan.answers.push_back(&r);
  }
  if (plan.answers.empty() && qtype != LDNS_RR_TYPE_CNAME) {
    // An alias: the CNAME, then what its target has of the asked type,
    // following at most a few aliases (a loop ends there too).
    const zone::record* alias = nullptr;
    for (const auto& r : *records)
      if (r.type == LDNS_RR_TYPE_CNAME) alias = &r;
    if (alias) {
      plan.answers.push_back(alias);
      for (int hops = 0; alias && hops < 8; ++hops) {
        const std::string target = alias->target;
        alias = nullptr;
        const auto* next = z.find(target);
        if (!next) break;
        for (const auto& r : *next) {
          if (r.type == qtype) plan.chased.emplace_back(target, &r);
          else if (r.type == LDNS_RR_TYPE_CNAME) alias = &r;
        }
        if (alias) plan.chased.emplace_back(target, alias);
      }
      return plan;
    }
  }
  if (plan.answers.empty()) {
    plan.soa_in_authority = true;  // NODATA, RFC 2308 §2.2
    return plan;
  }
  // RFC 2782 and RFC 5321 §5.1: spare the client a second query for the target's address.
  std::set<std::string> seen;
  for (const auto* r : plan.answers) {
    if (r->target.empty() || r->type == LDNS_RR_TYPE_CNAME || !seen.insert(r->target).second) continue;
    if (const auto* target = z.find(r->target)) {
      for (const auto& t : *target) {
        if (t.type == LDNS_RR_TYPE_A || t.type == LDNS_RR_TYPE_AAAA) plan.additional.emplace_back(r->target, &t);
      }
    }
  }
  return plan;
}

// Encodes the planned reply; `truncated` leaves every RR section empty and sets TC.
std::optional<std::vector<std::uint8_t>> encode_reply(const zone& z, const ldns_pkt* query,
                                                      const reply_plan& plan, bool truncated) {
  pkt_ptr p(ldns_pkt_new());
  if (!p) return std::nullopt;
  ldns_pkt_set_id(p.get(), ldns_pkt_id(query));
  ldns_pkt_set_qr(p.get(), true);
  ldns_pkt_set_aa(p.get(), plan.rcode == LDNS_RCODE_NOERROR || plan.rcode == LDNS_RCODE_NXDOMAIN);
  ldns_pkt_set_opcode(p.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(p.get(), ldns_pkt_rd(query));
  ldns_pkt_set_cd(p.get(), ldns_pkt_cd(query));
  ldns_pkt_set_tc(p.get(), truncated);
  ldns_pkt_set_rcode(p.get(), static_cast<std::uint8_t>(plan.rcode));

  const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(query), 0);
  ldns_pkt_push_rr(p.get(), LDNS_SECTION_QUESTION, ldns_rr_clone(question));

  if (ldns_pkt_edns(query)) {
    // RFC 6891 §7: answer EDNS with EDNS; DO and options are not echoed.
    ldns_pkt_set_edns_udp_size(p.get(), edns_udp_size);
    ldns_pkt_set_edns_version(p.get(), 0);
    if (plan.badvers) ldns_pkt_set_edns_extended_rcode(p.get(), 1);  // 16 = BADVERS, upper bits
  }
  if (!truncated) {
    const ldns_rdf* owner = ldns_rr_owner(question);
    const std::string owner_text = take_string(ldns_rdf2str(owner));
    for (const auto* r : plan.answers) {
      if (ldns_rr* rr = make_rr(owner_text, owner, z.ttl(), *r)) {
        ldns_pkt_push_rr(p.get(), LDNS_SECTION_ANSWER, rr);
      }
    }
    for (const auto& [owner_name, r] : plan.chased) {
      if (ldns_rr* rr = make_rr(owner_name, nullptr, z.ttl(), *r)) ldns_pkt_push_rr(p.get(), LDNS_SECTION_ANSWER, rr);
    }
    if (plan.soa_in_authority) {
      ldns_rr* soa = nullptr;
      if (ldns_rr_new_frm_str(&soa, z.soa_text().c_str(), 0, nullptr, nullptr) == LDNS_STATUS_OK) {
        ldns_pkt_push_rr(p.get(), LDNS_SECTION_AUTHORITY, soa);
      }
    }
    for (const auto& [target, r] : plan.additional) {
      if (ldns_rr* rr = make_rr(target, nullptr, z.ttl(), *r)) {
        ldns_pkt_push_rr(p.get(), LDNS_SECTION_ADDITIONAL, rr);
      }
    }
  }
  return to_wire(p.get());
}

std::string summarize(const reply_plan& plan) {
  if (plan.answers.empty()) return "-";
  std::string out;
  for (const auto* r : plan.answers) {
    if (!out.empty()) out += ',';
    out += r->summary;
  }
  for (const auto& chased : plan.chased) out += "," + chased.second->summary;
  return out;
}

}  // namespace

zone::zone(const topology& t, std::uint32_t ttl) : ttl_(ttl) {
  add(".", {LDNS_RR_TYPE_SOA, "ns.mailnet. hostmaster.mailnet. 1 3600 600 86400 " + std::to_string(ttl_),
            "SOA", ""});
  for (auto& r : zone_records(t)) add(std::move(r.name), {r.type, std::move(r.rdata), std::move(r.summary), std::move(r.target)});
}


void zone::add(std::string name, record r) {
  // Every ancestor exists too, as an empty non-terminal unless it has data.
  for (std::size_t dot = name.find('.'); dot + 1 < name.size(); dot = name.find('.', dot + 1)) {
    names_.try_emplace(name.substr(dot + 1));
  }
  names_.try_emplace(".");
  names_[std::move(name)].push_back(std::move(r));
}

const std::vector<zone::record>* zone::find(std::string_view name) const {
  const auto it = names_.find(name);
  return it == names_.end() ? nullptr : &it->second;
}

std::string zone::soa_text() const {
  return ". " + std::to_string(ttl_) + " IN SOA " + names_.at(".").front().rdata;
}

query_outcome handle_query(const zone& z, std::span<const std::uint8_t> bytes, bool over_tcp, dns_faults* faults) {
  query_outcome out;
  const auto check = check_query(bytes);
  switch (check.verdict) {
    case query_verdict::drop:
      out.reason = check.reason;
      return out;
    case query_verdict::formerr:
    case query_verdict::notimp: {
      const auto rcode = check.verdict == query_verdict::formerr ? LDNS_RCODE_FORMERR : LDNS_RCODE_NOTIMPL;
      out.reply = header_only_reply(bytes, rcode);
      out.rcode = rcode_name(rcode, false);
      out.reason = check.reason;
      return out;
    }
    case query_verdict::ok:
      break;
  }

  ldns_pkt* raw = nullptr;
  const ldns_status status = ldns_wire2pkt(&raw, bytes.data(), bytes.size());
  pkt_ptr query(raw);
  if (status != LDNS_STATUS_OK || !query || ldns_pkt_qdcount(query.get()) != 1) {
    out.reply = header_only_reply(bytes, LDNS_RCODE_FORMERR);
    out.rcode = "FORMERR";
    out.reason = ldns_get_errorstr_by_id(status);
    return out;
  }

  const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(query.get()), 0);
  const auto qtype = static_cast<std::uint16_t>(ldns_rr_get_type(question));
  const std::string asked = take_string(ldns_rdf2str(ldns_rr_owner(question)));
  out.name = without_final_dot(asked);
  out.type = take_string(ldns_rr_type2str(static_cast<ldns_rr_type>(qtype)));

  if (faults && !faults->empty() && faults->watches(lower(asked))) {
    out.fault_watched = true;
    if (const fault_rule* rule = faults->decide(lower(asked))) {
      out.fault = rule;
      out.reason = "fault";
      if (rule->answer == "timeout") return out;  // no reply at all
      reply_plan fault_plan;
      if (rule->answer == "SERVFAIL") fault_plan.rcode = LDNS_RCODE_SERVFAIL;
      if (rule->answer == "REFUSED") fault_plan.rcode = LDNS_RCODE_REFUSED;
      if (rule->answer == "NXDOMAIN") {
        fault_plan.rcode = LDNS_RCODE_NXDOMAIN;
        fault_plan.soa_in_authority = true;  // as for a name that is not there
      }
      out.reply = encode_reply(z, query.get(), fault_plan, rule->answer == "truncated");
      out.rcode = rcode_name(fault_plan.rcode, false);
      if (!out.reply) out.rcode = "-";
      return out;
    }
  }

  reply_plan plan;
  if (ldns_pkt_edns(query.get()) && ldns_pkt_edns_version(query.get()) != 0) {
    plan.badvers = true;  // RFC 6891 §6.1.3
    out.reason = "EDNS version " + std::to_string(ldns_pkt_edns_version(query.get()));
  } else if (ldns_rr_get_class(question) != LDNS_RR_CLASS_IN) {
    plan.rcode = LDNS_RCODE_REFUSED;
    out.reason = "class " + take_string(ldns_rr_class2str(ldns_rr_get_class(question)));
  } else if (qtype == LDNS_RR_TYPE_AXFR || qtype == LDNS_RR_TYPE_IXFR) {
    plan.rcode = LDNS_RCODE_NOTIMPL;
    out.reason = "zone transfers are not served";
  } else {
    plan = plan_reply(z, lower(asked), qtype);
  }

  std::size_t limit = classic_udp_size;
  if (over_tcp) {
    limit = 65535;  // RFC 1035 §4.2.2: the two-byte length is the only bound
  } else if (ldns_pkt_edns(query.get())) {
    limit = std::clamp<std::size_t>(ldns_pkt_edns_udp_size(query.get()), classic_udp_size, edns_udp_size);
  }
  out.reply = encode_reply(z, query.get(), plan, false);
  if (out.reply && out.reply->size() > limit) {
    out.reply = encode_reply(z, query.get(), plan, true);  // RFC 2181 §9: TC, client retries over TCP
    out.reason = "truncated";
  }
  out.rcode = rcode_name(plan.rcode, plan.badvers);
  out.answer = summarize(plan);
  if (!out.reply) {
    out.reason = "could not encode the reply";
    out.rcode = "-";
  }
  return out;
}

std::optional<std::vector<std::uint8_t>> answer_query(const zone& z, std::span<const std::uint8_t> query) {
  return handle_query(z, query).reply;
}

}  // namespace mailnet::resolver
