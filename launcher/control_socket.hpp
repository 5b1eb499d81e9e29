// The launcher's side of mailnet.sock, in plain POSIX calls: a listening
// socket only its owner can open, close-on-exec accepts, and the check of
// who is on the other end (SO_PEERCRED). Whoever can connect to it can kill
// nodes and stop the network, so the mode alone is not trusted: every
// client's uid is checked as well.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace mailnet::launcher {

// Binds and listens on a unix stream socket at path with mode 0600 whatever
// the process's umask, close-on-exec and non-blocking. Returns the descriptor,
// or -1 with error set to what failed.
int listen_owner_only(const std::filesystem::path& path, std::string& error);

// accept4 with SOCK_CLOEXEC | SOCK_NONBLOCK: a node started later must never
// hold a client's connection. Returns -1 with errno set like accept4.
int accept_control_client(int listener);

// Empty when the peer on fd is this process's user or root; otherwise the
// refusal to send it ("refused: uid 65534 is not the owner of this network (uid 0)").
std::optional<std::string> refusal_for_peer(int fd);

}  // namespace mailnet::launcher
