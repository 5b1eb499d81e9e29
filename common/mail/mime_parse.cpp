#include "common/mail/mime_parse.hpp"

#include <gmime/gmime.h>

#include "common/mail/gmime_ptr.hpp"
#include "common/mail/mime_comments.hpp"

#include <memory>

namespace mailnet::node {

namespace {


std::string text_of(const char* s) { return s ? std::string(s) : std::string(); }

// The parser reports what it tolerated; these codes mean the tree it built
// is not the tree the sender wrote (cut short, boundaries missing, bombs).
bool breaks_structure(GMimeParserWarning code) {
  switch (code) {
    case GMIME_WARN_TRUNCATED_MESSAGE:
    case GMIME_WARN_MALFORMED_MULTIPART:
    case GMIME_WARN_MALFORMED_MESSAGE:
    case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
    case GMIME_CRIT_NESTING_OVERFLOW:
    case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT: return true;
    default: return false;
  }
}

const char* describe(GMimeParserWarning code) {
  switch (code) {
    case GMIME_WARN_TRUNCATED_MESSAGE: return "truncated message (a multipart boundary is never closed)";
    case GMIME_WARN_MALFORMED_MULTIPART: return "malformed multipart (no parts found)";
    case GMIME_WARN_MALFORMED_MESSAGE: return "malformed message";
    case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY: return "multipart without a boundary parameter";
    case GMIME_CRIT_NESTING_OVERFLOW: return "MIME nesting too deep for the parser";
    case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT: return "part without headers or content";
    default: return "parser warning";
  }
}

void on_parser_warning(gint64 offset, GMimeParserWarning code, const gchar*, gpointer user_data) {
  if (!breaks_structure(code)) return;
  auto& out = *static_cast<parsed_mail*>(user_data);
  // A multipart whose closing boundary never comes (hand-written mail often
  // forgets it) still holds whole parts, as mail readers show them: they
  // are kept, and the cut is reported. Anything else voids the tree.
  if (code != GMIME_WARN_TRUNCATED_MESSAGE) out.structure_ok = false;
  std::string text = describe(code);
  if (offset >= 0) text += " at byte " + std::to_string(offset);
  for (const auto& e : out.errors)
    if (e == text) return;
  out.errors.push_back(std::move(text));
}

// The encoded bytes as they stand in the message, before any decoding.
std::string raw_content(GMimeDataWrapper* content) {
  std::string raw;
  GMimeStream* stream = g_mime_data_wrapper_get_stream(content);
  if (!stream) return raw;
  g_mime_stream_reset(stream);
  char buf[16384];
  for (;;) {
    ssize_t n = g_mime_stream_read(stream, buf, sizeof buf);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  g_mime_stream_reset(stream);
  return raw;
}

class walker {
 public:
  walker(const mime_limits& limits, parsed_mail& out) : limits_(limits), out_(out) {}

  void object(GMimeObject* obj, int depth) {
    if (!obj) return;
    if (depth > limits_.max_depth) {
      out_.structure_ok = false;
      out_.errors.push_back("MIME nesting deeper than " + std::to_string(limits_.max_depth) + " levels");
      return;
    }
    if (GMIME_IS_MULTIPART(obj)) {
      auto* multipart = GMIME_MULTIPART(obj);
      for (int i = 0; i < g_mime_multipart_get_count(multipart) && out_.structure_ok; ++i)
        object(g_mime_multipart_get_part(multipart, i), depth + 1);
    } else if (GMIME_IS_MESSAGE_PART(obj)) {
      // A forwarded message: its attachments are attachments too.
      GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
      if (inner) object(g_mime_message_get_mime_part(inner), depth + 1);
    } else if (GMIME_IS_PART(obj)) {
      leaf(GMIME_PART(obj));
    }
  }

 private:
  void leaf(GMimePart* part) {
    auto* obj = GMIME_OBJECT(part);
    const std::string name = text_of(g_mime_part_get_filename(part));
    if (!g_mime_part_is_attachment(part) && name.empty()) {
      GMimeContentType* type = g_mime_object_get_content_type(obj);
      gchar_ptr mime_type(g_mime_content_type_get_mime_type(type));
      out_.body_parts.push_back(text_of(mime_type.get()));
      if (out_.text.empty() && GMIME_IS_TEXT_PART(obj) && g_mime_content_type_is_type(type, "text", "plain")) {
        gchar_ptr text(g_mime_text_part_get_text(GMIME_TEXT_PART(obj)));
        out_.text = text_of(text.get());
        // Line ends as a reader's terminal wants them, not as on the wire.
        std::erase_if(out_.text, [](char c) { return c == '\r'; });
      }
      if (out_.html.empty() && GMIME_IS_TEXT_PART(obj) && g_mime_content_type_is_type(type, "text", "html")) {
        gchar_ptr html(g_mime_text_part_get_text(GMIME_TEXT_PART(obj)));
        out_.html = text_of(html.get());
        std::erase_if(out_.html, [](char c) { return c == '\r'; });
      }
      return;
    }
    const std::string label = "attachment " + (name.empty() ? std::string("(unnamed)") : "'" + name + "'");
    if (out_.attachments.size() >= limits_.max_attachments) {
      out_.errors.push_back(label + ": more than " + std::to_string(limits_.max_attachments) + " attachments");
      return;
    }
    mime_attachment a;
    a.file_name = name;
    gchar_ptr type(g_mime_content_type_get_mime_type(g_mime_object_get_content_type(obj)));
    a.content_type = text_of(type.get());
    if (GMimeDataWrapper* content = g_mime_part_get_content(part)) {
      // Base64 is decoded here, not by GMime: its decoder skips what it does
      // not know and drops an unpadded last group.
      if (g_mime_part_get_content_encoding(part) == GMIME_CONTENT_ENCODING_BASE64) {
        auto data = decode_base64(raw_content(content));
        if (!data) {
          out_.errors.push_back(label + ": invalid base64");
          return;
        }
        a.data = std::move(*data);
      } else {
        gobject_ptr<GMimeStream> decoded(g_mime_stream_mem_new());
        if (g_mime_data_wrapper_write_to_stream(content, decoded.get()) < 0) {
          out_.errors.push_back(label + ": cannot decode");
          return;
        }
        GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(decoded.get()));
        a.data.assign(reinterpret_cast<const char*>(bytes->data), bytes->len);
      }
    }
    if (total_ + a.data.size() > limits_.max_total_bytes) {
      out_.errors.push_back(label + ": attachments exceed " + std::to_string(limits_.max_total_bytes) + " bytes");
      return;
    }
    total_ += a.data.size();
    out_.attachments.push_back(std::move(a));
  }

  const mime_limits& limits_;
  parsed_mail& out_;
  std::uint64_t total_ = 0;
};

}  // namespace

std::unique_lock<std::mutex> lock_gmime() {
  static std::mutex mutex;
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
  return std::unique_lock(mutex);
}

std::optional<std::string> decode_base64(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 4 * 3);
  std::uint32_t bits = 0;
  std::size_t symbols = 0, padding = 0;
  for (unsigned char c : text) {
    if (c == '\r' || c == '\n' || c == ' ' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+' ? 62 : c == '/' ? 63 : -1;
    if (v < 0 || padding > 0) return std::nullopt;  // outside the alphabet, or data after the padding
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    if (++symbols % 4 == 0) {
      out += static_cast<char>((bits >> 16) & 0xFF);
      out += static_cast<char>((bits >> 8) & 0xFF);
      out += static_cast<char>(bits & 0xFF);
    }
  }
  const std::size_t tail = symbols % 4;  // 0, 2 or 3 symbols after the last full group
  if (tail == 1 || padding > 2 || (padding > 0 && (tail + padding) % 4 != 0)) return std::nullopt;
  if (tail == 2) out += static_cast<char>((bits >> 4) & 0xFF);
  if (tail == 3) {
    out += static_cast<char>((bits >> 10) & 0xFF);
    out += static_cast<char>((bits >> 2) & 0xFF);
  }
  return out;
}

parsed_mail parse_mail(std::string_view message, const mime_limits& limits) {
  parsed_mail out;
  // GMime misreads comments in these fields (mime_comments.hpp): read the
  // message as it would be without them.
  const auto without_comments = without_mime_comments(message);
  if (without_comments) message = *without_comments;
  auto lock = lock_gmime();
  gobject_ptr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(message.data(), message.size()));
  gobject_ptr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  std::unique_ptr<GMimeParserOptions, decltype(&g_mime_parser_options_free)> options(g_mime_parser_options_new(),
                                                                                     &g_mime_parser_options_free);
  g_mime_parser_options_set_warning_callback(options.get(), &on_parser_warning, &out);
  gobject_ptr<GMimeMessage> msg(g_mime_parser_construct_message(parser.get(), options.get()));
  if (!msg) {
    out.structure_ok = false;
    out.errors.push_back("not a message: no header block");
    return out;
  }
  auto addresses = [](InternetAddressList* list) {
    if (!list || internet_address_list_length(list) == 0) return std::string();
    gchar_ptr text(internet_address_list_to_string(list, nullptr, FALSE));
    return text_of(text.get());
  };
  out.from = addresses(g_mime_message_get_from(msg.get()));
  out.to = addresses(g_mime_message_get_to(msg.get()));
  out.cc = addresses(g_mime_message_get_cc(msg.get()));
  out.subject = text_of(g_mime_message_get_subject(msg.get()));
  out.message_id = text_of(g_mime_message_get_message_id(msg.get()));
  out.date = text_of(g_mime_object_get_header(GMIME_OBJECT(msg.get()), "Date"));
  if (!out.structure_ok) return out;  // the parser already said the tree is broken

  walker walk(limits, out);
  walk.object(g_mime_message_get_mime_part(msg.get()), 0);
  if (!out.structure_ok) out.attachments.clear();
  return out;
}

}  // namespace mailnet::node
