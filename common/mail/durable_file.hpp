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
#include <map>
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
  bool replace = false;  // rename over an existing file (queue rewrite); else never replacing
};

// Writes data at tmp and, when sync_now, fsyncs it. Throws std::system_error;
// tmp is gone then.
staged_file stage_file(std::filesystem::path tmp, std::filesystem::path final_path, std::string_view data,
                       bool replace = false, bool sync_now = true);

// Moves every staged file to its final name, never replacing a file there
// (maildir(5)): renameat2(RENAME_NOREPLACE), or link() and then the tmp
// name's removal where the file system lacks it; rename() when replace. All
// or nothing: on failure the ones already published are unlinked again, every
// tmp is removed, and std::system_error is thrown. Makes nothing durable.
void link_staged(std::vector<staged_file>& files);

// link_staged() of files staged with sync_now, then an fsync of each folder.
// On failure nothing stays published.
void publish(std::vector<staged_file>& files);

// Group commit of whole messages, in maildir(5)'s order for every file.
// Writer threads run each request's work: it writes the message's files in
// their tmp/ folders (stage_file without sync_now) and returns them. One sync
// thread flushes the disk in rounds (one syncfs, or the fsyncs of the files
// with their write-back started together and of the folders); each round
// makes durable the data of every request written since the last round and
// the names linked after it. After its data is durable a request's files are
// linked into place (all or nothing per request); after the next round its
// done is called with null or the error. So under load one flush of the disk
// serves every session that committed meanwhile. A failed round unlinks what
// it should have made durable and fails those requests: nothing stays
// visible without a 250.
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
  bool stopping();  // stop() has begun: nothing more will be started
  // Every request submitted has had its done called: nothing is being
  // written, linked or synced, and the threads only wait for work.
  bool idle();
  group_committer(const group_committer&) = delete;
  group_committer& operator=(const group_committer&) = delete;

  // Queues a request. The sync thread and the first writer start at the
  // first request, a further writer (up to `writers`) only when a request
  // waits while every writer is busy: an idle node runs none of them.
  // Throws std::system_error, with nothing queued, when no writer or no
  // sync thread runs and one cannot start; need_threads() first makes sure.
  void submit(work_fn work, done_fn done);
  void need_threads();
  std::size_t threads();  // started so far, the sync thread included

 private:
  struct request {
    work_fn work;
    done_fn done;
    std::vector<staged_file> staged;
    std::exception_ptr error;
  };
  void start_threads();  // with mutex_ held: the sync thread and one writer, if not running
  void start_writer();   // with mutex_ held
  void write_loop();
  void sync_loop();
  int filesystem_of(const std::filesystem::path& dir);  // a kept descriptor for syncfs
  void sync_filesystems(const std::vector<std::filesystem::path>& dirs);
  // One flush: the data of these files (in data_dirs) and the names in
  // name_dirs; a syncfs of their file systems, or each file's and folder's fsync.
  void sync_round(const std::vector<std::filesystem::path>& files, const std::vector<std::filesystem::path>& data_dirs,
                  const std::vector<std::filesystem::path>& name_dirs);

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable written_ready_;
  std::vector<request> pending_;  // submitted, not yet written
  std::vector<request> written_;  // written, waiting for the next sync
  const bool whole_filesystem_;
  bool stopping_ = false;
  bool writers_gone_ = false;
  std::size_t unfinished_ = 0;  // submitted, done not yet called
  const unsigned max_writers_;
  std::size_t idle_writers_ = 0;  // writers started and not writing a request
  std::vector<std::pair<dev_t, owned_fd>> filesystems_;  // the sync thread's (and the constructor's)
  std::map<std::string, int> fd_of_folder_;               // folder -> its entry in filesystems_
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

// Throws std::system_error; without follow_link, also for a symbolic link.
std::string read_whole_file(const std::filesystem::path& file, bool follow_link = true);

// At most the last max_bytes of a file that is not a link (O_NOFOLLOW) and is
// a regular file, for reading a growing log: when the file is larger, the
// text starts after the first line end in that window (no cut line). Sets
// cut when the start of the file was left out. Throws std::system_error.
std::string read_file_tail(const std::filesystem::path& file, std::size_t max_bytes, bool& cut);

}  // namespace mailnet::node
