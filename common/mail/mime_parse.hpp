// A delivered message read back as plain values: decoded headers, the text
// body and the attachments, decoded. GMime does the parsing; this header keeps
// GMime's own headers out of everyone else's translation units. Malformed
// MIME never throws: what could not be read is listed in `errors`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::node {

struct mime_limits {
  int max_depth = 16;                          // multipart/message levels below the top
  std::uint64_t max_total_bytes = 64u << 20;   // decoded attachment bytes kept, in all
  std::size_t max_attachments = 256;
};

struct mime_attachment {
  std::string file_name;     // as the sender named it (decoded, unsanitised; may be empty)
  std::string content_type;  // "image/jpeg"
  std::string data;          // decoded bytes
};

struct parsed_mail {
  std::string date, from, to, cc, subject, message_id;  // decoded to UTF-8
  std::string text;                                      // the first text/plain body, UTF-8
  std::string html;                                      // the first text/html body, UTF-8 (as data: never rendered here)
  std::vector<mime_attachment> attachments;
  // The content types of the parts read as bodies rather than attachments
  // ("text/plain", "text/html"), in order: what to say when none is saved.
  std::vector<std::string> body_parts;
  // Problems that made a part (or everything) unreadable. When structure_ok
  // is false the MIME tree itself is broken and attachments is left empty,
  // since a truncated part would be saved as if it were whole.
  std::vector<std::string> errors;
  bool structure_ok = true;
};

parsed_mail parse_mail(std::string_view message, const mime_limits& limits = {});

// GMime needs g_mime_init() once per process, and it promises thread safety
// only for its charset/iconv/utils functions, not for parsing or building.
// Every use of GMime holds this lock; the first call initialises GMime.
std::unique_lock<std::mutex> lock_gmime();

// Base64 (RFC 2045 §6.8) as mail clients write it: the alphabet, line breaks
// and spaces, '=' padding only at the end. The padding may be left out (as
// some clients do), so 2 or 3 symbols may end the text; a lone one cannot be
// decoded. nullopt for anything else: a damaged attachment is reported, not
// saved as if it were the original.
std::optional<std::string> decode_base64(std::string_view text);
inline bool is_valid_base64(std::string_view text) { return decode_base64(text).has_value(); }

}  // namespace mailnet::node
