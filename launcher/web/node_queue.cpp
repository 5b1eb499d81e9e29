#include "launcher/web/node_queue.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "common/mail/spool.hpp"

namespace mailnet::launcher::web {

using json = nlohmann::json;

namespace {

// "2026-11-22T03:01:02.345Z"
std::string utc_text(std::int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char millis[8];
  std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(ms % 1000));
  return std::string(buf, n) + millis;
}

}  // namespace

json queue_document(const std::filesystem::path& queue_dir, const std::string& node) {
  json doc = {{"node", node}, {"count", 0}, {"messages", json::array()}};
  std::error_code ec;
  if (!std::filesystem::is_directory(queue_dir, ec)) return doc;
  const node::spool queue(queue_dir);
  std::vector<json> rows;
  for (const auto& id : queue.list()) {
    std::optional<node::queued_message> m;
    try {
      m = queue.load(id);
    } catch (const std::exception& e) {
      rows.push_back({{"id", id}, {"unreadable", e.what()}});
      continue;
    }
    if (!m) continue;  // gone since the listing: relayed meanwhile
    json to = json::array();
    for (const auto& r : m->rcpts)
      if (r.state == "pending") to.push_back(r.address);
    rows.push_back({{"id", m->id},
                    {"from", m->mail_from},
                    {"to", std::move(to)},
                    {"attempts", m->attempts},
                    {"last_error", m->last_error},
                    {"next_try", m->next_try_ms ? json(utc_text(m->next_try_ms)) : json(nullptr)},
                    {"created", utc_text(m->created_ms)},
                    {"created_ms", m->created_ms},
                    {"size", m->message.size()}});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const json& a, const json& b) {
    return a.value("created_ms", std::int64_t{0}) < b.value("created_ms", std::int64_t{0});
  });
  for (auto& r : rows) r.erase("created_ms");
  doc["count"] = rows.size();
  doc["messages"] = std::move(rows);
  return doc;
}

}  // namespace mailnet::launcher::web
