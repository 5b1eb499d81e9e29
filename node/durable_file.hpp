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
#include <string_view>
#include <vector>

namespace mailnet::node {

struct staged_file {
  std::filesystem::path tmp;         // written and fsync'd
  std::filesystem::path final_path;  // where publish puts it
  bool replace = false;  // rename over an existing file (queue rewrite); else link, never replacing
  bool synced = true;    // its data was fsync'd when staged
  int fd = -1;           // a nameless (O_TMPFILE) file instead of tmp, closed by link_staged() or discard()
};

// Writes data at tmp, and fsyncs it when sync_now. Throws std::system_error;
// tmp is gone then. Without sync_now publish() makes it durable, in a syncfs
// shared with every concurrent publisher (a group commit: one flush of the
// disk for all the sessions committing at once, instead of two per message).
staged_file stage_file(std::filesystem::path tmp, std::filesystem::path final_path, std::string_view data,
                       bool replace = false, bool sync_now = true);

// Moves every staged file to its final name, then makes the batch durable:
// each folder fsync'd once when every file was synced when staged, otherwise
// one shared syncfs per filesystem. All or nothing: on failure the ones
// already published are unlinked again, every tmp is removed, and
// std::system_error is thrown.
void publish(std::vector<staged_file>& files);

// publish() without making anything durable: the links (or renames), all or
// nothing, and the tmp files removed. The caller syncs: sync_filesystems().
void link_staged(std::vector<staged_file>& files);

// Every change on the filesystems holding these folders is durable when it
// returns: one syncfs per filesystem, shared with concurrent callers.
void sync_filesystems(const std::vector<std::filesystem::path>& dirs);

// Group commit of whole messages. Writer threads run each request's work
// (stage_file without sync_now, then link_staged: no fsync); one sync thread
// takes every request written so far, makes them durable together (one
// syncfs, or the files' fsyncs with their write-back started at once),
// and only then calls each one's done, with the work's exception or null.
// While it syncs, the writers prepare the next batch; so under load one flush
// of the disk covers every session that committed meanwhile, and a message
// costs no fsync of its own. If the sync fails, what the batch published is
// unlinked again and every request in it gets the error: nothing stays
// visible without a 250.
class group_committer {
 public:
  using work_fn = std::function<std::vector<std::filesystem::path>()>;  // returns the files it published
  using done_fn = std::function<void(std::exception_ptr)>;

  // whole_filesystem: one syncfs per batch; else an fsync of each file
  // (their write-back started together) and of each folder once.
  explicit group_committer(bool whole_filesystem = true, unsigned writers = 2);
  ~group_committer();  // finishes what was submitted, then stops
  group_committer(const group_committer&) = delete;
  group_committer& operator=(const group_committer&) = delete;

  void submit(work_fn work, done_fn done);

 private:
  struct request {
    work_fn work;
    done_fn done;
    std::vector<std::filesystem::path> published;
    std::exception_ptr error;
  };
  void write_loop();
  void sync_loop();
  void sync_files(const std::vector<request>& batch, const std::vector<std::filesystem::path>& dirs);

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable written_ready_;
  std::vector<request> pending_;  // submitted, not yet written
  std::vector<request> written_;  // written, waiting for the next sync
  const bool whole_filesystem_;
  bool stopping_ = false;
  bool writers_gone_ = false;
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
