#include "node/durable_file.hpp"

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

namespace mailnet::node {

namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& p) {
  throw std::system_error(errno, std::generic_category(), what + " " + p.string());
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

void fsync_folder_now(const std::filesystem::path& dir) {
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) fail("open directory", dir);
  if (::fsync(d.fd) != 0) fail("fsync directory", dir);
}

// Group commit for folder fsyncs. A folder's fsync makes durable every link
// made in it before the fsync began, so publishers whose links precede a sync
// that starts later share it instead of each issuing their own. With 20
// concurrent sessions into one Maildir, fsyncs per message went from 2.00 to
// 1.63 (bench/README.md, "profile"). Tickets: a caller takes one after its link,
// rename or unlink; a sync started after that ticket was taken covers it.
// Every fsync_directory() goes through here, so queue removals share too.
class shared_folder_sync {
 public:
  void sync(const std::filesystem::path& dir) {
    std::unique_lock lock(mutex_);
    auto& s = folders_[dir.native()];  // map nodes are stable: the reference survives unlock
    const std::uint64_t mine = ++s.linked;
    while (s.synced < mine) {
      if (s.running) {
        cv_.wait(lock);  // that sync may have begun before our link: look again when it ends
        continue;
      }
      s.running = true;
      const std::uint64_t covers = s.linked;
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
  struct folder_state {
    std::uint64_t linked = 0;  // tickets handed out
    std::uint64_t synced = 0;  // tickets covered by a finished fsync
    bool running = false;
  };
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, folder_state> folders_;
};

shared_folder_sync& folder_sync() {
  static shared_folder_sync instance;
  return instance;
}

}  // namespace

void fsync_directory(const std::filesystem::path& dir) { folder_sync().sync(dir); }

staged_file stage_file(std::filesystem::path tmp, std::filesystem::path final_path, std::string_view data,
                       bool replace) {
  fd_guard f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
  if (f.fd < 0) fail("create", tmp);
  auto give_up = [&](const char* what) {
    int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    fail(what, tmp);
  };
  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(f.fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) give_up("write");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(f.fd) != 0) give_up("fsync");
  return staged_file{std::move(tmp), std::move(final_path), replace};
}

void discard(const std::vector<staged_file>& files) noexcept {
  for (const auto& f : files) ::unlink(f.tmp.c_str());
}

void publish(std::vector<staged_file>& files) {
  std::size_t done = 0;
  for (; done < files.size(); ++done) {
    const auto& f = files[done];
    // link() refuses to replace, as maildir(5) wants; rename() replaces, for
    // rewriting a queue file in place.
    int rc = f.replace ? ::rename(f.tmp.c_str(), f.final_path.c_str()) : ::link(f.tmp.c_str(), f.final_path.c_str());
    if (rc != 0) break;
  }
  if (done < files.size()) {
    int saved = errno;
    const auto failed = files[done].final_path;
    for (std::size_t i = 0; i < done; ++i)
      if (!files[i].replace) ::unlink(files[i].final_path.c_str());  // a replaced file cannot be taken back
    discard(files);
    errno = saved;
    fail("publish", failed);
  }
  std::vector<std::filesystem::path> dirs;
  for (const auto& f : files) {
    if (!f.replace) ::unlink(f.tmp.c_str());
    auto dir = f.final_path.parent_path();
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
  }
  for (const auto& dir : dirs) fsync_directory(dir);
}

void publish_durably(const std::filesystem::path& tmp, const std::filesystem::path& final_path,
                     std::string_view data, bool replace_existing) {
  std::vector<staged_file> one{stage_file(tmp, final_path, data, replace_existing)};
  publish(one);
}

std::string unique_name() {
  static std::atomic<unsigned long> counter{0};
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  char buf[96];
  std::snprintf(buf, sizeof buf, "%lld.M%06lldP%dQ%lu", static_cast<long long>(us / 1000000),
                static_cast<long long>(us % 1000000), static_cast<int>(::getpid()), ++counter);
  return buf;
}

std::string read_whole_file(const std::filesystem::path& file) {
  fd_guard f{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
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

}  // namespace mailnet::node
