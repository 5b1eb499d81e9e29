#include "launcher/web/peer_user.hpp"

#include <arpa/inet.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

namespace mailnet::launcher::web {

namespace {

// An address and port as /proc/net/tcp prints them: each 32-bit word of the
// address as the kernel holds it ("%08X" of the word in host order), then
// the port in hex. Copying the bytes into a word reproduces it on any host.
std::string proc_form(const sockaddr_storage& a) {
  char text[64];
  auto word = [](const unsigned char* bytes) {
    std::uint32_t w;
    std::memcpy(&w, bytes, sizeof w);
    return w;
  };
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    std::snprintf(text, sizeof text, "%08X:%04X", word(reinterpret_cast<const unsigned char*>(&in.sin_addr)),
                  ntohs(in.sin_port));
  } else {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    const unsigned char* b = in6.sin6_addr.s6_addr;
    std::snprintf(text, sizeof text, "%08X%08X%08X%08X:%04X", word(b), word(b + 4), word(b + 8), word(b + 12),
                  ntohs(in6.sin6_port));
  }
  return text;
}

}  // namespace

std::optional<uid_t> loopback_peer_uid(int fd) {
  sockaddr_storage ours{}, theirs{};
  socklen_t ours_len = sizeof ours, theirs_len = sizeof theirs;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ours), &ours_len) != 0 ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&theirs), &theirs_len) != 0)
    return std::nullopt;
  if (ours.ss_family != theirs.ss_family || (ours.ss_family != AF_INET && ours.ss_family != AF_INET6))
    return std::nullopt;
  const std::string local = proc_form(theirs), remote = proc_form(ours);
  std::ifstream table(ours.ss_family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6");
  std::string line;
  std::getline(table, line);  // the header
  while (std::getline(table, line)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
    std::istringstream fields(line);
    std::string sl, l, r, st, queues, timer, retransmits;
    unsigned long uid = 0;
    if (!(fields >> sl >> l >> r >> st >> queues >> timer >> retransmits >> uid)) continue;
    if (l == local && r == remote) return static_cast<uid_t>(uid);
  }
  return std::nullopt;
}

std::optional<std::string> refusal_for_tcp_peer(int fd) {
  const uid_t owner = ::geteuid();
  const auto peer = loopback_peer_uid(fd);
  if (!peer) return "the client's user could not be found (only local users of this machine are served)";
  if (*peer == owner || *peer == 0) return std::nullopt;
  return "uid " + std::to_string(*peer) + " is not the owner of this network (uid " + std::to_string(owner) + ")";
}

}  // namespace mailnet::launcher::web
