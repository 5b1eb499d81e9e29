#include "node/bounce.hpp"

#include <cctype>

#include "node/trace_headers.hpp"

namespace mailnet::node {

namespace {

bool is_status_code(std::string_view s) {
  // class "." subject "." detail (RFC 3463 §2): 2/4/5, 1-3 digits, 1-3 digits.
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
  std::size_t i = 2, digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (digits == 0 || digits > 3 || i >= s.size() || s[i] != '.') return false;
  ++i;
  digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  return digits >= 1 && digits <= 3 && i == s.size();
}

// Text from a peer or an error goes into the report on one line, with no
// control bytes: a CR or LF there would end a header or forge a field.
std::string one_line(std::string_view text) {
  std::string out(text.substr(0, 900));
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return out;
}

}  // namespace

std::string status_of(std::string_view error) {
  std::size_t pos = 0;
  for (int words = 0; words < 3 && pos < error.size(); ++words) {
    auto end = error.find(' ', pos);
    auto word = error.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    if (is_status_code(word)) return std::string(word);
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return !error.empty() && error[0] == '4' ? "4.0.0" : "5.0.0";
}

std::string_view header_section(std::string_view message) {
  for (std::size_t pos = 0; pos < message.size();) {
    auto eol = message.find('\n', pos);
    if (eol == std::string_view::npos) return message;
    auto line = message.substr(pos, eol - pos);
    if (line.empty() || line == "\r") return message.substr(0, pos);
    pos = eol + 1;
  }
  return message;
}

std::string make_bounce(const bounce_info& info, const std::vector<failed_recipient>& failed,
                        std::string_view original_message) {
  const std::string boundary = info.bounce_id + "/" + info.reporting_domain;
  const std::string now = rfc5322_date(info.now);
  std::string m;
  m += "From: Mail Delivery System <MAILER-DAEMON@" + info.reporting_domain + ">\r\n";
  m += "To: <" + info.sender + ">\r\n";
  m += "Subject: Undelivered Mail Returned to Sender\r\n";
  m += "Date: " + now + "\r\n";
  m += "Message-ID: <" + info.bounce_id + "@" + info.reporting_domain + ">\r\n";
  m += "Auto-Submitted: auto-replied\r\n";  // RFC 3834: nobody answers this automatically
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + boundary + "\"\r\n";
  m += "\r\nThis is a MIME-encapsulated message.\r\n\r\n";

  m += "--" + boundary + "\r\n";
  m += "Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
  m += "This is the mail system at " + info.reporting_domain + ".\r\n\r\n";
  m += "Your message (queue id " + info.queue_id + ") could not be delivered to " +
       (failed.size() == 1 ? std::string("one recipient") : std::to_string(failed.size()) + " recipients") +
       ". This is a permanent error; the message will not be retried.\r\n\r\n";
  for (const auto& f : failed) m += "<" + f.address + ">: " + one_line(f.reason) + "\r\n";
  m += "\r\n";

  m += "--" + boundary + "\r\n";
  m += "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n";
  m += "Reporting-MTA: dns; " + info.reporting_domain + "\r\n";
  m += "X-Mailnet-Queue-ID: " + info.queue_id + "\r\n";
  m += "Arrival-Date: " + rfc5322_date(info.arrival) + "\r\n";
  for (const auto& f : failed) {
    m += "\r\nFinal-Recipient: rfc822; " + f.address + "\r\n";
    m += "Action: failed\r\n";
    m += "Status: " + f.status + "\r\n";
    if (!f.smtp_reply.empty()) m += "Diagnostic-Code: smtp; " + one_line(f.smtp_reply) + "\r\n";
    m += "Last-Attempt-Date: " + now + "\r\n";
  }
  m += "\r\n";

  m += "--" + boundary + "\r\n";
  m += "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n";
  std::string_view headers = header_section(original_message);
  m += headers;
  if (!headers.empty() && headers.back() != '\n') m += "\r\n";
  m += "\r\n--" + boundary + "--\r\n";
  return m;
}

}  // namespace mailnet::node
