#include "launcher/bind_rights.hpp"

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher {

bind_rights current_bind_rights() {
  bind_rights out;
  {
    std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    int start = 0;
    if (in >> start && start >= 0 && start <= 65536) out.unprivileged_port_start = start;
  }
  std::ifstream status("/proc/self/status");
  std::string line;
  for (int lines = 0; lines < 200 && std::getline(status, line); ++lines) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    try {
      const std::uint64_t mask = std::stoull(line.substr(7), nullptr, 16);
      out.net_bind_service = (mask >> 10) & 1U;  // CAP_NET_BIND_SERVICE
    } catch (const std::exception&) {
    }
    break;
  }
  return out;
}

std::string privileged_port_problem(const topology& t, const bind_rights& rights) {
  // Dovecot never has the privilege, whoever runs mailnet: as root it runs in
  // a user namespace, otherwise as the user (launcher/imap_config.hpp).
  for (const auto& [path, at] : {std::pair{"$.imap.listen", t.mail_access.imap}, std::pair{"$.pop3.listen", t.mail_access.pop3}}) {
    if (!at || at->port >= rights.unprivileged_port_start) continue;
    return std::string(path) + ": port " + std::to_string(at->port) + " of " + at->to_string() + " is below " +
           std::to_string(rights.unprivileged_port_start) +
           " (net.ipv4.ip_unprivileged_port_start), and Dovecot runs without the privilege to listen there (as root "
           "too: it runs in a user namespace then). Choose a port of " +
           std::to_string(rights.unprivileged_port_start) +
           " or more (1143 for IMAP, 1110 for POP3), or lower the limit (sudo sysctl "
           "net.ipv4.ip_unprivileged_port_start=" + std::to_string(at->port) + ")";
  }
  if (rights.net_bind_service) return "";
  std::vector<std::pair<std::string, endpoint>> wanted;
  for (std::size_t i = 0; i < t.domains.size(); ++i)
    wanted.emplace_back("$.domains[" + std::to_string(i) + "].listen (" + t.domains[i].name + ")", t.domains[i].listen);
  wanted.emplace_back("$.resolver.listen", t.resolver.listen);
  if (t.web.enabled) wanted.emplace_back("$.web.listen", t.web.listen);
  for (const auto& [path, at] : wanted) {
    if (at.port >= rights.unprivileged_port_start) continue;
    return path + ": port " + std::to_string(at.port) + " of " + at.to_string() +
           " is below " + std::to_string(rights.unprivileged_port_start) +
           " (net.ipv4.ip_unprivileged_port_start), and this user may not listen there. Either run mailnet as "
           "root, or give it the capability (sudo setcap cap_net_bind_service=+ep \"$(command -v mailnet)\" "
           "and the same for mailnet-node and mailnet-resolver), or lower the limit for everyone "
           "(sudo sysctl net.ipv4.ip_unprivileged_port_start=" + std::to_string(at.port) +
           "); or choose a port of " + std::to_string(rights.unprivileged_port_start) + " or more";
  }
  return "";
}

}  // namespace mailnet::launcher
