// The delivered messages of a run folder, as the web API shows them: a list
// (filtered, searched, newest first), one message's detail, its raw bytes,
// one attachment's decoded bytes, and its removal. Plain files and GMime
// (through mime_parse), no HTTP library and no event loop: web_messages.cpp
// runs these on a worker thread, off the launcher's event loop.
//
// A message's id is its Maildir file name without the ":2,…" flags. A
// message to several users of one node is one file linked under that name
// into each of their Maildirs: one id, listed once per user.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <unordered_map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launcher/web/web_api.hpp"

namespace mailnet::launcher::web {

struct message_query {
  std::string domain, user, q;  // empty: any
  std::size_t limit = 100;
};

// The parts of a message the list needs, read once per file and kept (a
// Maildir file never changes under its name).
struct message_summary {
  std::string id, domain, user, from, to, subject, date, message_id;
  std::uintmax_t size = 0;
  std::vector<std::string> attachments;
  bool unread = false;  // in new/, or in cur/ without the S (seen) flag
  bool bounce = false;  // a delivery status notification: From MAILER-DAEMON or multipart/report
  std::string haystack;  // subject, from, to and text, ASCII-lowered: what q searches
  long long seconds = 0, micros = 0;  // the delivery time in the name
};

class message_store {
 public:
  explicit message_store(std::filesystem::path run_dir) : dir_(std::move(run_dir)) {}
  const std::filesystem::path& dir() const { return dir_; }

  // GET /api/v1/messages: {"total": matched, "count": returned, "messages": [...]}.
  response list(const message_query& q);
  // GET /api/v1/messages/{id}[/raw|/attachments/{n}], DELETE /api/v1/messages/{id}.
  response detail(const std::string& id);
  response raw(const std::string& id);
  // GET /api/v1/messages/{id}/html: the HTML part alone, as a sandboxed page
  // that runs no script and loads nothing (see mail_html_policy).
  response html(const std::string& id);
  // GET /api/v1/mailboxes: every domain and user (the topology's users and
  // any other Maildir), each with its message and unread counts.
  response mailboxes();
  response attachment(const std::string& id, const std::string& n);
  // Removes every link of the message (all its users), or only those of one
  // domain and/or user when given.
  response remove(const std::string& id, const std::string& domain, const std::string& user);

  // The files named id (without flags) in every user's Maildir, by path.
  std::vector<std::filesystem::path> locate(const std::string& id) const;
  // The message's bytes, read from the first of files (its links, found by
  // locate), never through a link; nothing when it is not there (any more).
  static std::optional<std::string> load(const std::vector<std::filesystem::path>& files);

 private:
  const message_summary* summary_of(const std::filesystem::path& file, const std::string& domain,
                                    const std::string& user);

  struct cached {
    message_summary summary;
    bool seen = false;
  };
  std::filesystem::path dir_;
  std::unordered_map<std::string, cached> cache_;  // by path
};

// The policy a mail's HTML is served with: a sandbox without scripts, nothing
// fetched (inline styles and data: images only), framed by the dashboard only.
inline constexpr const char* mail_html_policy =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'";

// Unread in Maildir terms: the file is in new/, or its ":2,FLAGS" lack S.
bool is_unread(const std::filesystem::path& file);

// A delivery status notification (a bounce): From MAILER-DAEMON, or a
// top-level Content-Type multipart/report.
bool is_bounce(const std::string& from, const nlohmann::json& header_fields);

// The id of a Maildir file name: the name without its ":2,FLAGS".
std::string message_id_of(const std::string& file_name);

// A file name safe in a Content-Disposition header: letters, digits, '.',
// '-', '_' kept, everything else '_', no leading dot, at most 100 bytes;
// "attachment-N" when nothing is left.
std::string safe_file_name(const std::string& name, std::size_t n);

// A content type as "type/subtype" of token characters, lowered; anything
// else (a header injection, a parameter) is application/octet-stream.
std::string safe_content_type(const std::string& type);

}  // namespace mailnet::launcher::web
