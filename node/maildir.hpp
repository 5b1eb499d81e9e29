// Per-user Maildirs under <domain>/mail/<mailbox>/{tmp,new,cur}.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace mailnet::node {

class maildir_store {
 public:
  explicit maildir_store(std::filesystem::path mail_root) : root_(std::move(mail_root)) {}

  // Creates the three folders. Throws std::system_error, or
  // std::invalid_argument for a mailbox name that could leave the root.
  void ensure(std::string_view mailbox) const;

  // Blocking and durable (qmail's protocol): returns the file in new/.
  std::filesystem::path deliver(std::string_view mailbox, std::string_view message) const;

  std::filesystem::path folder(std::string_view mailbox) const;  // checked

 private:
  std::filesystem::path root_;
};

}  // namespace mailnet::node
