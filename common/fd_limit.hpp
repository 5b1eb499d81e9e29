// Raising the open-file limit: a launcher with hundreds of children and a node
// with a thousand connections both need more than the usual soft limit of 1024.
#pragma once

#include <cstddef>

namespace mailnet {

// Sets the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
std::size_t raise_fd_limit();

}  // namespace mailnet
