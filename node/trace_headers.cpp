#include "node/trace_headers.hpp"

#include <cctype>
#include <ctime>

namespace mailnet::node {

namespace {

bool starts_with_field(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

}  // namespace

header_facts scan_headers(std::string_view message) {
  header_facts facts;
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t eol = message.find('\n', pos);
    std::string_view line = message.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // end of the header section
    if (starts_with_field(line, "received")) ++facts.received;
    else if (starts_with_field(line, "message-id")) facts.has_message_id = true;
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
  std::string out = "Received: from " + info.helo + " ([" + info.client_ip + "])\r\n\tby " + info.by_domain +
                    " (mailnet) with " + (info.esmtp ? "ESMTP" : "SMTP") + " id " + info.queue_id + "\r\n\t";
  if (!info.for_address.empty()) out += "for <" + info.for_address + ">; ";
  out += date + "\r\n";
  if (!facts.has_message_id) out += "Message-ID: <" + info.queue_id + "@" + info.by_domain + ">\r\n";
  if (!facts.has_date) out += "Date: " + date + "\r\n";
  return out;
}

}  // namespace mailnet::node
