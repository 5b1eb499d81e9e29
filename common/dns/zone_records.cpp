#include "common/dns/zone_records.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "common/topology.hpp"

namespace mailnet {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return s;
}

std::string without_final_dot(std::string name) {
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  return name;
}

constexpr std::uint16_t type_a = 1, type_cname = 5, type_ptr = 12, type_mx = 15, type_txt = 16, type_aaaa = 28,
                        type_srv = 33;

// A topology's own record ("dns": {"records": [...]}, validated by the
// topology's parser) in presentation form.
zone_record record_of(const dns_record& rec, const std::string& domain) {
  const std::string name = rec.name + ".";
  if (rec.type == "TXT") {
    std::string rdata;
    for (const auto& part : txt_strings(rec.value)) {
      std::string quoted = "\"";
      for (unsigned char c : part) {
        if (c == '"' || c == '\\') {
          quoted += '\\';
          quoted += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7F) {
          char esc[5];
          std::snprintf(esc, sizeof esc, "\\%03u", static_cast<unsigned>(c));
          quoted += esc;
        } else {
          quoted += static_cast<char>(c);
        }
      }
      quoted += '"';
      rdata += (rdata.empty() ? "" : " ") + quoted;
    }
    const std::string summary = rec.value.size() > 60 ? rec.value.substr(0, 57) + "..." : rec.value;
    return {name, type_txt, rdata, summary, "", domain};
  }
  if (rec.type == "A") return {name, type_a, rec.value, rec.value, "", domain};
  if (rec.type == "AAAA") return {name, type_aaaa, rec.value, rec.value, "", domain};
  if (rec.type == "MX") {
    const auto host = rec.value.substr(rec.value.find(' ') + 1);
    const std::string target = host == "." ? "." : host + ".";
    return {name, type_mx, rec.value.substr(0, rec.value.find(' ') + 1) + target, rec.value,
            host == "." ? "" : target, domain};
  }
  return {name, type_cname, rec.value + ".", rec.value, rec.value + ".", domain};  // CNAME
}

}  // namespace

std::vector<zone_record> zone_records(const topology& t) {
  std::vector<zone_record> out;
  out.reserve(t.domains.size() * 7);
  std::set<std::string> ptrs;  // "owner target": several domains may share one address
  std::map<std::string, int> ptr_count;  // names of each address so far
  for (const auto& d : t.domains) {
    const std::string domain = lower(d.name) + ".";
    const std::string mail_host = "mx." + domain;
    const std::string port = std::to_string(d.listen.port);
    // RFC 2782: priority 0, weight 0, port, target.
    if (d.listen.port != 25)
      out.push_back({"_smtp._tcp." + domain, type_srv, "0 0 " + port + " " + mail_host,
                     without_final_dot(mail_host) + ":" + port, mail_host, d.name});
    out.push_back({domain, type_mx, "10 " + mail_host, "10 " + without_final_dot(mail_host), mail_host, d.name});
    const bool v6 = d.listen.host.find(':') != std::string::npos;
    out.push_back({mail_host, v6 ? type_aaaa : type_a, d.listen.host, d.listen.host, "", d.name});
    const std::string reverse = reverse_dns_name(d.listen.host);
    // Many domains may share one address (by default all are on 127.0.0.1): its
    // PTR answer names the first 10, which is all a reverse check follows, and
    // stays a small UDP answer however large the network.
    if (!reverse.empty() && ptr_count[reverse] < 10 && ptrs.insert(reverse + " " + mail_host).second &&
        ++ptr_count[reverse] > 0)
      out.push_back({reverse, type_ptr, mail_host, without_final_dot(mail_host), "", d.name});
    // The mail-authentication records (RFC 7208, RFC 6376 §3.6.2, RFC 7489 §6.1).
    if (d.dns.spf) out.push_back(record_of({d.name, "TXT", *d.dns.spf}, d.name));
    if (d.dns.dkim && !d.dns.dkim->public_key.empty())
      out.push_back(record_of({dkim_record_name(d.dns.dkim->selector, d.name), "TXT",
                               "v=DKIM1; k=rsa; p=" + d.dns.dkim->public_key},
                              d.name));
    if (d.dns.dmarc) out.push_back(record_of({"_dmarc." + d.name, "TXT", *d.dns.dmarc}, d.name));
    for (const auto& rec : d.dns.records) out.push_back(record_of(rec, d.name));
  }
  return out;
}

std::vector<std::string> txt_strings(std::string_view text) {
  // RFC 1035 §3.3.14: one TXT record holds character-strings of at most 255
  // octets each; a longer text is cut into several (RFC 7208 §3.3 reads them
  // back joined without spaces).
  std::vector<std::string> out;
  for (std::size_t pos = 0; pos < text.size(); pos += 255) out.emplace_back(text.substr(pos, 255));
  if (out.empty()) out.emplace_back();
  return out;
}

std::string zone_type_name(std::uint16_t type) {
  switch (type) {
    case type_a: return "A";
    case type_cname: return "CNAME";
    case type_ptr: return "PTR";
    case type_txt: return "TXT";
    case 6: return "SOA";
    case type_mx: return "MX";
    case type_aaaa: return "AAAA";
    case type_srv: return "SRV";
    default: return "TYPE" + std::to_string(type);
  }
}

}  // namespace mailnet
