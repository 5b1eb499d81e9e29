// GET /api/v1/nodes/{name}/queue: what waits in a node's queue, read from its
// queue files as `mailnet queue` reads them. Plain files, no HTTP.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace mailnet::launcher::web {

// {"node", "count", "messages": [{"id", "from", "to": [pending recipients],
// "attempts", "last_error", "next_try" (UTC, or null: now), "created", "size"}]}
// oldest first; an unreadable queue file is listed as {"id", "unreadable": why}.
nlohmann::json queue_document(const std::filesystem::path& queue_dir, const std::string& node);

}  // namespace mailnet::launcher::web
