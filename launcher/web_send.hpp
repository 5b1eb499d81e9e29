// POST /api/v1/send: the web API's request (JSON) turned into what `mailnet
// send` sends, through the same code (mail_client.hpp). Blocking: the web
// server calls it on a worker thread.
#pragma once

#include <chrono>
#include <set>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/topology.hpp"

namespace mailnet::launcher {

// body: {"from", "to", "cc", "bcc" (each an array of addresses or one string
// of comma-separated ones), "subject", "body", "attachments": [{"name",
// "content_type" (optional), "data" (base64)}], "via" (optional: a domain of
// the network whose node takes it)}. The reply's status: 200 every recipient
// accepted, 400 bad input (the error names the field), 502 a refusal by the
// node, 503 the node or the resolver does not answer.
std::pair<int, nlohmann::json> send_from_json(const nlohmann::json& body, const resolver_settings& resolver,
                                              const std::set<std::string>& domains,
                                              std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace mailnet::launcher
