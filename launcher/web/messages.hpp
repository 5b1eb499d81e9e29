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
#include <memory>
#include <unordered_map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launcher/web/web_api.hpp"

namespace mailnet::launcher::web {

struct message_query {
  std::string domain, user, q;  // empty: any
  std::string folder;           // empty: both; "INBOX" or "Junk" (the DMARC quarantine, <user>/.Junk)
  std::size_t limit = 100;
};

// The parts of a message the list needs, read once per file and kept (a
// Maildir file never changes under its name). The links of one message in
// several users' Maildirs share one.
struct message_summary {
  std::string id, from, to, subject, date, message_id;
  std::uintmax_t size = 0;
  std::vector<std::string> attachments;
  bool bounce = false;  // a delivery status notification: From MAILER-DAEMON or multipart/report
  std::string haystack;  // subject, from, to and text, ASCII-lowered: what q searches
  long long seconds = 0, micros = 0;  // the delivery time in the name
};

class message_store {
 public:
  explicit message_store(std::filesystem::path run_dir) : dir_(std::move(run_dir)) {}
  const std::filesystem::path& dir() const { return dir_; }

  // GET /api/v1/messages: {"total": matched, "count": returned, "messages": [...]};
  // each message's "folder" is "INBOX" or "Junk".
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

  // Brings the index of every Maildir up to date (what a listing of all does
  // first): files new since the last look are read, removed ones dropped.
  // The web server runs it on its worker thread as soon as it starts.
  void refresh();
  std::size_t indexed() const;  // files in the index (each link once)

  // The files named id (without flags) in every user's Maildir, by path.
  std::vector<std::filesystem::path> locate(const std::string& id) const;
  // The message's bytes, read from the first of files (its links, found by
  // locate), never through a link; nothing when it is not there (any more).
  static std::optional<std::string> load(const std::vector<std::filesystem::path>& files);

 private:
  // One new/ or cur/ folder: its files by name, each with its inode (from
  // the directory entry: no stat per file) and what was read of it. The
  // folder is read again only when its mtime or inode changed, or when the
  // last look came less than a second after its mtime (a file linked in the
  // same clock tick leaves the mtime as it was).
  struct file_entry {
    std::uint64_t inode = 0;
    std::shared_ptr<const message_summary> summary;
    bool unread = false;  // this link: in new/, or in cur/ without the S (seen) flag
    std::string json;  // its object in a listing, as written there; made when first listed
  };
  struct folder_index {
    std::uint64_t inode = 0;
    long long mtime_ns = -1;
    bool settled = false;  // mtime and inode unchanged mean nothing changed
    std::unordered_map<std::string, file_entry> files;
  };
  struct mailbox_index {  // one user's Maildir
    std::string domain, user;
    folder_index sub[4];  // new/, cur/, .Junk/new/, .Junk/cur/
    bool seen = false;
  };
  static bool junk_sub(std::size_t i) { return i >= 2; }
  mailbox_index& refresh_mailbox(const std::filesystem::path& maildir, const std::string& domain,
                                 const std::string& user);
  void refresh_folder(folder_index& f, const std::filesystem::path& folder);
  std::shared_ptr<const message_summary> read_summary(const std::filesystem::path& file, std::uint64_t inode);

  std::filesystem::path dir_;
  std::unordered_map<std::string, mailbox_index> mailboxes_;  // by Maildir path
  // What was read of each file, by id and inode: the links of one message
  // are read once. Dropped when no folder holds it any more.
  std::unordered_map<std::string, std::weak_ptr<const message_summary>> read_;
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
