#include "node/trace_headers.hpp"

#include <cctype>
#include <ctime>
#include <string>

namespace mailnet::node {

namespace {

bool starts_with_field(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

// One header field at the top of a message: its first line and continuation
// lines, line ends included.
std::string_view next_field(std::string_view message, std::size_t pos) {
  std::size_t end = pos;
  while (end < message.size()) {
    std::size_t eol = message.find('\n', end);
    if (eol == std::string_view::npos) return {};  // no line end: not a header field we wrote
    end = eol + 1;
    if (end >= message.size() || (message[end] != ' ' && message[end] != '\t')) break;
  }
  return message.substr(pos, end - pos);
}

constexpr std::size_t max_trace_field = 1024;  // longer than anything a node writes (names are at most 255)

// "Received: from H ([ip])\r\n\tby D (mailnet) with ESMTP id Q\r\n\t[for <a>; ]DATE\r\n" as a node
// writes it: fills id@domain and the date, to recognise the node's Message-ID: and Date: after it.
// (A node knows only its own domain, so any mailnet node's lines count: a
// sender that forges them gains at most trace_allowance() bytes.)
bool is_network_received(std::string_view field, std::string& id_at, std::string& date) {
  if (!starts_with_field(field, "received") || field.size() > max_trace_field) return false;
  auto by = field.find("\r\n\tby ");
  auto mark = field.find(" (mailnet) with ");
  if (by == std::string_view::npos || mark == std::string_view::npos || mark < by) return false;
  std::string_view domain = field.substr(by + 6, mark - by - 6);
  if (!is_valid_domain_name(domain)) return false;
  auto id = field.find(" id ", mark);
  auto eol = field.find("\r\n", mark);
  if (id == std::string_view::npos || eol == std::string_view::npos || id > eol) return false;
  id_at = std::string(field.substr(id + 4, eol - id - 4)) + "@" + std::string(domain);
  std::string_view last = field.substr(eol + 3);  // "[for <a>; ]DATE\r\n"
  if (auto semi = last.rfind("; "); semi != std::string_view::npos) last.remove_prefix(semi + 2);
  date = std::string(last);
  return true;
}

// "Authentication-Results: D;..." under a Received: of D's (id_at: "Q@D"),
// as auth_service.hpp writes it: at most max_trace_field bytes.
bool is_network_auth_results(std::string_view field, const std::string& id_at) {
  constexpr std::string_view name = "Authentication-Results: ";
  if (field.size() > max_trace_field || !field.starts_with(name)) return false;
  const std::string domain = id_at.substr(id_at.find('@') + 1);
  return field.substr(name.size()).starts_with(domain + ";");
}

// Bytes of the trace lines mailnet nodes put at the top of message.
std::size_t network_trace_bytes(std::string_view message) {
  std::size_t pos = 0;
  std::string id_at, date;
  bool after_ours = false;  // the field before was one of ours
  for (;;) {
    std::string_view field = next_field(message, pos);
    if (field.empty()) break;
    if (is_network_received(field, id_at, date)) {
      after_ours = true;
    } else if (!(after_ours && (field == "Message-ID: <" + id_at + ">\r\n" || field == "Date: " + date ||
                                is_network_auth_results(field, id_at)))) {
      break;
    }
    pos += field.size();
  }
  return pos;
}

}  // namespace

std::uint64_t counted_size(std::string_view message) {
  std::uint64_t size = 0;
  bool bol = true;
  for (std::size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
      size += 2;
      bol = true;
    } else {
      ++size;
      bol = false;
    }
  }
  if (!bol) size += 2;
  // The trace lines are CRLF-terminated as written, so their bytes are the same on the wire.
  return size - network_trace_bytes(message);
}

std::uint64_t trace_allowance(const limits& l) {
  return static_cast<std::uint64_t>(l.received_headers) * (4 * max_trace_field);
}

std::size_t first_field_size(std::string_view trace) { return next_field(trace, 0).size(); }

std::size_t remove_auth_results_of(std::string& message, std::size_t from, std::string_view authserv_id) {
  std::size_t removed = 0;
  std::size_t pos = from;
  for (int fields = 0; fields < 10000 && pos < message.size(); ++fields) {
    const std::string_view rest = std::string_view(message).substr(pos);
    if (rest.starts_with("\r\n") || rest.starts_with("\n")) break;  // the end of the header section
    // The whole field, continuation lines included (next_field's rule, on any line end).
    std::size_t end = pos;
    for (;;) {
      const std::size_t eol = message.find('\n', end);
      if (eol == std::string::npos) return removed;
      end = eol + 1;
      if (end >= message.size() || (message[end] != ' ' && message[end] != '\t')) break;
    }
    const std::string_view field = std::string_view(message).substr(pos, end - pos);
    bool ours = false;
    if (starts_with_field(field, "authentication-results")) {
      std::string_view value = field.substr(std::string_view("authentication-results:").size());
      const auto first = value.find_first_not_of(" \t\r\n");
      value = first == std::string_view::npos ? std::string_view() : value.substr(first);
      const auto id_end = value.find_first_of("; \t\r\n(");
      const std::string_view id = value.substr(0, id_end);
      ours = id.size() == authserv_id.size() &&
             std::equal(id.begin(), id.end(), authserv_id.begin(), [](char a, char b) {
               return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
             });
    }
    if (ours) {
      message.erase(pos, end - pos);
      ++removed;
    } else {
      pos = end;
    }
  }
  return removed;
}

header_facts scan_headers(std::string_view message) {
  header_facts facts;
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t eol = message.find('\n', pos);
    std::string_view line = message.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // end of the header section
    if (starts_with_field(line, "received")) ++facts.received;
    else if (starts_with_field(line, "message-id") && !facts.has_message_id) {
      facts.has_message_id = true;
      std::string_view value = line.substr(std::string_view("message-id:").size());
      // A value folded onto the next line ("Message-ID:\r\n <x@y>"): that line's.
      if (value.find_first_not_of(" \t") == std::string_view::npos && eol != std::string_view::npos) {
        const std::size_t next_end = message.find('\n', eol + 1);
        std::string_view next = message.substr(eol + 1, next_end == std::string_view::npos ? std::string_view::npos
                                                                                             : next_end - eol - 1);
        if (!next.empty() && (next.front() == ' ' || next.front() == '\t')) value = next;
      }
      if (!value.empty() && value.back() == '\r') value.remove_suffix(1);
      const auto first = value.find_first_not_of(" \t");
      value = first == std::string_view::npos ? std::string_view() : value.substr(first);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
      facts.message_id = std::string(value.substr(0, 998));
    }
    else if (starts_with_field(line, "date")) facts.has_date = true;
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  return facts;
}

std::string rfc5322_date(std::chrono::system_clock::time_point when) {
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}

std::string make_trace_headers(const trace_info& info, const header_facts& facts) {
  std::string date = rfc5322_date(info.when);
  // Over TLS (RFC 3848): "with ESMTPS", and the protocol version and cipher in a comment.
  std::string out = "Received: from " + info.helo + " ([" + info.client_ip + "])\r\n\t";
  if (!info.tls.empty()) {
    auto space = info.tls.find(' ');
    out += "(using " + info.tls.substr(0, space) +
           (space == std::string::npos ? std::string{} : " with cipher " + info.tls.substr(space + 1)) + ")\r\n\t";
  }
  out += "by " + info.by_domain + " (mailnet) with " + (info.esmtp ? "ESMTP" : "SMTP") + (info.tls.empty() ? "" : "S") + (info.authenticated ? "A" : "") +
         " id " + info.queue_id + "\r\n\t";
  if (!info.for_address.empty()) out += "for <" + info.for_address + ">; ";
  out += date + "\r\n";
  if (!facts.has_message_id) out += "Message-ID: <" + info.queue_id + "@" + info.by_domain + ">\r\n";
  if (!facts.has_date) out += "Date: " + date + "\r\n";
  return out;
}

}  // namespace mailnet::node
