// Delivery status notifications (RFC 3464): what goes back to a sender when
// mail cannot be delivered. Pure: builds the message text, sends nothing.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::node {

struct failed_recipient {
  std::string address;
  std::string status;      // enhanced status code, e.g. "5.1.2"
  std::string reason;      // one line for a person
  std::string smtp_reply;  // the remote server's reply, when there was one
};

struct bounce_info {
  std::string reporting_domain;  // this node
  std::string sender;            // the original MAIL FROM, who gets the bounce
  std::string queue_id;          // the original message's id
  std::string bounce_id;         // for the bounce's Message-ID
  std::chrono::system_clock::time_point arrival;
  std::chrono::system_clock::time_point now;
};

// The whole DSN message, CRLF line ends: a readable text part, the
// message/delivery-status part and the original message's headers.
std::string make_bounce(const bounce_info& info, const std::vector<failed_recipient>& failed,
                        std::string_view original_message);

// The enhanced status code in an error text ("550 5.1.1 <x>: …" → "5.1.1",
// "5.1.2 Domain …" → "5.1.2"); "5.0.0" when a 5xx reply carries none.
std::string status_of(std::string_view error);

// The headers of a message: everything before the first empty line.
std::string_view header_section(std::string_view message);

}  // namespace mailnet::node
