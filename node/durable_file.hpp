// The one way a node makes bytes durable: write a temporary file, fsync it,
// move it to its final name, fsync the folder. Maildir delivery (maildir(5))
// and queue commits (OpenSMTPD's one rename) are both this. Several files can
// be staged first and published together, so that a failure in any of them
// leaves none visible. Blocking calls: run them on the disk thread pool.
#pragma once

#include <condition_variable>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <sys/types.h>
#include <unistd.h>
#include <utility>
#include <string_view>
#include <vector>

namespace mailnet::node {

// A file descriptor closed with its owner.
struct owned_fd {
  int fd;
  explicit owned_fd(int f) : fd(f) {}
  owned_fd(owned_fd&& other) noexcept : fd(other.fd) { other.fd = -1; }
  owned_fd(const owned_fd&) = delete;
  owned_fd& operator=(const owned_fd&) = delete;
  ~owned_fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct staged_file {
  std::filesystem::path tmp;         // written, and fsync'd once it is synced
  std::filesystem::path final_path;  // where it is published
  bool replace = false;  // rename over an existing file (queue rewrite); else link, never replacing
};

// Writes data at tmp and, when sync_now, fsyncs it. Throws std::system_error;
// tmp is gone then.
staged_file stage_file(std::filesystem::path tmp, std::filesystem::path final_path, std::string_view data,
                       bool replace = false, bool sync_now = true);

// Moves every staged file to its final name: link() (never replacing, as
// maildir(5) wants) or rename() when replace; then removes the tmp names. All
// or nothing: on failure the ones already linked are unlinked again, every tmp
// is removed, and std::system_error is thrown. Makes nothing durable.
void link_staged(std::vector<staged_file>& files);

// link_staged() of files staged with sync_now, then an fsync of each folder.
// On failure nothing stays published.
void publish(std::vector<staged_file>& files);

// Group commit of whole messages, in maildir(5)'s order for every file.
// Writer threads run each request's work: it writes the message's files in
// their tmp/ folders (stage_file without sync_now) and returns them. One
// sync thread takes every request written so far and, for the whole batch:
// makes the tmp files durable (one syncfs, or each file's fsync with their
// write-back started together), links each request's files into place (all or
// nothing per request), makes the links durable (a second syncfs, or each
// folder's fsync), and only then calls each request's done with null or the
// error. While it syncs, the writers prepare the next batch; so under load
// two flushes of the disk cover every session that committed meanwhile,
// instead of two per message. A failed sync unlinks what the batch published
// and fails every request in it: nothing stays visible without a 250.
class group_committer {
 public:
  using work_fn = std::function<std::vector<staged_file>()>;
  using done_fn = std::function<void(std::exception_ptr)>;

  // root: a folder that holds everything committed (the node's folder).
  // whole_filesystem: syncfs; otherwise fsync of each file and folder.
  explicit group_committer(const std::filesystem::path& root, bool whole_filesystem = true, unsigned writers = 2);
  ~group_committer();  // stop()
  // Requests not yet started are dropped without their done; one being
  // written finishes; what is written but not synced is removed, not
  // published (no reply can follow it any more). Then the threads end.
  void stop();
  group_committer(const group_committer&) = delete;
  group_committer& operator=(const group_committer&) = delete;

  void submit(work_fn work, done_fn done);

 private:
  struct request {
    work_fn work;
    done_fn done;
    std::vector<staged_file> staged;
    std::vector<std::filesystem::path> published;  // linked by this batch, to unlink if its sync fails
    std::exception_ptr error;
  };
  void write_loop();
  void sync_loop();
  void commit_batch(std::vector<request>& batch);
  int filesystem_of(const std::filesystem::path& dir);  // a kept descriptor for syncfs
  void sync_filesystems(const std::vector<std::filesystem::path>& dirs);
  // The files' data (syncfs of the folders' file systems, or each file's fsync).
  void sync_files(const std::vector<std::filesystem::path>& files, const std::vector<std::filesystem::path>& dirs);
  // The names in these folders (syncfs, or each folder's fsync).
  void sync_folders(const std::vector<std::filesystem::path>& dirs);

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable written_ready_;
  std::vector<request> pending_;  // submitted, not yet written
  std::vector<request> written_;  // written, waiting for the next sync
  const bool whole_filesystem_;
  bool stopping_ = false;
  bool writers_gone_ = false;
  std::vector<std::pair<dev_t, owned_fd>> filesystems_;  // the sync thread's (and the constructor's)
  std::vector<std::thread> writers_;
  std::thread syncer_;
};

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
