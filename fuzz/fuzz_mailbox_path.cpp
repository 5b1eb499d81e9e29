// Fuzzes the way from an address to a Maildir folder: whatever the address,
// an accepted recipient's folder is one plain name directly under the root.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "common/address.hpp"
#include "node/maildir.hpp"
#include "node/smtp_protocol.hpp"

using namespace mailnet;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path root = "/srv/run/jaku.com/mail";
  static const node::maildir_store store(root);
  std::string text(reinterpret_cast<const char*>(data), size);
  for (bool known_only : {true, false}) {
    domain_config config;
    config.name = "jaku.com";
    config.users = {"rey", "Finn"};
    config.policy.require_known_users = known_only;
    auto path = parse_path("<" + text + ">");
    if (path.error != address_error::none || path.null_path) continue;
    auto found = node::find_local_mailbox(config, path.box);
    if (found.mailbox.empty()) continue;
    std::filesystem::path folder;
    try {
      folder = store.folder(found.mailbox);
    } catch (const std::invalid_argument&) {
      std::abort();  // an accepted mailbox must also pass the store's own check
    }
    if (folder.parent_path() != root || folder.lexically_normal() != folder) std::abort();
    auto name = folder.filename().string();
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) std::abort();
  }
  // The store refuses escaping names on its own, too: what it takes is one
  // plain name directly under the root, or that name's ".Junk" folder (the
  // DMARC quarantine) and nothing deeper.
  try {
    const auto folder = store.folder(text);
    const bool junk = folder.filename() == ".Junk";
    const auto box = junk ? folder.parent_path() : folder;
    if (box.parent_path() != root || box.filename() == ".." || box.filename() == "." ||
        folder.lexically_normal() != folder)
      std::abort();
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
