// Per-user Maildirs under <domain>/mail/<mailbox>/{tmp,new,cur}.
#pragma once

#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "node/durable_file.hpp"

namespace mailnet::node {

class maildir_store {
 public:
  explicit maildir_store(std::filesystem::path mail_root) : root_(std::move(mail_root)) {}

  // Creates the three folders. Throws std::system_error, or
  // std::invalid_argument for a mailbox name that could leave the root.
  void ensure(std::string_view mailbox) const;

  // A delivery, staged: the message written in tmp/, to be published (and
  // made durable in a shared sync) together with other files (durable_file.hpp).
  staged_file stage(std::string_view mailbox, std::string_view message) const;

  std::filesystem::path folder(std::string_view mailbox) const;  // checked

 private:
  std::filesystem::path root_;
  // Mailboxes whose folders are known to exist: stage() skips three stat()s
  // and path builds per message (bench/README.md, "profile"). Disk-pool
  // threads share it, hence the mutex.
  mutable std::mutex known_mutex_;
  mutable std::set<std::string, std::less<>> known_;
};

}  // namespace mailnet::node
