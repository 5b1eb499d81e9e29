// A node's SMTP transcript (its smtp.log: "TIME SESSION C: line", "TIME
// SESSION S: reply", "TIME SESSION connect from IP", "TIME SESSION fault
// ...") as the web API serves it: the latest sessions, or the lines of one.
// Plain files, no HTTP and no event loop; only the tail of a large log is
// read, and never through a link.
#pragma once

#include <cstddef>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace mailnet::launcher::web {

struct transcript_limits {
  std::size_t tail_bytes = 2u << 20;  // the last 2 MiB of smtp.log
  std::size_t sessions = 50;          // in the list
  std::size_t session_lines = 10000;  // of one session
};

struct session_not_found : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// {"node", "cut", "count", "sessions": [{"session", "first", "last", "client",
// "helo", "lines", "direction": "inbound", "from_node"}]}, newest first.
// domains: the network's domains, to tell a relay from another node.
nlohmann::json transcript_sessions(const std::filesystem::path& node_dir, const std::string& node,
                                   const std::set<std::string>& domains, const transcript_limits& limits = {});

// {"node", "session", "cut", "lines": [{"time", "direction", "text"}]} in order;
// direction "client" (C:), "server" (S:) or "note" (connect, fault).
// Throws session_not_found.
nlohmann::json transcript_session(const std::filesystem::path& node_dir, const std::string& node,
                                  const std::string& session, const transcript_limits& limits = {});

}  // namespace mailnet::launcher::web
