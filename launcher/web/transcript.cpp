#include "launcher/web/transcript.hpp"

#include <algorithm>
#include <map>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/mail/durable_file.hpp"

namespace mailnet::launcher::web {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct transcript_line {
  std::string_view time, session, direction, text;
};

// "2026-11-22T03:01:02.345Z 1A2..01 C: EHLO x": false for anything else.
bool parse_line(std::string_view line, transcript_line& out) {
  const auto space = line.find(' ');
  if (space == std::string_view::npos || space < 20 || line[4] != '-' || line[space - 1] != 'Z') return false;
  out.time = line.substr(0, space);
  const auto rest = line.substr(space + 1);
  const auto space2 = rest.find(' ');
  if (space2 == 0 || space2 == std::string_view::npos) return false;
  out.session = rest.substr(0, space2);
  auto text = rest.substr(space2 + 1);
  if (text.starts_with("C: ") || text == "C:") {
    out.direction = "client";
    text.remove_prefix(std::min<std::size_t>(3, text.size()));
  } else if (text.starts_with("S: ") || text == "S:") {
    out.direction = "server";
    text.remove_prefix(std::min<std::size_t>(3, text.size()));
  } else {
    out.direction = "note";
  }
  out.text = text;
  return true;
}

// The log's tail; an absent log is an empty transcript (a node that has had
// no session yet). A node folder or log that is a link is refused.
std::string read_log(const fs::path& node_dir, const transcript_limits& limits, bool& cut) {
  cut = false;
  std::error_code ec;
  const auto dir_status = fs::symlink_status(node_dir, ec);
  if (fs::is_symlink(dir_status)) throw std::runtime_error(node_dir.string() + " is a symbolic link: not read");
  const auto file = node_dir / "smtp.log";
  const auto status = fs::symlink_status(file, ec);
  if (ec || status.type() == fs::file_type::not_found) return {};
  if (fs::is_symlink(status)) throw std::runtime_error(file.string() + " is a symbolic link: not read");
  return node::read_file_tail(file, limits.tail_bytes, cut);
}

template <typename F>
void each_line(const std::string& text, F&& f) {
  std::string_view rest(text);
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    if (nl == std::string_view::npos) break;  // a line still being written
    f(rest.substr(0, nl));
    rest.remove_prefix(nl + 1);
  }
}

// The note smtp_session writes when STARTTLS succeeded:
// "TLS started: TLSv1.3 TLS_AES_256_GCM_SHA384; the session starts over".
constexpr std::string_view tls_started = "TLS started: ";

bool is_tls_switch(const transcript_line& t) { return t.direction == "note" && t.text.starts_with(tls_started); }

// "TLSv1.3 TLS_AES_256_GCM_SHA384" from that note.
std::string tls_of(std::string_view note) {
  note.remove_prefix(tls_started.size());
  return std::string(note.substr(0, note.find(';')));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  return out;
}

}  // namespace

json transcript_sessions(const fs::path& node_dir, const std::string& node, const std::set<std::string>& domains,
                         const transcript_limits& limits) {
  bool cut = false;
  const std::string text = read_log(node_dir, limits, cut);
  struct summary {
    std::string first, last, client, helo, tls;  // tls: the version and cipher once STARTTLS succeeded
    std::size_t lines = 0, order = 0;  // order: of its last line
  };
  std::map<std::string, summary, std::less<>> by_id;
  std::size_t order = 0;
  each_line(text, [&](std::string_view line) {
    transcript_line t;
    if (!parse_line(line, t)) return;
    auto it = by_id.find(t.session);
    if (it == by_id.end()) {
      it = by_id.emplace(std::string(t.session), summary{}).first;
      it->second.first = t.time;
    }
    auto& s = it->second;
    s.last = t.time;
    s.order = order++;
    ++s.lines;
    if (t.direction == "note" && t.text.starts_with("connect from ")) s.client = t.text.substr(13);
    if (is_tls_switch(t)) s.tls = tls_of(t.text);
    if (t.direction == "client" && s.helo.empty()) {
      const auto verb = lower(t.text.substr(0, 5));
      if (verb == "ehlo " || verb == "helo ") {
        auto name = t.text.substr(5);
        s.helo = std::string(name.substr(0, name.find(' ')));
      }
    }
  });
  std::vector<std::pair<const std::string*, const summary*>> rows;
  rows.reserve(by_id.size());
  for (const auto& [id, s] : by_id) rows.emplace_back(&id, &s);
  // Newest first: by the time of the last line, then by its place in the log.
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    if (a.second->last != b.second->last) return a.second->last > b.second->last;
    return a.second->order > b.second->order;
  });
  json doc = {{"node", node}, {"cut", cut}, {"count", 0}, {"sessions", json::array()}};
  for (const auto& [id, s] : rows) {
    if (doc["sessions"].size() >= limits.sessions) break;
    std::string helo = lower(s->helo);
    if (helo.size() > 1 && helo.back() == '.') helo.pop_back();
    const bool peer = !helo.empty() && helo != node && domains.count(helo);
    doc["sessions"].push_back({{"session", *id},
                               {"first", s->first},
                               {"last", s->last},
                               {"client", s->client},
                               {"helo", s->helo},
                               {"lines", s->lines},
                               {"direction", "inbound"},
                               {"tls", s->tls.empty() ? json(nullptr) : json(s->tls)},
                               {"from_node", peer ? json(helo) : json(nullptr)}});
  }
  doc["count"] = doc["sessions"].size();
  return doc;
}

json transcript_session(const fs::path& node_dir, const std::string& node, const std::string& session,
                        const transcript_limits& limits) {
  bool cut = false;
  const std::string text = read_log(node_dir, limits, cut);
  json lines = json::array();
  bool truncated = false;
  each_line(text, [&](std::string_view line) {
    transcript_line t;
    if (!parse_line(line, t) || t.session != session) return;
    if (lines.size() >= limits.session_lines) {
      truncated = true;
      return;
    }
    json l = {{"time", t.time}, {"direction", t.direction}, {"text", t.text}};
    if (is_tls_switch(t)) l["tls_switch"] = true;  // what follows is inside TLS
    lines.push_back(std::move(l));
  });
  if (lines.empty())
    throw session_not_found("no session " + session + " in the last " + std::to_string(limits.tail_bytes >> 20) +
                            " MiB of " + node + "'s smtp.log");
  return {{"node", node}, {"session", session}, {"cut", cut || truncated}, {"lines", std::move(lines)}};
}

}  // namespace mailnet::launcher::web
