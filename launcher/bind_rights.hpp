// Whether this user may listen on the ports a topology asks for: a port
// below net.ipv4.ip_unprivileged_port_start (1024 unless lowered; 25 is one)
// needs CAP_NET_BIND_SERVICE, which root has. Checked before any child starts.
#pragma once

#include <string>

namespace mailnet {
struct topology;
}

namespace mailnet::launcher {

struct bind_rights {
  int unprivileged_port_start = 1024;  // /proc/sys/net/ipv4/ip_unprivileged_port_start
  bool net_bind_service = false;       // CAP_NET_BIND_SERVICE (bit 10) in CapEff of /proc/self/status
};

// This process's rights, read from /proc (the defaults when it cannot be read).
bind_rights current_bind_rights();

// "" when every listening address of t may be bound with these rights; else
// a message naming the first address that may not and the three ways to allow it.
std::string privileged_port_problem(const topology& t, const bind_rights& rights);

}  // namespace mailnet::launcher
