// Whether mailnet may listen on the ports a topology asks for: a port below
// net.ipv4.ip_unprivileged_port_start (1024 unless lowered; 25 is one) needs
// CAP_NET_BIND_SERVICE in the process that binds it. The launcher binds the
// web port itself, but each node and the resolver bind theirs after an exec,
// and what survives an exec is not what the launcher holds: a capability set
// on the mailnet binary with setcap is gone in mailnet-node unless that file
// carries it too. So the check asks, for each listener, about the binary that
// will bind it. Checked before any child starts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mailnet {
struct topology;
}

namespace mailnet::launcher {

struct bind_rights {
  int unprivileged_port_start = 1024;  // /proc/sys/net/ipv4/ip_unprivileged_port_start
  bool net_bind_service = false;       // the launcher's own (CapEff of /proc/self/status): the web port
  bool node_bind_service = false;      // what mailnet-node will hold after its exec
  bool resolver_bind_service = false;  // what mailnet-resolver will hold after its exec
};

// The capability sets of this process, as /proc/self/status shows them.
struct capability_sets {
  std::uint64_t effective = 0;  // CapEff
  std::uint64_t bounding = 0;   // CapBnd
  std::uint64_t ambient = 0;    // CapAmb
};

// Whether a file's "security.capability" attribute (struct vfs_cap_data,
// revisions 1 to 3; empty when the file has none) gives CAP_NET_BIND_SERVICE
// in its permitted set and raises it as effective at exec.
bool file_grants_bind_service(std::string_view xattr);

// Whether a program exec'd by a process with these sets and this effective
// uid holds CAP_NET_BIND_SERVICE: root keeps its bounding set; anyone else
// keeps an ambient capability, or gains one the file grants (within the
// bounding set).
bool exec_keeps_bind_service(const capability_sets& self, bool root, std::string_view file_xattr);

// The binaries the launcher runs (mailnet-node, mailnet-resolver): beside its
// own, or in $MAILNET_BIN_DIR.
std::filesystem::path own_binary_dir();

// This process's rights and those its children will have, read from /proc
// and the binaries' attributes (the defaults when they cannot be read).
bind_rights current_bind_rights();

// "" when every listening address of t may be bound with these rights; else
// a message naming the first address that may not and the ways to allow it.
std::string privileged_port_problem(const topology& t, const bind_rights& rights);

}  // namespace mailnet::launcher
