// RFC 5321 §4.1.2 paths and mailboxes, parsed without sockets.
// The parser is strict on purpose: what it accepts may become a folder name
// or be copied into a header, so control bytes and folder tricks never pass.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailnet {

struct mailbox {
  std::string local;   // as written, without quotes for a quoted local part
  std::string domain;  // lower case, no trailing dot
  bool quoted = false;

  std::string to_string() const;  // local@domain (re-quoted if needed)
};

enum class address_error {
  none,
  missing_brackets,  // not <...>
  control_bytes,     // NUL, CR, LF or other control byte
  bad_syntax,        // anything else malformed
  too_long,          // local part > 64, domain > 255, path > 256 (RFC 5321 §4.5.3.1)
  address_literal,   // [1.2.3.4] domains are not routed in mailnet
};

struct path_result {
  address_error error = address_error::none;
  bool null_path = false;  // "<>"
  mailbox box;             // valid when !null_path and no error
  std::string_view rest;   // what follows '>' (the ESMTP parameters)
};

// Parses "<local@domain> PARAMS" (leading spaces allowed before '<').
// A source route (<@a,@b:user@d>) is accepted and ignored, RFC 5321 §4.1.2.
path_result parse_path(std::string_view text);

// Parses a bare address "local@domain" (for command-line tools).
std::optional<mailbox> parse_mailbox(std::string_view text);

// A short text for the reply to an address_error.
std::string_view describe(address_error e);

}  // namespace mailnet
