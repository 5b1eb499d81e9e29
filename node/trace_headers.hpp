// What a node adds to a message it accepts (RFC 5321 §4.4, RFC 5322 §3.6):
// a Received: line at the top, and Message-ID:/Date: when the sender left
// them out. Header scanning stops at the first empty line: bodies are not parsed.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/topology.hpp"

namespace mailnet::node {

struct header_facts {
  std::size_t received = 0;
  bool has_message_id = false;
  std::string message_id;  // the first Message-ID field's value, trimmed (at most 998 bytes)
  bool has_date = false;
};

header_facts scan_headers(std::string_view message);

// "Sun, 22 Nov 2026 03:04:05 +0000"
std::string rfc5322_date(std::chrono::system_clock::time_point when);

struct trace_info {
  std::string helo;         // what the client said in HELO/EHLO
  std::string client_ip;
  std::string by_domain;    // this node's domain
  bool esmtp = true;
  std::string queue_id;
  std::string for_address;  // empty when several recipients
  std::chrono::system_clock::time_point when;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384" when the mail came over TLS
  bool authenticated = false;  // AUTH on the submission listener: "with ESMTPSA" (RFC 3848)
};

// The lines to put in front of the message: Received:, and Message-ID:/Date:
// when facts says they are missing. Each line ends with CRLF.
std::string make_trace_headers(const trace_info& info, const header_facts& facts);

// The bytes of the first header field of trace (make_trace_headers()'s
// Received:, continuation lines included): where the node's
// Authentication-Results: goes, under its Received:.
std::size_t first_field_size(std::string_view trace);

// RFC 8601 §5: a message that comes in already carrying
// Authentication-Results: fields in this node's name (authserv_id, any case)
// would show a reader verdicts the node never gave. Removes those fields
// from the header section that starts at from; returns how many.
std::size_t remove_auth_results_of(std::string& message, std::size_t from, std::string_view authserv_id);

// The size limits.message_size applies to, at every hop alike: the message
// as it goes on the wire (each line end CRLF, a final one added; RFC 1870
// counts no dot-stuffing) without the trace lines mailnet nodes put at its
// top (their Received:, the Authentication-Results: of the same node under
// it, and the Message-ID:/Date: a node adds when the sender left them out). So a message one node took is never refused by the
// next for the network's own headers.
std::uint64_t counted_size(std::string_view message);

// At most this many bytes of a message can be such trace lines: how far past
// limits.message_size a node must read before it can tell.
std::uint64_t trace_allowance(const limits& l);

}  // namespace mailnet::node
