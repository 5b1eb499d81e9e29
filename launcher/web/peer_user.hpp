// Who is on the other end of a loopback TCP connection. A unix socket tells
// (SO_PEERCRED); TCP does not, but on one machine the kernel knows: the
// client's own socket is listed in /proc/net/tcp (or tcp6) with its owner's
// uid, under the client's address as local and ours as remote. This is what
// lets the web server refuse other local users as mailnet.sock does.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>

namespace mailnet::launcher::web {

// The uid owning the client end of the connected TCP socket fd, both ends on
// this machine; nullopt when it cannot be found (the client is already gone).
std::optional<uid_t> loopback_peer_uid(int fd);

// Empty when the peer of fd is this process's user or root; otherwise the
// refusal to send ("uid 65534 is not the owner of this network (uid 0)").
std::optional<std::string> refusal_for_tcp_peer(int fd);

}  // namespace mailnet::launcher::web
