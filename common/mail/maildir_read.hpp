// Reading a run folder's Maildirs (<domain>/mail/<user>/{new,cur}/<name>), as
// `mailnet inbox`, `mailnet show` and the web API's messages do: regular
// files only (a planted symbolic link is not mail), names in any case.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::node {

// The message files of one user's Maildir (new/ and cur/), oldest first (the
// names start with the delivery time).
std::vector<std::filesystem::path> maildir_files(const std::filesystem::path& maildir);

// The Maildir++ folder a node files quarantined mail in (a DMARC fail under
// p=quarantine, policy.dmarc "enforce"): <user>/.Junk/{new,cur}, shown to
// people as the folder "Junk" beside the inbox, "INBOX".
inline constexpr std::string_view junk_maildir = ".Junk";

// Whether a message file (<user>/[.Junk/]{new,cur}/<name>) is in a Junk folder.
bool in_junk(const std::filesystem::path& file);

// The user's Maildir a message file is in (<user> for both of the above).
std::filesystem::path user_maildir_of(const std::filesystem::path& file);

// The users' Maildirs under a domain's mail folder, by name.
std::vector<std::filesystem::path> user_folders(const std::filesystem::path& mail_root);

// The folder in `folder` named `name` in any case (ASCII), or an empty path.
std::filesystem::path entry_in_any_case(const std::filesystem::path& folder, const std::string& name);

// The domains of a run folder that hold Maildirs (<dir>/<domain>/mail), by name.
std::vector<std::filesystem::path> mail_domains(const std::filesystem::path& run_dir);

std::string ascii_lower(std::string s);

}  // namespace mailnet::node
