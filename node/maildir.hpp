// Per-user Maildirs under <domain>/mail/<mailbox>/{tmp,new,cur}.
#pragma once

#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/mail/durable_file.hpp"
#include "common/mail/maildir_read.hpp"

namespace mailnet::node {

// A message as a Maildir stores it (maildir(5), as qmail, Postfix and
// Dovecot do): each CRLF of the SMTP wire form becomes LF. A bare LF stays
// LF, and a lone CR is kept as a byte of content, as Postfix keeps it (it
// ends a record only at LF and strips one CR before it). Readers (mutt,
// Python's mailbox, Dovecot) take the file as is; the queue keeps the wire
// form, and every size limit is counted on the wire form (counted_size()),
// never on the file.
std::string maildir_form(std::string_view wire);

// A mailbox's folder for quarantined mail (Maildir++: <mailbox>/.Junk/{tmp,new,cur}),
// named to the store as "<mailbox>/.Junk": the name the readers look for.
inline constexpr std::string_view junk_folder = junk_maildir;

class maildir_store {
 public:
  explicit maildir_store(std::filesystem::path mail_root) : root_(std::move(mail_root)) {}

  // Creates the three folders. Throws std::system_error, or
  // std::invalid_argument for a mailbox name that could leave the root.
  void ensure(std::string_view mailbox) const;

  // message: in Maildir form (maildir_form()), as it is written.
  // A delivery, staged: the message written in tmp/, to be published (and
  // made durable in a shared sync) together with other files (common/mail/durable_file.hpp).
  staged_file stage(std::string_view mailbox, std::string_view message) const;

  // One message for several mailboxes, stored once (issue 16: 100 copies of
  // a 1.37 MB message were 137 MB): written in the first mailbox's tmp/, then
  // hard-linked under the same name into every other one's tmp/, to be
  // published into each new/ as usual. Where a link cannot be made (another
  // file system) that mailbox gets a copy. All staged, or none (thrown).
  std::vector<staged_file> stage_shared(const std::vector<std::string>& mailboxes, std::string_view message) const;

  std::filesystem::path folder(std::string_view mailbox) const;  // checked

 private:
  std::filesystem::path checked_folder(std::string_view mailbox) const;  // folder(), made if not known yet
  template <typename Make>
  staged_file retry_once(std::string_view mailbox, Make make) const;  // again after ensure() on ENOENT
  staged_file link_or_copy(const std::filesystem::path& first, const std::filesystem::path& dir,
                           const std::filesystem::path& name, std::string_view message) const;

  std::filesystem::path root_;
  // Mailboxes whose folders are known to exist: stage() skips three stat()s
  // and path builds per message (bench/README.md, "profile"). Disk-pool
  // threads share it, hence the mutex.
  mutable std::mutex known_mutex_;
  mutable std::set<std::string, std::less<>> known_;
};

}  // namespace mailnet::node
