#include "common/dns/zone_records.hpp"

#include <algorithm>

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

constexpr std::uint16_t type_a = 1, type_mx = 15, type_aaaa = 28, type_srv = 33;

}  // namespace

std::vector<zone_record> zone_records(const topology& t) {
  std::vector<zone_record> out;
  out.reserve(t.domains.size() * 3);
  for (const auto& d : t.domains) {
    const std::string domain = lower(d.name) + ".";
    const std::string mail_host = "mx." + domain;
    const std::string port = std::to_string(d.listen.port);
    // RFC 2782: priority 0, weight 0, port, target.
    out.push_back({"_smtp._tcp." + domain, type_srv, "0 0 " + port + " " + mail_host,
                   without_final_dot(mail_host) + ":" + port, mail_host, d.name});
    out.push_back({domain, type_mx, "10 " + mail_host, "10 " + without_final_dot(mail_host), mail_host, d.name});
    const bool v6 = d.listen.host.find(':') != std::string::npos;
    out.push_back({mail_host, v6 ? type_aaaa : type_a, d.listen.host, d.listen.host, "", d.name});
  }
  return out;
}

std::string zone_type_name(std::uint16_t type) {
  switch (type) {
    case type_a: return "A";
    case 6: return "SOA";
    case type_mx: return "MX";
    case type_aaaa: return "AAAA";
    case type_srv: return "SRV";
    default: return "TYPE" + std::to_string(type);
  }
}

}  // namespace mailnet
