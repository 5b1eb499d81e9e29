#include "common/address.hpp"

#include <algorithm>
#include <cctype>

#include "common/topology.hpp"

namespace mailnet {

namespace {

bool is_atext(unsigned char c) {
  if (std::isalnum(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '/': case '=': case '?': case '^': case '_': case '`': case '{': case '|': case '}': case '~':
      return true;
    default:
      return false;
  }
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// Dot-string: atoms separated by single dots.
bool is_dot_string(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  char prev = 0;
  for (char ch : s) {
    if (ch == '.' && prev == '.') return false;
    if (ch != '.' && !is_atext(static_cast<unsigned char>(ch))) return false;
    prev = ch;
  }
  return true;
}

// Splits local@domain; handles a quoted local part, whose '@' does not count.
address_error split_mailbox(std::string_view text, mailbox& out) {
  std::size_t at = 0;
  if (!text.empty() && text.front() == '"') {
    std::string local;
    std::size_t i = 1;
    bool closed = false;
    for (; i < text.size(); ++i) {
      char c = text[i];
      if (c == '\\') {
        if (++i >= text.size()) return address_error::bad_syntax;
        local += text[i];
      } else if (c == '"') {
        closed = true;
        ++i;
        break;
      } else {
        local += c;
      }
    }
    if (!closed || i >= text.size() || text[i] != '@') return address_error::bad_syntax;
    out.local = local;
    out.quoted = true;
    at = i;
  } else {
    at = text.rfind('@');
    if (at == std::string_view::npos) return address_error::bad_syntax;
    out.local = std::string(text.substr(0, at));
    if (!is_dot_string(out.local)) return address_error::bad_syntax;
  }
  if (out.local.empty()) return address_error::bad_syntax;
  if (out.local.size() > 64) return address_error::too_long;
  std::string_view domain = text.substr(at + 1);
  if (!domain.empty() && domain.front() == '[') return address_error::address_literal;
  if (domain.size() > 255) return address_error::too_long;
  std::string d(domain);
  std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!d.empty() && d.back() == '.') d.pop_back();
  if (!is_valid_domain_name(d)) return address_error::bad_syntax;
  out.domain = std::move(d);
  return address_error::none;
}

}  // namespace

std::string mailbox::to_string() const {
  if (!quoted) return local + "@" + domain;
  std::string q = "\"";
  for (char c : local) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"@" + domain;
}

path_result parse_path(std::string_view text) {
  path_result r;
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (text.empty() || text.front() != '<') {
    r.error = has_control(text) ? address_error::control_bytes : address_error::missing_brackets;
    return r;
  }
  // Find the closing '>' that is not inside a quoted local part.
  std::size_t close = std::string_view::npos;
  bool in_quote = false;
  for (std::size_t i = 1; i < text.size(); ++i) {
    char c = text[i];
    if (in_quote && c == '\\') { ++i; continue; }
    if (c == '"') in_quote = !in_quote;
    else if (c == '>' && !in_quote) { close = i; break; }
  }
  if (close == std::string_view::npos) {
    r.error = has_control(text) ? address_error::control_bytes : address_error::missing_brackets;
    return r;
  }
  std::string_view inner = text.substr(1, close - 1);
  r.rest = text.substr(close + 1);
  if (has_control(inner)) {
    r.error = address_error::control_bytes;
    return r;
  }
  if (inner.size() > 254) {  // the path is at most 256 octets with its brackets
    r.error = address_error::too_long;
    return r;
  }
  if (inner.empty()) {
    r.null_path = true;
    return r;
  }
  if (inner.front() == '@') {  // source route: "@a,@b:" — ignored
    auto colon = inner.find(':');
    if (colon == std::string_view::npos) {
      r.error = address_error::bad_syntax;
      return r;
    }
    inner.remove_prefix(colon + 1);
  }
  r.error = split_mailbox(inner, r.box);
  return r;
}

std::optional<mailbox> parse_mailbox(std::string_view text) {
  mailbox box;
  if (has_control(text) || split_mailbox(text, box) != address_error::none) return std::nullopt;
  return box;
}

std::string_view describe(address_error e) {
  switch (e) {
    case address_error::none: return "ok";
    case address_error::missing_brackets: return "address must be enclosed in <>";
    case address_error::control_bytes: return "control characters are not allowed in addresses";
    case address_error::bad_syntax: return "address syntax error";
    case address_error::too_long: return "address too long";
    case address_error::address_literal: return "address literals are not routed here";
  }
  return "address error";
}

}  // namespace mailnet
