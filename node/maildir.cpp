#include "node/maildir.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "common/private_files.hpp"
#include "node/durable_file.hpp"

namespace mailnet::node {

std::filesystem::path maildir_store::folder(std::string_view mailbox) const {
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
  const std::filesystem::path box = folder(mailbox).filename();
  // 0700 each, made or checked one by one without following a link: a
  // Maildir planted as a link to another user's folder is refused.
  for (const char* sub : {"tmp", "new", "cur"})
    make_private_folders(root_.parent_path(), root_.filename() / box / sub);
  std::lock_guard lock(known_mutex_);
  known_.emplace(mailbox);
}

staged_file maildir_store::stage(std::string_view mailbox, std::string_view message) const {
  auto dir = folder(mailbox);
  bool known;
  {
    std::lock_guard lock(known_mutex_);
    known = known_.find(mailbox) != known_.end();
  }
  if (!known) ensure(mailbox);  // users may be unlisted (require_known_users off)
  std::string name = unique_name() + ".mailnet";
  try {
    return stage_file(dir / "tmp" / name, dir / "new" / name, message, false, false);
  } catch (const std::system_error& e) {
    if (!known || e.code().value() != ENOENT) throw;
    // The folders were removed behind our back: make them again, once.
    ensure(mailbox);
    return stage_file(dir / "tmp" / name, dir / "new" / name, message, false, false);
  }
}

}  // namespace mailnet::node
