#include "node/durable_file.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
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

}  // namespace

void fsync_directory(const std::filesystem::path& dir) {
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) fail("open directory", dir);
  if (::fsync(d.fd) != 0) fail("fsync directory", dir);
}

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
