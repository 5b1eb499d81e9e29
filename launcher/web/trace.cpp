#include "launcher/web/trace.hpp"

#include <algorithm>
#include <sstream>
#include <set>

#include "common/event_log.hpp"
#include "common/mail/durable_file.hpp"
#include "common/mail/maildir_read.hpp"
#include "common/mail/mime_parse.hpp"
#include "common/terminal_text.hpp"

namespace mailnet::launcher::web {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct node_event {
  std::string node;
  std::size_t order;  // the line's place in its log
  log_event e;
};

std::string bare_message_id(std::string id) {
  while (!id.empty() && (id.front() == ' ' || id.front() == '<')) id.erase(id.begin());
  while (!id.empty() && (id.back() == ' ' || id.back() == '>')) id.pop_back();
  return id;
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::vector<node_event> read_logs(const fs::path& run_dir) {
  std::vector<node_event> events;
  std::vector<fs::path> nodes;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec))
    if (e.is_directory() && !e.is_symlink() && fs::is_regular_file(fs::symlink_status(e.path() / "node.log", ec)))
      nodes.push_back(e.path());
  std::sort(nodes.begin(), nodes.end());
  for (const auto& n : nodes) {
    // Never through a link planted in the run folder (as `mailnet logs` reads).
    std::string text;
    try {
      text = node::read_whole_file(n / "node.log", false);
    } catch (const std::exception&) {
      continue;
    }
    std::istringstream in(text);
    std::string line;
    std::size_t order = 0;
    while (std::getline(in, line)) {
      node_event ev{n.filename().string(), order++, {}};
      if (parse_log_event(line, ev.e) && !ev.e.value("id").empty()) events.push_back(std::move(ev));
    }
  }
  return events;
}

}  // namespace

// The (node, queue id) pairs of the Received: fields mailnet nodes wrote:
// "Received: from HELO ([IP])\n\tby DOMAIN (mailnet) with ESMTP id QID\n\t...".
std::vector<std::pair<std::string, std::string>> received_queue_ids(const std::string& raw) {
  std::vector<std::pair<std::string, std::string>> out;
  // The header block, whatever the line ends (a Maildir file has LF alone).
  auto header_end = raw.find("\n\n");
  if (const auto crlf = raw.find("\n\r\n"); crlf < header_end) header_end = crlf;
  const std::string_view head(raw.data(), header_end == std::string::npos ? raw.size() : header_end);
  std::size_t pos = 0;
  for (std::size_t count = 0; count < 1000; ++count) {
    pos = head.find("\tby ", pos);
    if (pos == std::string_view::npos) break;
    pos += 4;
    const auto line_end = head.find('\n', pos);
    std::string_view line = head.substr(pos, line_end == std::string_view::npos ? std::string_view::npos
                                                                                 : line_end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto mark = line.find(" (mailnet) with ");
    const auto id = line.find(" id ");
    if (mark == std::string_view::npos || id == std::string_view::npos || id < mark) continue;
    out.emplace_back(node::ascii_lower(std::string(line.substr(0, mark))), std::string(line.substr(id + 4)));
  }
  return out;
}

std::string log_event::value(const std::string& key) const {
  for (const auto& [k, v] : fields)
    if (k == key) return v;
  return {};
}

bool parse_log_event(const std::string& line, log_event& out) {
  out = {};
  const auto space = line.find(' ');
  if (space == std::string::npos || space < 20 || line[4] != '-' || line[space - 1] != 'Z') return false;
  out.time = line.substr(0, space);
  std::size_t i = space + 1;
  while (i < line.size()) {
    const auto eq = line.find('=', i);
    if (eq == std::string::npos) return false;
    std::string key = line.substr(i, eq - i);
    if (key.empty() || key.find(' ') != std::string::npos) return false;
    std::string value;
    i = eq + 1;
    if (i < line.size() && line[i] == '"') {
      for (++i; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
          if (line[i + 1] == 'x' && i + 3 < line.size() && hex(line[i + 2]) >= 0 && hex(line[i + 3]) >= 0) {
            value += static_cast<char>(hex(line[i + 2]) * 16 + hex(line[i + 3]));
            i += 3;
          } else {
            value += line[++i];
          }
        } else {
          value += line[i];
        }
      }
      if (i >= line.size()) return false;  // no closing quote
      ++i;
    } else {
      const auto end = line.find(' ', i);
      value = line.substr(i, end == std::string::npos ? std::string::npos : end - i);
      i = end == std::string::npos ? line.size() : end;
    }
    out.fields.emplace_back(std::move(key), std::move(value));
    if (i < line.size() && line[i] == ' ') ++i;
  }
  return !out.value("event").empty();
}

json message_trace(const fs::path& run_dir, const std::string& which) {
  if (which.empty()) throw trace_not_found("no message id given");
  const auto events = read_logs(run_dir);
  std::set<std::pair<std::string, std::string>> ids;  // (node, queue id)
  std::set<std::string> message_ids;

  // A delivered copy, by a prefix of its Maildir name: its Message-ID and
  // the queue id every mailnet node gave it on the way (its Received: fields).
  std::vector<fs::path> files;
  std::set<std::string> names;
  for (const auto& d : node::mail_domains(run_dir))
    for (const auto& u : node::user_folders(d / "mail"))
      for (const auto& maildir : {u, u / node::junk_maildir})  // the inbox, and the Junk folder
        for (const auto& f : node::maildir_files(maildir))
          if (f.filename().string().starts_with(which)) {
            files.push_back(f);
            names.insert(f.filename().string().substr(0, f.filename().string().find(':')));
          }
  if (names.size() > 1)
    throw std::runtime_error("'" + which + "' starts the names of " + std::to_string(names.size()) +
                             " messages; give more of the name");
  if (!files.empty()) {
    const std::string raw = node::read_whole_file(files.front(), false);
    const auto m = node::parse_mail(raw);
    if (!m.message_id.empty()) message_ids.insert(bare_message_id(m.message_id));
    for (auto& p : received_queue_ids(raw)) ids.insert(std::move(p));
  }
  // A queue id of a node.
  for (const auto& ev : events)
    if (ev.e.value("id") == which) ids.insert({ev.node, which});
  // A Message-ID.
  if (ids.empty() && message_ids.empty()) message_ids.insert(bare_message_id(which));
  // Every node's queue ids of the same Message-ID, and the Message-IDs of the queue ids found.
  for (int round = 0; round < 2; ++round)
    for (const auto& ev : events) {
      if (ev.e.value("event") != "accepted") continue;
      const std::string mid = bare_message_id(ev.e.value("message_id"));
      if (mid.empty()) continue;
      if (message_ids.count(mid)) ids.insert({ev.node, ev.e.value("id")});
      else if (ids.count({ev.node, ev.e.value("id")})) message_ids.insert(mid);
    }

  std::vector<const node_event*> found;
  for (const auto& ev : events)
    if (ids.count({ev.node, ev.e.value("id")})) found.push_back(&ev);
  if (found.empty())
    throw trace_not_found("no Message-ID, queue id or Maildir name '" + which + "' in the nodes' logs of " +
                          run_dir.string());
  // In time order; at the same millisecond, a node's own lines keep their order.
  std::stable_sort(found.begin(), found.end(), [](const node_event* a, const node_event* b) {
    if (a->e.time != b->e.time) return a->e.time < b->e.time;
    if (a->node != b->node) return false;
    return a->order < b->order;
  });
  json doc = {{"query", which}, {"message_id", nullptr}, {"queue_ids", json::array()}, {"events", json::array()}};
  if (message_ids.size() == 1) doc["message_id"] = "<" + *message_ids.begin() + ">";
  std::set<std::pair<std::string, std::string>> listed;
  for (const auto* ev : found) {
    json e = {{"time", ev->e.time}, {"node", ev->node}};
    for (const auto& [k, v] : ev->e.fields) e[k] = v;
    doc["events"].push_back(std::move(e));
    if (listed.insert({ev->node, ev->e.value("id")}).second)
      doc["queue_ids"].push_back({{"node", ev->node}, {"id", ev->e.value("id")}});
  }
  return doc;
}

std::string trace_text(const json& trace) {
  std::string out;
  if (trace["message_id"].is_string()) out += "Message-ID: " + terminal_safe(trace["message_id"].get<std::string>()) + "\n";
  std::size_t node_width = 4;
  for (const auto& e : trace["events"]) node_width = std::max(node_width, e["node"].get<std::string>().size());
  for (const auto& e : trace["events"]) {
    const std::string node = e["node"].get<std::string>();
    std::string line = e["time"].get<std::string>() + "  " + node + std::string(node_width - node.size(), ' ') + "  " +
                       e.value("event", "");
    line += " id=" + log_value(e.value("id", ""));
    for (const auto& [k, v] : e.items())
      if (k != "time" && k != "node" && k != "event" && k != "id") line += " " + k + "=" + log_value(v.get<std::string>());
    out += terminal_safe(line) + "\n";
  }
  return out;
}

}  // namespace mailnet::launcher::web
