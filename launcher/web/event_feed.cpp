#include "launcher/web/event_feed.hpp"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "common/event_log.hpp"
#include "launcher/web/event_names.hpp"
#include "launcher/web/query.hpp"
#include "launcher/web/trace.hpp"

namespace mailnet::launcher::web {

using json = nlohmann::json;

std::string_view event_name(std::string_view line) {
  const auto pos = line.find(" event=");
  if (pos == std::string_view::npos) return {};
  const auto value = line.substr(pos + 7);
  return value.substr(0, value.find(' '));
}

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

bool event_filter::wants(std::string_view event) const {
  return names.empty() || std::find(names.begin(), names.end(), event) != names.end();
}

events_query parse_events_query(std::string_view query) {
  events_query out;
  auto fail = [&](std::string why) {
    out.error = std::move(why);
    return out;
  };
  bool seen_since = false, seen_events = false;
  const auto read = query_params(query, {"since", "events"}, 16);
  for (const auto& [key, value] : read.params) {
    if (key == "since") {
      if (seen_since) return fail("since is given twice");
      seen_since = true;
      std::uint64_t id = 0;
      const auto [end, err] = std::from_chars(value.data(), value.data() + value.size(), id);
      if (value.empty() || err != std::errc() || end != value.data() + value.size())
        return fail("since must be an event id (a whole number), not '" + value + "'");
      out.since = id;
    } else {  // events
      if (seen_events) return fail("events is given twice (name them all in one, separated by commas)");
      seen_events = true;
      std::string_view list(value);
      for (std::size_t n = 0; n < 200; ++n) {
        const auto comma = list.find(',');
        const auto name = list.substr(0, comma);
        if (name.empty()) return fail("events has an empty name: '" + value + "'");
        if (!is_known_event(name)) {
          std::string known;
          for (const auto k : known_events()) known += (known.empty() ? "" : ", ") + std::string(k);
          return fail("unknown event '" + std::string(name) + "' in events (known: " + known + ")");
        }
        auto& names = out.filter.names;
        if (std::find(names.begin(), names.end(), name) == names.end()) names.emplace_back(name);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
      }
    }
  }
  if (!read.error.empty()) return fail(read.error);
  return out;
}

event_feed::event_feed(event_feed_limits limits) : limits_(limits) {}

void event_feed::publish(std::string_view node, std::string_view line) {
  const auto event = event_name(line);
  if (event.empty()) return;
  const auto id = next_id_++;
  // Made at the first client that wants it, then shared; a line that does
  // not parse is sent to no one (its id is skipped).
  std::optional<std::string> frame;
  bool made = false;
  for (auto& c : clients_) {
    if (c->dropped || !c->filter.wants(event)) continue;
    if (!made) {
      frame = event_frame(id, node, line);
      made = true;
    }
    if (!frame) break;
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
  recent_bytes_ += line.size() + node.size();
  recent_.push_back({id, std::string(node), std::string(line), std::string(event)});
  while (!recent_.empty() && (recent_.size() > limits_.recent_events || recent_bytes_ > limits_.recent_bytes)) {
    recent_bytes_ -= recent_.front().line.size() + recent_.front().node.size();
    recent_.pop_front();
  }
}

std::shared_ptr<event_feed::client> event_feed::subscribe(std::optional<std::uint64_t> last_id, event_filter filter) {
  auto c = std::make_shared<client>();
  c->filter = std::move(filter);
  if (last_id)
    for (const auto& k : recent_)
      if (k.id > *last_id && c->filter.wants(k.event))
        if (auto frame = event_frame(k.id, k.node, k.line)) {
          c->bytes += frame->size();
          c->frames.push_back(std::move(*frame));
        }
  clients_.push_back(c);
  return c;
}

void event_feed::unsubscribe(const std::shared_ptr<client>& c) {
  clients_.erase(std::remove(clients_.begin(), clients_.end(), c), clients_.end());
}

}  // namespace mailnet::launcher::web
