// The one way a node makes bytes durable: write a temporary file, fsync it,
// move it to its final name without replacing anything, fsync the folder.
// Maildir delivery (maildir(5)) and queue commits (OpenSMTPD's one rename)
// are both this. Blocking calls: run them on the disk thread pool.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace mailnet::node {

// Writes data to tmp, then publishes it as final. Throws std::system_error;
// on failure nothing is visible at final and tmp is removed.
void publish_durably(const std::filesystem::path& tmp, const std::filesystem::path& final_path,
                     std::string_view data, bool replace_existing = false);

void fsync_directory(const std::filesystem::path& dir);

// A name no other writer on this machine uses: time, pid and a counter.
std::string unique_name();

std::string read_whole_file(const std::filesystem::path& file);  // throws std::system_error

}  // namespace mailnet::node
