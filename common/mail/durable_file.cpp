#include "common/mail/durable_file.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace mailnet::node {

namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& p) {
  throw std::system_error(errno, std::generic_category(), what + " " + p.string());
}

void fsync_folder_now(const std::filesystem::path& dir) {
  owned_fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) fail("open directory", dir);
  if (::fsync(d.fd) != 0) fail("fsync directory", dir);
}

// Shared folder fsyncs. A folder's fsync makes durable every link, rename
// and unlink made in it before the fsync began, so callers whose changes
// precede a sync that starts later share it instead of each issuing their
// own. Tickets: a caller takes one after its change; a sync started after
// that ticket was taken covers it.
class shared_folder_sync {
 public:
  void sync(const std::filesystem::path& dir) {
    std::unique_lock lock(mutex_);
    auto& s = folders_[dir.native()];  // map nodes are stable: the reference survives unlock
    const std::uint64_t mine = ++s.changed;
    while (s.synced < mine) {
      if (s.running) {
        cv_.wait(lock);  // that sync may have begun before our change: look again when it ends
        continue;
      }
      s.running = true;
      const std::uint64_t covers = s.changed;
      lock.unlock();
      try {
        fsync_folder_now(dir);
      } catch (...) {
        lock.lock();
        s.running = false;
        cv_.notify_all();  // the waiters try for themselves and see their own error
        throw;
      }
      lock.lock();
      s.running = false;
      if (covers > s.synced) s.synced = covers;
      cv_.notify_all();
    }
  }

 private:
  struct state {
    std::uint64_t changed = 0;  // tickets handed out
    std::uint64_t synced = 0;   // tickets covered by a finished sync
    bool running = false;
  };
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, state> folders_;
};

void add_unique(std::vector<std::filesystem::path>& dirs, std::filesystem::path dir) {
  if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(std::move(dir));
}

}  // namespace

void fsync_directory(const std::filesystem::path& dir) {
  static shared_folder_sync folders;
  folders.sync(dir);
}

staged_file stage_file(std::filesystem::path tmp, std::filesystem::path final_path, std::string_view data,
                       bool replace, bool sync_now) {
  // O_EXCL never opens what is there (a planted link included); the mode is
  // set again after the umask had its say: mail is its user's alone.
  owned_fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)};
  if (f.fd < 0) fail("create", tmp);
  auto give_up = [&](const char* what) {
    int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    fail(what, tmp);
  };
  if (::fchmod(f.fd, 0600) != 0) give_up("chmod");
  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(f.fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) give_up("write");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (sync_now && ::fsync(f.fd) != 0) give_up("fsync");
  return staged_file{std::move(tmp), std::move(final_path), replace};
}

void discard(const std::vector<staged_file>& files) noexcept {
  for (const auto& f : files) ::unlink(f.tmp.c_str());
}

namespace {

// Takes linked files back (a replaced file cannot be).
void unpublish(const std::vector<staged_file>& files) noexcept {
  for (const auto& f : files)
    if (!f.replace) ::unlink(f.final_path.c_str());
}

}  // namespace

namespace {

// Publishes tmp under final_path without ever replacing a file there: one
// rename with RENAME_NOREPLACE (as safe as maildir(5)'s link: neither can
// replace a file), which saves maildir(5)'s unlink of the tmp/ name. A file system
// without it (EINVAL) gets link(); its tmp/ name is then left for the caller.
bool publish_no_replace(const std::filesystem::path& tmp, const std::filesystem::path& final_path, bool& linked) {
  static std::atomic<bool> rename_works{true};
  if (rename_works.load(std::memory_order_relaxed)) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) == 0) return true;
    if (errno != EINVAL && errno != ENOSYS) return false;
    rename_works.store(false, std::memory_order_relaxed);
  }
  linked = true;
  return ::link(tmp.c_str(), final_path.c_str()) == 0;
}

}  // namespace

void link_staged(std::vector<staged_file>& files) {
  std::size_t done = 0;
  std::vector<bool> linked(files.size(), false);
  for (; done < files.size(); ++done) {
    const auto& f = files[done];
    bool by_link = false;
    bool ok = f.replace ? ::rename(f.tmp.c_str(), f.final_path.c_str()) == 0
                        : publish_no_replace(f.tmp, f.final_path, by_link);
    linked[done] = by_link;
    if (!ok) break;
  }
  if (done < files.size()) {
    int saved = errno;
    const auto failed = files[done].final_path;
    unpublish({files.begin(), files.begin() + static_cast<std::ptrdiff_t>(done)});
    discard(files);
    errno = saved;
    fail("publish", failed);
  }
  for (std::size_t i = 0; i < files.size(); ++i)
    if (linked[i]) ::unlink(files[i].tmp.c_str());
}

void publish(std::vector<staged_file>& files) {
  link_staged(files);
  std::vector<std::filesystem::path> dirs;
  for (const auto& f : files) add_unique(dirs, f.final_path.parent_path());
  try {
    for (const auto& dir : dirs) fsync_directory(dir);
  } catch (...) {
    // Not known to be on disk: not published either, so no 250 promises it.
    unpublish(files);
    throw;
  }
}

group_committer::group_committer(const std::filesystem::path& root, bool whole_filesystem, unsigned writers)
    : whole_filesystem_(whole_filesystem), max_writers_(std::max(1u, writers)) {
  // The descriptor syncfs() is called on is opened now, before any write:
  // syncfs reports write-back errors that happened since its descriptor was
  // opened, also when another process has already been told of them.
  if (whole_filesystem_) filesystem_of(root);
}

void group_committer::start_threads() {
  if (stopping_)
    throw std::system_error(ECANCELED, std::generic_category(), "the committer is stopping");
  if (!syncer_.joinable()) syncer_ = std::thread([this] { sync_loop(); });
  if (writers_.empty()) start_writer();
}

void group_committer::start_writer() {
  writers_.emplace_back([this] { write_loop(); });
  ++idle_writers_;  // free for a request from its start, not from its first wait
}

void group_committer::need_threads() {
  std::lock_guard lock(mutex_);
  start_threads();
}

std::size_t group_committer::threads() {
  std::lock_guard lock(mutex_);
  return writers_.size() + (syncer_.joinable() ? 1 : 0);
}

group_committer::~group_committer() { stop(); }

void group_committer::stop() {
  std::vector<request> dropped;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    dropped.swap(pending_);  // never started: their sessions get no reply, the senders retry
  }
  work_ready_.notify_all();
  for (auto& t : writers_) t.join();  // a work already running finishes (none start now)
  {
    std::lock_guard lock(mutex_);
    writers_gone_ = true;
  }
  written_ready_.notify_one();
  if (syncer_.joinable()) syncer_.join();
}

bool group_committer::idle() {
  std::lock_guard lock(mutex_);
  return unfinished_ == 0;
}

bool group_committer::stopping() {
  std::lock_guard lock(mutex_);
  return stopping_;
}

int group_committer::filesystem_of(const std::filesystem::path& dir) {
  if (auto known = fd_of_folder_.find(dir.native()); known != fd_of_folder_.end()) return known->second;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) fail("stat", dir);
  int fd = -1;
  for (const auto& [dev, owned] : filesystems_)
    if (dev == st.st_dev) fd = owned.fd;
  if (fd < 0) {
    owned_fd opened(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (opened.fd < 0) fail("open directory", dir);
    fd = opened.fd;
    filesystems_.emplace_back(st.st_dev, std::move(opened));
  }
  fd_of_folder_.emplace(dir.native(), fd);  // a folder stays on its file system: one stat each
  return fd;
}

void group_committer::sync_filesystems(const std::vector<std::filesystem::path>& dirs) {
  std::vector<int> done;
  for (const auto& dir : dirs) {
    int fd = filesystem_of(dir);
    if (std::find(done.begin(), done.end(), fd) != done.end()) continue;
    done.push_back(fd);
    if (::syncfs(fd) != 0) fail("syncfs", dir);
  }
}

void group_committer::submit(work_fn work, done_fn done) {
  {
    std::lock_guard lock(mutex_);
    start_threads();  // throws before anything is queued
    pending_.push_back({std::move(work), std::move(done), {}, nullptr});
    ++unfinished_;
    if (pending_.size() > idle_writers_ && writers_.size() < max_writers_) {
      try {
        start_writer();
      } catch (const std::system_error&) {
        // Queued, and a writer runs: the request waits its turn.
      }
    }
  }
  work_ready_.notify_one();
}

void group_committer::write_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) {  // stopping, and nothing left
      --idle_writers_;
      return;
    }
    --idle_writers_;
    request r = std::move(pending_.front());
    pending_.erase(pending_.begin());
    lock.unlock();
    try {
      r.staged = r.work();
    } catch (...) {
      r.error = std::current_exception();
    }
    lock.lock();
    ++idle_writers_;
    written_.push_back(std::move(r));  // after its writes: the next sync to start covers them
    written_ready_.notify_one();
  }
}

void group_committer::sync_loop() {
  // Pipelined: one sync makes durable both the data of the requests written
  // since the last one and the names linked after the last one. So every
  // request still sees its data synced before its link and its link synced
  // before its done, while the disk is flushed once per round, not twice.
  std::vector<request> linked;  // published, waiting for a sync of their names
  for (;;) {
    std::vector<request> written;
    bool stopping, writers_gone;
    {
      std::unique_lock lock(mutex_);
      written_ready_.wait(lock, [&] { return writers_gone_ || !written_.empty() || !linked.empty(); });
      written.swap(written_);
      stopping = stopping_;
      writers_gone = writers_gone_;
    }
    if (stopping) {
      // No reply can follow any more: nothing more is published, and what
      // was published without its sync is taken back; the senders retry.
      // From the moment stop() began, not from when the writers are gone: a
      // work that ends while stop() joins its writer is dropped too.
      for (auto& r : written) discard(r.staged);
      for (const auto& r : linked) unpublish(r.staged);
      linked.clear();
      if (writers_gone) return;
      continue;
    }
    std::vector<std::filesystem::path> files, data_dirs, name_dirs;
    for (const auto& r : written)
      if (!r.error)
        for (const auto& f : r.staged) {
          files.push_back(f.tmp);
          add_unique(data_dirs, f.tmp.parent_path());
        }
    for (const auto& r : linked)
      for (const auto& f : r.staged) add_unique(name_dirs, f.final_path.parent_path());
    try {
      sync_round(files, data_dirs, name_dirs);
    } catch (...) {
      auto error = std::current_exception();
      for (auto& r : linked) {
        unpublish(r.staged);
        r.error = error;
      }
      for (auto& r : written)
        if (!r.error) {
          discard(r.staged);
          r.error = error;
        }
    }
    std::size_t finished = 0;
    for (auto& r : linked) {
      r.done(r.error);
      ++finished;
    }
    linked.clear();
    for (auto& r : written) {
      if (!r.error) {
        try {
          link_staged(r.staged);  // all or nothing for the request's copies
          linked.push_back(std::move(r));
          continue;
        } catch (...) {
          r.error = std::current_exception();
        }
      }
      r.done(r.error);
      ++finished;
    }
    if (finished) {
      std::lock_guard lock(mutex_);
      unfinished_ -= finished;
    }
  }
}

void group_committer::sync_round(const std::vector<std::filesystem::path>& files,
                                 const std::vector<std::filesystem::path>& data_dirs,
                                 const std::vector<std::filesystem::path>& name_dirs) {
  if (whole_filesystem_) {
    std::vector<std::filesystem::path> dirs = data_dirs;
    for (const auto& d : name_dirs) add_unique(dirs, d);
    if (!dirs.empty()) sync_filesystems(dirs);
    return;
  }
  // Every file's write-back is started first, so that the disk sees them
  // together; each fsync then mostly waits.
  std::vector<owned_fd> open_files;
  open_files.reserve(files.size());
  for (const auto& file : files) {
    open_files.emplace_back(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (open_files.back().fd < 0) fail("open", file);
    ::sync_file_range(open_files.back().fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  }
  for (std::size_t i = 0; i < files.size(); ++i)
    if (::fsync(open_files[i].fd) != 0) fail("fsync", files[i]);
  for (const auto& dir : name_dirs) fsync_directory(dir);
}

void publish_durably(const std::filesystem::path& tmp, const std::filesystem::path& final_path,
                     std::string_view data, bool replace_existing) {
  std::vector<staged_file> one{stage_file(tmp, final_path, data, replace_existing)};
  publish(one);
}

std::string unique_name() {
  static std::atomic<unsigned long> counter{0};
  static const int pid = static_cast<int>(::getpid());  // nodes do not fork
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  char buf[96];
  std::snprintf(buf, sizeof buf, "%lld.M%06lldP%dQ%lu", static_cast<long long>(us / 1000000),
                static_cast<long long>(us % 1000000), pid, ++counter);
  return buf;
}

std::string read_whole_file(const std::filesystem::path& file, bool follow_link) {
  owned_fd f{::open(file.c_str(), O_RDONLY | O_CLOEXEC | (follow_link ? 0 : O_NOFOLLOW))};
  if (f.fd < 0) fail("open", file);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(f.fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read", file);
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string read_file_tail(const std::filesystem::path& file, std::size_t max_bytes, bool& cut) {
  cut = false;
  owned_fd f{::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
  if (f.fd < 0) fail("open", file);
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail("stat", file);
  if (!S_ISREG(st.st_mode)) throw std::system_error(std::make_error_code(std::errc::invalid_argument), "not a regular file: " + file.string());
  off_t start = 0;
  if (static_cast<std::uintmax_t>(st.st_size) > max_bytes) {
    start = st.st_size - static_cast<off_t>(max_bytes);
    cut = true;
  }
  std::string out;
  out.reserve(std::min<std::size_t>(max_bytes, static_cast<std::size_t>(st.st_size)));
  char buf[65536];
  off_t at = start;
  // Bounded by max_bytes: a log that grows meanwhile is read to where it was.
  while (out.size() < max_bytes) {
    const std::size_t want = std::min(sizeof buf, max_bytes - out.size());
    ssize_t n = ::pread(f.fd, buf, want, at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read", file);
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    at += n;
  }
  if (cut) {
    const auto nl = out.find('\n');
    out.erase(0, nl == std::string::npos ? out.size() : nl + 1);
  }
  return out;
}

}  // namespace mailnet::node
