#include "launcher/bind_rights.hpp"

#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher {
namespace {

constexpr unsigned bind_service_bit = 10;  // CAP_NET_BIND_SERVICE
constexpr std::uint64_t bind_service = std::uint64_t{1} << bind_service_bit;

// vfs_cap_data (linux/capability.h): a little-endian magic word whose high
// byte is the revision and whose bit 0 says "raise the permitted set as
// effective", then (permitted, inheritable) words: one pair in revision 1,
// two (low and high 32 capabilities) in 2 and 3; 3 appends a root uid.
constexpr std::uint32_t revision_mask = 0xFF000000;
constexpr std::uint32_t revision_1 = 0x01000000, revision_2 = 0x02000000, revision_3 = 0x03000000;
constexpr std::uint32_t effective_flag = 0x000001;

std::uint32_t le32(std::string_view bytes, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[at + static_cast<std::size_t>(i)]);
  return v;
}

capability_sets read_own_capabilities() {
  capability_sets out;
  std::ifstream status("/proc/self/status");
  std::string line;
  auto field = [&](std::string_view name, std::uint64_t& into) {
    if (line.rfind(name, 0) != 0) return;
    try {
      into = std::stoull(line.substr(name.size()), nullptr, 16);
    } catch (const std::exception&) {
    }
  };
  for (int lines = 0; lines < 200 && std::getline(status, line); ++lines) {
    field("CapEff:", out.effective);
    field("CapBnd:", out.bounding);
    field("CapAmb:", out.ambient);
  }
  return out;
}

std::string file_capability(const std::filesystem::path& file) {
  char buffer[64];
  const auto n = ::getxattr(file.c_str(), "security.capability", buffer, sizeof buffer);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

bool file_grants_bind_service(std::string_view xattr) {
  if (xattr.size() < 12) return false;
  const std::uint32_t magic = le32(xattr, 0);
  const std::uint32_t revision = magic & revision_mask;
  if (revision != revision_1 && revision != revision_2 && revision != revision_3) return false;
  if (revision != revision_1 && xattr.size() < 20) return false;
  if (!(magic & effective_flag)) return false;  // permitted, but the program would have to raise it itself
  return (le32(xattr, 4) >> bind_service_bit) & 1U;
}

bool exec_keeps_bind_service(const capability_sets& self, bool root, std::string_view file_xattr) {
  if (!(self.bounding & bind_service)) return false;
  if (root) return true;
  if (self.ambient & bind_service) return true;
  return file_grants_bind_service(file_xattr);
}

std::filesystem::path own_binary_dir() {
  if (const char* env = std::getenv("MAILNET_BIN_DIR"); env && *env) return std::filesystem::absolute(env);
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::current_path() : self.parent_path();
}

bind_rights current_bind_rights() {
  bind_rights out;
  {
    std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    int start = 0;
    if (in >> start && start >= 0 && start <= 65536) out.unprivileged_port_start = start;
  }
  const auto caps = read_own_capabilities();
  const bool root = ::geteuid() == 0;
  out.net_bind_service = caps.effective & bind_service;
  const auto dir = own_binary_dir();
  out.node_bind_service = exec_keeps_bind_service(caps, root, file_capability(dir / "mailnet-node"));
  out.resolver_bind_service = exec_keeps_bind_service(caps, root, file_capability(dir / "mailnet-resolver"));
  return out;
}

std::string privileged_port_problem(const topology& t, const bind_rights& rights) {
  struct listener {
    std::string path;
    endpoint at;
    bool may;
    const char* binary;
  };
  std::vector<listener> wanted;
  for (std::size_t i = 0; i < t.domains.size(); ++i) {
    const auto& d = t.domains[i];
    wanted.push_back({"$.domains[" + std::to_string(i) + "].listen (" + d.name + ")", d.listen,
                      rights.node_bind_service, "mailnet-node"});
    if (d.submission)
      wanted.push_back({"$.domains[" + std::to_string(i) + "].submission (" + d.name + ")", *d.submission,
                        rights.node_bind_service, "mailnet-node"});
  }
  wanted.push_back({"$.resolver.listen", t.resolver.listen, rights.resolver_bind_service, "mailnet-resolver"});
  if (t.web.enabled) wanted.push_back({"$.web.listen", t.web.listen, rights.net_bind_service, "mailnet"});
  for (const auto& w : wanted) {
    if (w.may || w.at.port >= rights.unprivileged_port_start) continue;
    std::string who = std::string(w.binary) == "mailnet"
                          ? "this user may not listen there"
                          : std::string(w.binary) + ", which listens there, would not have the right after its start";
    return w.path + ": port " + std::to_string(w.at.port) + " of " + w.at.to_string() + " is below " +
           std::to_string(rights.unprivileged_port_start) + " (net.ipv4.ip_unprivileged_port_start), and " + who +
           ". Either run mailnet as root, or give the capability to each binary that listens (sudo setcap "
           "cap_net_bind_service=+ep on mailnet, mailnet-node and mailnet-resolver in " +
           own_binary_dir().string() + "), or lower the limit for everyone (sudo sysctl "
           "net.ipv4.ip_unprivileged_port_start=" + std::to_string(w.at.port) + "); or choose a port of " +
           std::to_string(rights.unprivileged_port_start) + " or more";
  }
  return "";
}

}  // namespace mailnet::launcher
