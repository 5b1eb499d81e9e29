// The one way a node makes bytes durable: write a temporary file, fsync it,
// move it to its final name, fsync the folder. Maildir delivery (maildir(5))
// and queue commits (OpenSMTPD's one rename) are both this. Several files can
// be staged first and published together, so that a failure in any of them
// leaves none visible. Blocking calls: run them on the disk thread pool.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::node {

struct staged_file {
  std::filesystem::path tmp;         // written and fsync'd
  std::filesystem::path final_path;  // where publish puts it
  bool replace = false;  // rename over an existing file (queue rewrite); else link, never replacing
};

// Writes and fsyncs data at tmp. Throws std::system_error; tmp is gone then.
staged_file stage_file(std::filesystem::path tmp, std::filesystem::path final_path, std::string_view data,
                       bool replace = false);

// Moves every staged file to its final name, then fsyncs each folder once.
// All or nothing: on failure the ones already published are unlinked again,
// every tmp is removed, and std::system_error is thrown.
void publish(std::vector<staged_file>& files);

// Removes the tmp files of a batch that will not be published.
void discard(const std::vector<staged_file>& files) noexcept;

// stage_file + publish for one file.
void publish_durably(const std::filesystem::path& tmp, const std::filesystem::path& final_path,
                     std::string_view data, bool replace_existing = false);

// Every change made in dir before the call is durable when it returns. Callers
// at the same time share one fsync (group commit; durable_file.cpp).
void fsync_directory(const std::filesystem::path& dir);

// A name no other writer on this machine uses: time, pid and a counter.
std::string unique_name();

std::string read_whole_file(const std::filesystem::path& file);  // throws std::system_error

}  // namespace mailnet::node
