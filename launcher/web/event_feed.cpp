#include "launcher/web/event_feed.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/event_log.hpp"
#include "launcher/web/trace.hpp"

namespace mailnet::launcher::web {

using json = nlohmann::json;

std::optional<std::string> event_frame(std::uint64_t id, std::string_view node, std::string_view line) {
  log_event e;
  if (!parse_log_event(std::string(line), e)) return std::nullopt;
  json doc = {{"time", e.time}, {"node", std::string(node)}};
  for (auto& [k, v] : e.fields)
    if (k != "time" && k != "node") doc[k] = std::move(v);
  // dump() escapes every control character: the JSON is one line.
  return "id: " + std::to_string(id) + "\ndata: " + doc.dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n\n";
}

std::string state_event_line(std::string_view state, std::string_view exit_text) {
  std::string line = utc_timestamp() + " event=state";
  if (exit_text.empty()) append_log_fields(line, {{"state", state}});
  else append_log_fields(line, {{"state", state}, {"exit", exit_text}});
  return line;
}

event_feed::event_feed(event_feed_limits limits) : limits_(limits) {}

void event_feed::publish(std::string_view node, std::string_view line) {
  auto frame = event_frame(next_id_, node, line);
  if (!frame) return;
  const auto id = next_id_++;
  for (auto& c : clients_) {
    if (c->dropped) continue;
    if (c->frames.size() + 1 > limits_.client_events || c->bytes + frame->size() > limits_.client_bytes) {
      c->dropped = true;
      c->frames.clear();
      c->bytes = 0;
      ++dropped_;
    } else {
      c->frames.push_back(*frame);
      c->bytes += frame->size();
    }
    if (c->wake) c->wake();
  }
  recent_bytes_ += frame->size();
  recent_.emplace_back(id, std::move(*frame));
  while (!recent_.empty() && (recent_.size() > limits_.recent_events || recent_bytes_ > limits_.recent_bytes)) {
    recent_bytes_ -= recent_.front().second.size();
    recent_.pop_front();
  }
}

std::shared_ptr<event_feed::client> event_feed::subscribe(std::optional<std::uint64_t> last_id) {
  auto c = std::make_shared<client>();
  if (last_id)
    for (const auto& [id, frame] : recent_)
      if (id > *last_id) {
        c->frames.push_back(frame);
        c->bytes += frame.size();
      }
  clients_.push_back(c);
  return c;
}

void event_feed::unsubscribe(const std::shared_ptr<client>& c) {
  clients_.erase(std::remove(clients_.begin(), clients_.end(), c), clients_.end());
}

}  // namespace mailnet::launcher::web
