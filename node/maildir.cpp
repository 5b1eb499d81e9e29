#include "node/maildir.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fcntl.h>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

#include "common/private_files.hpp"
#include "common/mail/durable_file.hpp"

namespace mailnet::node {

std::string maildir_form(std::string_view wire) {
  std::string out;
  out.reserve(wire.size());
  for (std::size_t pos = 0; pos < wire.size();) {
    const auto crlf = wire.find("\r\n", pos);
    if (crlf == std::string_view::npos) {
      out.append(wire.substr(pos));
      break;
    }
    out.append(wire.substr(pos, crlf - pos));
    out += '\n';
    pos = crlf + 2;
  }
  return out;
}

std::filesystem::path maildir_store::folder(std::string_view mailbox) const {
  // "<mailbox>/.Junk": that one subfolder, below a mailbox name checked as any other.
  if (const auto slash = mailbox.find('/'); slash != std::string_view::npos) {
    if (mailbox.substr(slash + 1) != junk_folder)
      throw std::invalid_argument("mailbox name not allowed: " + std::string(mailbox));
    return folder(mailbox.substr(0, slash)) / std::string(junk_folder);
  }
  // Names come from the topology or the SMTP allow-list already; check again
  // here, where the path is made, so that no caller can escape the root.
  bool ok = !mailbox.empty() && mailbox.size() <= 64 && mailbox.front() != '.' &&
            std::all_of(mailbox.begin(), mailbox.end(), [](unsigned char c) {
              return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
            });
  if (!ok) throw std::invalid_argument("mailbox name not allowed: " + std::string(mailbox));
  return root_ / std::string(mailbox);
}

void maildir_store::ensure(std::string_view mailbox) const {
  const std::filesystem::path box = folder(mailbox).lexically_relative(root_);  // "rey", or "rey/.Junk"
  // 0700 each, made or checked one by one without following a link: a
  // Maildir planted as a link to another user's folder is refused.
  for (const char* sub : {"tmp", "new", "cur"})
    make_private_folders(root_.parent_path(), root_.filename() / box / sub);
  // A Maildir++ subfolder holds an empty file "maildirfolder" (Dovecot and
  // Courier look for it): made, or taken as it is, 0600 like every file of
  // the run folder and never through a link.
  if (box.filename() == std::filesystem::path(junk_folder)) {
    const int fd = open_private_file(root_ / box / "maildirfolder", O_WRONLY | O_CREAT);
    ::close(fd);
  }
  std::lock_guard lock(known_mutex_);
  known_.emplace(mailbox);
}

std::filesystem::path maildir_store::checked_folder(std::string_view mailbox) const {
  auto dir = folder(mailbox);
  bool known;
  {
    std::lock_guard lock(known_mutex_);
    known = known_.find(mailbox) != known_.end();
  }
  if (!known) ensure(mailbox);  // users may be unlisted (require_known_users off)
  return dir;
}

template <typename Make>
staged_file maildir_store::retry_once(std::string_view mailbox, Make make) const {
  try {
    return make();
  } catch (const std::system_error& e) {
    if (e.code().value() != ENOENT) throw;
    // The folders were removed behind our back: make them again, once.
    ensure(mailbox);
    return make();
  }
}

staged_file maildir_store::stage(std::string_view mailbox, std::string_view message) const {
  auto dir = checked_folder(mailbox);
  std::string name = unique_name() + ".mailnet";
  return retry_once(mailbox, [&] { return stage_file(dir / "tmp" / name, dir / "new" / name, message, false, false); });
}

std::vector<staged_file> maildir_store::stage_shared(const std::vector<std::string>& mailboxes,
                                                     std::string_view message) const {
  std::vector<staged_file> staged;
  if (mailboxes.empty()) return staged;
  try {
    staged.push_back(stage(mailboxes.front(), message));
    const auto first = staged.front().tmp;
    const auto name = first.filename();
    for (std::size_t i = 1; i < mailboxes.size(); ++i) {
      auto dir = checked_folder(mailboxes[i]);
      staged.push_back(retry_once(mailboxes[i], [&] { return link_or_copy(first, dir, name, message); }));
    }
  } catch (...) {
    discard(staged);
    throw;
  }
  return staged;
}

staged_file maildir_store::link_or_copy(const std::filesystem::path& first, const std::filesystem::path& dir,
                                        const std::filesystem::path& name, std::string_view message) const {
  auto tmp = dir / "tmp" / name;
  // One more name for the same file in this Maildir's tmp/: it is published
  // into new/ like any copy, and the file's sync covers all its names.
  if (::link(first.c_str(), tmp.c_str()) == 0) return staged_file{std::move(tmp), dir / "new" / name, false};
  // Another file system (EXDEV), one that forbids links (EPERM), or too many
  // links to one file (EMLINK): a copy of its own.
  if (errno != EXDEV && errno != EPERM && errno != EMLINK)
    throw std::system_error(errno, std::generic_category(), "link " + tmp.string());
  return stage_file(std::move(tmp), dir / "new" / name, message, false, false);
}

}  // namespace mailnet::node
