// A message's path across the nodes of a run folder, from each node's
// node.log: accepted at the first node, relay attempts and deferrals with
// their replies, relayed, accepted and delivered at the next, attachments
// saved, bounced. `mailnet trace ID` prints it; GET /api/v1/messages/ID/trace
// returns it. Plain files, no HTTP and no event loop.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mailnet::launcher::web {

// One event line of a node.log: "2026-11-22T03:01:02.345Z id=Q1 event=accepted ..."
struct log_event {
  std::string time;
  std::vector<std::pair<std::string, std::string>> fields;  // in order, values unescaped
  std::string value(const std::string& key) const;
};

// nullopt-like: false when the line is not an event (no timestamp, no event=).
bool parse_log_event(const std::string& line, log_event& out);

// The (node, queue id) pairs of the Received: fields mailnet nodes wrote at
// the top of a message, newest first; LF or CRLF line ends.
std::vector<std::pair<std::string, std::string>> received_queue_ids(const std::string& message);

struct trace_not_found : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The trace of which: a Message-ID (with or without <>), a node's queue id,
// or a prefix of a delivered message's Maildir name. The message's queue ids
// on every node are found through the Message-ID that every `accepted`
// event carries, and through the Received: fields of a delivered copy.
// {"query", "message_id", "queue_ids": [{"node", "id"}], "events": [{"time",
// "node", "event", "id", other fields...}]}, events in time order.
// Throws trace_not_found, or std::runtime_error for an ambiguous prefix.
nlohmann::json message_trace(const std::filesystem::path& run_dir, const std::string& which);

// The trace as `mailnet trace` prints it (terminal-safe).
std::string trace_text(const nlohmann::json& trace);

}  // namespace mailnet::launcher::web
