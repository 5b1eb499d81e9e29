// build_mime and guess_content_type from mail_client.hpp: the only launcher
// file that includes GMime.
#include <gmime/gmime.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <system_error>

#include "common/address.hpp"
#include "launcher/mail_client.hpp"
#include "common/mail/durable_file.hpp"
#include "common/mail/gmime_ptr.hpp"
#include "common/mail/mime_parse.hpp"

namespace mailnet::launcher {

namespace {

using node::gchar_ptr;
using node::gobject_ptr;

bool is_utf8(std::string_view text) { return g_utf8_validate(text.data(), static_cast<gssize>(text.size()), nullptr); }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Text a reader would recognise as text: UTF-8 without control bytes other
// than tab, line ends and form feed.
bool looks_like_text(std::string_view data) {
  if (!is_utf8(data)) return false;
  return std::none_of(data.begin(), data.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7f;
  });
}

void add_mailboxes(GMimeMessage* msg, GMimeAddressType type, const std::vector<std::string>& addresses,
                   const char* field) {
  for (const auto& a : addresses_of(addresses, field))
    g_mime_message_add_mailbox(msg, type, a.name.c_str(), a.address.c_str());
}

gobject_ptr<GMimeDataWrapper> wrap(std::string_view bytes) {
  gobject_ptr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size()));
  return gobject_ptr<GMimeDataWrapper>(
      g_mime_data_wrapper_new_with_stream(stream.get(), GMIME_CONTENT_ENCODING_DEFAULT));
}

gobject_ptr<GMimeObject> text_part(const std::string& body) {
  // Not g_mime_text_part_set_text: it converts to the smallest charset that
  // fits (latin-1 for "é"). The bytes are UTF-8 already and say so.
  gobject_ptr<GMimeTextPart> part(g_mime_text_part_new_with_subtype("plain"));
  auto* p = GMIME_PART(part.get());
  auto content = wrap(body);
  g_mime_part_set_content(p, content.get());
  g_mime_text_part_set_charset(part.get(), "utf-8");
  g_mime_part_set_content_encoding(p, g_mime_part_get_best_content_encoding(p, GMIME_ENCODING_CONSTRAINT_7BIT));
  return gobject_ptr<GMimeObject>(GMIME_OBJECT(part.release()));
}

// One attachment part: base64, its content type (guessed when not given)
// and its file name (RFC 2231 when it needs it). label names it in errors.
gobject_ptr<GMimeObject> attachment_part(const std::string& label, const std::string& name, std::string type,
                                         const std::string& data) {
  if (!is_utf8(name)) throw mail_error(label + ": file name is not UTF-8");
  if (type.empty()) type = guess_content_type(data, name);
  const auto slash = type.find('/');
  gobject_ptr<GMimePart> part(
      g_mime_part_new_with_type(type.substr(0, slash).c_str(), type.substr(slash + 1).c_str()));
  auto content = wrap(data);
  g_mime_part_set_content(part.get(), content.get());
  g_mime_object_set_disposition(GMIME_OBJECT(part.get()), GMIME_DISPOSITION_ATTACHMENT);
  g_mime_part_set_filename(part.get(), name.c_str());  // GMime writes RFC 2231 for names that need it
  g_mime_part_set_content_encoding(part.get(), GMIME_CONTENT_ENCODING_BASE64);
  return gobject_ptr<GMimeObject>(GMIME_OBJECT(part.release()));
}

gobject_ptr<GMimeObject> attachment_part(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) throw mail_error("attachment " + file.string() + ": no such file");
  if (!std::filesystem::is_regular_file(file, ec))
    throw mail_error("attachment " + file.string() + ": not a regular file");
  std::string data;
  try {
    data = node::read_whole_file(file);
  } catch (const std::system_error& e) {
    throw mail_error("attachment " + file.string() + ": " + e.code().message());
  }
  return attachment_part("attachment " + file.string(), file.filename().string(), "", data);
}

// "type/subtype" of token characters (RFC 2045 §5.1), or a mail_error naming label.
void check_content_type(const std::string& label, const std::string& type) {
  const auto token = [](std::string_view t) {
    return !t.empty() && t.size() <= 127 && std::all_of(t.begin(), t.end(), [](unsigned char c) {
      return c > 32 && c < 127 && !std::strchr("()<>@,;:\\\"/[]?=", c);
    });
  };
  const auto slash = type.find('/');
  if (slash == std::string::npos || !token(std::string_view(type).substr(0, slash)) ||
      !token(std::string_view(type).substr(slash + 1)))
    throw mail_error(label + ".content_type: not a type/subtype: '" + type + "'");
}

}  // namespace

std::string guess_content_type(std::string_view data, const std::string& file_name) {
  struct magic {
    std::string_view prefix;
    const char* type;
  };
  static constexpr magic magics[] = {
      {"\xFF\xD8\xFF", "image/jpeg"}, {"GIF87a", "image/gif"}, {"GIF89a", "image/gif"},
      {"\x89PNG\r\n\x1A\n", "image/png"}, {"%PDF-", "application/pdf"}, {"PK\x03\x04", "application/zip"},
      {"\x1F\x8B", "application/gzip"},
  };
  for (const auto& m : magics)
    if (data.substr(0, m.prefix.size()) == m.prefix) return m.type;

  static const std::pair<const char*, const char*> extensions[] = {
      {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".gif", "image/gif"},       {".png", "image/png"},
      {".pdf", "application/pdf"}, {".zip", "application/zip"}, {".gz", "application/gzip"},
      {".txt", "text/plain"}, {".csv", "text/csv"}, {".html", "text/html"}, {".htm", "text/html"},
      {".json", "application/json"}, {".xml", "application/xml"}, {".svg", "image/svg+xml"},
      {".eml", "message/rfc822"},
  };
  const std::string ext = lower(std::filesystem::path(file_name).extension().string());
  for (const auto& [e, type] : extensions)
    if (ext == e) return type;
  return looks_like_text(data) ? "text/plain" : "application/octet-stream";
}

std::string build_mime(const outgoing_mail& mail) {
  if (!is_utf8(mail.subject) || mail.subject.find_first_of("\r\n") != std::string::npos)
    throw mail_error("subject: must be one line of UTF-8 text");
  if (!is_utf8(mail.body)) throw mail_error("body: not valid UTF-8 text");
  if (mail.to.empty() && mail.cc.empty() && mail.bcc.empty()) throw mail_error("no recipient: give --to, --cc or --bcc");
  addresses_of(mail.bcc, "--bcc");  // checked here although they go in no header
  const auto from = parse_named_address(mail.from);
  if (!from) throw mail_error("--from: not a mail address: '" + mail.from + "'");
  const auto from_domain = from->address.substr(from->address.rfind('@') + 1);

  auto lock = node::lock_gmime();
  gobject_ptr<GMimeMessage> msg(g_mime_message_new(TRUE));
  add_mailboxes(msg.get(), GMIME_ADDRESS_TYPE_FROM, {mail.from}, "--from");
  add_mailboxes(msg.get(), GMIME_ADDRESS_TYPE_TO, mail.to, "--to");
  add_mailboxes(msg.get(), GMIME_ADDRESS_TYPE_CC, mail.cc, "--cc");
  g_mime_message_set_subject(msg.get(), mail.subject.c_str(), "utf-8");
  GDateTime* now = g_date_time_new_now_local();
  g_mime_message_set_date(msg.get(), now);
  g_date_time_unref(now);
  gchar_ptr id(g_mime_utils_generate_message_id(from_domain.c_str()));
  g_mime_message_set_message_id(msg.get(), id.get());

  auto body = text_part(mail.body);
  if (mail.attachments.empty() && mail.attachment_data.empty()) {
    g_mime_message_set_mime_part(msg.get(), body.get());
  } else {
    gobject_ptr<GMimeMultipart> mixed(g_mime_multipart_new_with_subtype("mixed"));
    g_mime_multipart_add(mixed.get(), body.get());
    for (const auto& file : mail.attachments) {
      auto part = attachment_part(file);
      g_mime_multipart_add(mixed.get(), part.get());
    }
    for (std::size_t i = 0; i < mail.attachment_data.size(); ++i) {
      const auto& a = mail.attachment_data[i];
      const std::string label = "attachments[" + std::to_string(i) + "]";
      if (a.name.empty()) throw mail_error(label + ".name: an attachment needs a file name");
      if (!a.content_type.empty()) check_content_type(label, a.content_type);
      auto part = attachment_part(label + ".name", a.name, a.content_type, a.data);
      g_mime_multipart_add(mixed.get(), part.get());
    }
    g_mime_message_set_mime_part(msg.get(), GMIME_OBJECT(mixed.get()));
  }

  std::unique_ptr<GMimeFormatOptions, decltype(&g_mime_format_options_free)> options(g_mime_format_options_new(),
                                                                                     &g_mime_format_options_free);
  g_mime_format_options_set_newline_format(options.get(), GMIME_NEWLINE_FORMAT_DOS);  // CRLF, as on the wire
  gobject_ptr<GMimeStream> out(g_mime_stream_mem_new());
  if (g_mime_object_write_to_stream(GMIME_OBJECT(msg.get()), options.get(), out.get()) < 0)
    throw mail_error("cannot write the MIME message");
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
  return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

}  // namespace mailnet::launcher
