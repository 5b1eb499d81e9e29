#include "common/terminal_text.hpp"

#include <cstdint>

namespace mailnet {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

void append_byte_escape(std::string& out, unsigned char c) {
  out += "\\x";
  out += hex_digits[c >> 4];
  out += hex_digits[c & 15];
}

void append_code_point_escape(std::string& out, std::uint32_t cp) {
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) out += hex_digits[(cp >> shift) & 15];
}

// The length of the well-formed UTF-8 sequence at the start of s (RFC 3629
// §4: no overlong forms, no surrogates, nothing above U+10FFFF), or 0.
std::size_t utf8_length(std::string_view s, std::uint32_t& cp) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = b(0);
  std::size_t n;
  unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) n = 2, cp = lead & 0x1F;
  else if (lead >= 0xE0 && lead <= 0xEF) n = 3, cp = lead & 0x0F;
  else if (lead >= 0xF0 && lead <= 0xF4) n = 4, cp = lead & 0x07;
  else return 0;
  if (lead == 0xE0) low = 0xA0;
  if (lead == 0xED) high = 0x9F;
  if (lead == 0xF0) low = 0x90;
  if (lead == 0xF4) high = 0x8F;
  if (s.size() < n || b(1) < low || b(1) > high) return 0;
  for (std::size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  return n;
}

// Characters a terminal acts on, or that reorder or break what it shows.
bool is_unsafe_code_point(std::uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 || cp == 0x2029;
}

void append_ascii(std::string& out, std::string_view text, std::size_t& i, newlines mode) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  if (mode == newlines::keep && c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
    out += '\n';  // CRLF ends a line like LF
    ++i;
  } else if (c == '\n') {
    out += mode == newlines::keep ? "\n" : "\\n";
  } else if (c == '\r') {
    out += "\\r";
  } else if ((c < 0x20 && c != '\t') || c == 0x7F) {
    append_byte_escape(out, c);
  } else {
    out += static_cast<char>(c);
  }
}

}  // namespace

void append_terminal_safe(std::string& out, std::string_view text, newlines mode) {
  out.reserve(out.size() + text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    // Printable ASCII in one append: the launcher echoes tens of thousands of log lines a second.
    std::size_t run = i;
    while (run < text.size() && text[run] >= 0x20 && text[run] < 0x7F) ++run;
    if (run > i) {
      out.append(text.substr(i, run - i));
      i = run - 1;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      append_ascii(out, text, i, mode);
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t n = utf8_length(text.substr(i), cp);
    if (n == 0) {
      append_byte_escape(out, c);  // not UTF-8: this byte alone, then go on
      continue;
    }
    if (is_unsafe_code_point(cp)) append_code_point_escape(out, cp);
    else out.append(text.substr(i, n));
    i += n - 1;
  }
}

std::string terminal_safe(std::string_view text, newlines mode) {
  std::string out;
  append_terminal_safe(out, text, mode);
  return out;
}

}  // namespace mailnet
