#include "common/private_files.hpp"

#include <cerrno>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <vector>

namespace mailnet {

namespace fs = std::filesystem;

namespace {

// A descriptor closed with its owner.
struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f) : fd(f) {}
  fd_guard(fd_guard&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  fd_guard& operator=(fd_guard&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) ::close(fd);
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

[[noreturn]] void fail_errno(const std::string& what, const fs::path& p) {
  throw std::system_error(errno, std::generic_category(), what + " " + p.string());
}

std::string octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

[[noreturn]] void refuse_link(const fs::path& p) {
  std::error_code ec;
  const auto target = fs::read_symlink(p, ec);
  throw unsafe_path_error(p.string() + " is a symbolic link" + (ec ? "" : " (to " + target.string() + ")") +
                          ", and mailnet follows no link in its run folder: remove it, or use another --dir");
}

// The rule of the header for a folder we hold open: ours, writable by nobody
// else; then tightened to 0700 (a folder from an older run may be 0755).
void check_folder_fd(int fd, const fs::path& shown) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_errno("stat", shown);
  if (!S_ISDIR(st.st_mode)) throw unsafe_path_error(shown.string() + " is not a folder: remove it, or use another --dir");
  if (st.st_uid != ::geteuid())
    throw unsafe_path_error(shown.string() + " is owned by uid " + std::to_string(st.st_uid) + ", not you (uid " +
                            std::to_string(::geteuid()) + "): remove it, or use another --dir");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    throw unsafe_path_error(shown.string() + " is writable by group or others (mode " + octal(st.st_mode) +
                            "): someone else may have put files there; check it and chmod 700 it, "
                            "or remove it, or use another --dir");
  if ((st.st_mode & 07777) != private_folder_mode && ::fchmod(fd, private_folder_mode) != 0)
    fail_errno("chmod", shown);
}

// Opens a folder relative to dirfd without following a link (ELOOP, or
// ENOTDIR on some file systems, for a link); names the path when it is one.
int open_folder_at(int dirfd, const char* name, const fs::path& shown) {
  int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) return fd;
  const int saved = errno;
  struct stat st {};
  if ((saved == ELOOP || saved == ENOTDIR) && ::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISLNK(st.st_mode))
    refuse_link(shown);
  errno = saved;
  if (saved == ENOTDIR) throw unsafe_path_error(shown.string() + " is not a folder: remove it, or use another --dir");
  fail_errno("open folder", shown);
}

void check_tree_at(int dirfd, const fs::path& shown, int depth);

// One entry of a folder being checked; d_type saves a stat for most.
void check_entry(int dirfd, const dirent* e, const fs::path& shown, int depth) {
  unsigned char type = e->d_type;
  struct stat st {};
  // Files deeper than a domain's own folder (mail, queue, attachments) sit
  // in folders already found to be ours, where nobody else can add one.
  const bool need_stat = type == DT_UNKNOWN || (type == DT_REG && depth <= 1);
  if (need_stat) {
    if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return;  // removed meanwhile
      fail_errno("stat", shown);
    }
    type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK : S_ISREG(st.st_mode) ? DT_REG
                                   : S_ISSOCK(st.st_mode) ? DT_SOCK : DT_UNKNOWN;
  }
  if (type == DT_LNK) refuse_link(shown);
  if (type == DT_DIR) {
    fd_guard sub(open_folder_at(dirfd, e->d_name, shown));
    check_folder_fd(sub.fd, shown);
    check_tree_at(sub.fd, shown, depth + 1);
    return;
  }
  if (type == DT_SOCK) return;  // the control socket; its mode is the launcher's business
  if (type != DT_REG)
    throw unsafe_path_error(shown.string() + " is neither a file nor a folder: remove it, or use another --dir");
  if (need_stat && st.st_uid != ::geteuid())
    throw unsafe_path_error(shown.string() + " is owned by uid " + std::to_string(st.st_uid) + ", not you (uid " +
                            std::to_string(::geteuid()) + "): remove it, or use another --dir");
}

// The names in a folder, read before anything is done to them.
std::vector<dirent> entries_of(int dirfd, const fs::path& shown) {
  int copy = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) fail_errno("dup", shown);
  DIR* dir = ::fdopendir(copy);
  if (!dir) {
    ::close(copy);
    fail_errno("read folder", shown);
  }
  ::rewinddir(dir);
  std::vector<dirent> out;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(*e);
  }
  ::closedir(dir);
  return out;
}

void check_tree_at(int dirfd, const fs::path& shown, int depth) {
  for (const auto& e : entries_of(dirfd, shown)) check_entry(dirfd, &e, shown / e.d_name, depth);
}

void empty_at(int dirfd, const fs::path& shown) {
  for (const auto& e : entries_of(dirfd, shown)) {
    struct stat st {};
    if (::fstatat(dirfd, e.d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      fail_errno("stat", shown / e.d_name);
    }
    if (S_ISDIR(st.st_mode)) {
      fd_guard sub(open_folder_at(dirfd, e.d_name, shown / e.d_name));
      empty_at(sub.fd, shown / e.d_name);
    }
    // unlinkat removes a link itself, never what it points to.
    if (::unlinkat(dirfd, e.d_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0 && errno != ENOENT)
      fail_errno("remove", shown / e.d_name);
  }
}

// "a/b/" and "a/./b" as "a/b".
fs::path clean_path(const fs::path& p) {
  fs::path n = p.lexically_normal();
  return n.has_filename() || !n.has_parent_path() ? n : n.parent_path();
}

fd_guard open_top_folder(const fs::path& dir_in) {
  const fs::path dir = clean_path(dir_in);
  const auto parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  fd_guard up(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (up.fd < 0) fail_errno("open folder", parent);
  return fd_guard(open_folder_at(up.fd, dir.filename().c_str(), dir));
}

}  // namespace

void make_private_folder(const fs::path& dir) {
  const fs::path clean = clean_path(dir);
  if (::mkdir(clean.c_str(), private_folder_mode) != 0 && errno != EEXIST) {
    if (errno != ENOENT || !clean.has_parent_path()) fail_errno("create folder", clean);
    make_private_folder(clean.parent_path());  // missing parents: made 0700 too
    if (::mkdir(clean.c_str(), private_folder_mode) != 0 && errno != EEXIST) fail_errno("create folder", clean);
  }
  fd_guard fd = open_top_folder(clean);
  check_folder_fd(fd.fd, clean);
}

void make_private_folders(const fs::path& root, const fs::path& rel) {
  fd_guard at = open_top_folder(root);
  fs::path shown = root;
  for (const auto& part : rel) {
    if (part.empty() || part == "." || part == ".." || part.is_absolute())
      throw std::invalid_argument("not a plain folder name: " + rel.string());
    shown /= part;
    if (::mkdirat(at.fd, part.c_str(), private_folder_mode) != 0 && errno != EEXIST)
      fail_errno("create folder", shown);
    fd_guard next(open_folder_at(at.fd, part.c_str(), shown));
    check_folder_fd(next.fd, shown);
    at = std::move(next);
  }
}

void check_private_tree(const fs::path& root) {
  fd_guard fd = open_top_folder(root);
  check_folder_fd(fd.fd, root);
  check_tree_at(fd.fd, root, 0);
}

int open_private_file(const fs::path& file, int flags) {
  // O_NONBLOCK: a FIFO planted under the name must not hang the open.
  int fd = ::open(file.c_str(), (flags & ~O_TRUNC) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, private_file_mode);
  if (fd < 0) {
    const int saved = errno;
    struct stat st {};
    if (saved == ELOOP && ::lstat(file.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) refuse_link(file);
    errno = saved;
    fail_errno("open", file);
  }
  fd_guard guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_errno("stat", file);
  if (!S_ISREG(st.st_mode)) throw unsafe_path_error(file.string() + " is not a regular file: remove it");
  if (st.st_uid != ::geteuid() || st.st_nlink != 1)
    throw unsafe_path_error(file.string() + (st.st_uid != ::geteuid() ? " is owned by uid " + std::to_string(st.st_uid)
                                                                      : std::string(" has several hard links")) +
                            ", and mailnet writes only files of its own: remove it, or use another --dir");
  if ((st.st_mode & 07777) != private_file_mode && ::fchmod(fd, private_file_mode) != 0) fail_errno("chmod", file);
  if ((flags & O_TRUNC) != 0 && ::ftruncate(fd, 0) != 0) fail_errno("truncate", file);
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) fail_errno("fcntl", file);
  return std::exchange(guard.fd, -1);
}

std::string read_private_file(const fs::path& file, std::size_t max) {
  fd_guard fd(open_private_file(file, O_RDONLY));
  std::string data;
  char buf[8192];
  for (;;) {  // bounded by max
    ssize_t n = ::read(fd.fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("read", file);
    if (n == 0) return data;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > max)
      throw std::system_error(EFBIG, std::generic_category(), file.string() + ": larger than " + std::to_string(max) + " bytes");
  }
}

void write_private_file(const fs::path& file, const std::string& data) {
  fd_guard fd(open_private_file(file, O_WRONLY | O_CREAT | O_TRUNC));
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("write", file);
    done += static_cast<std::size_t>(n);
  }
  if (::close(std::exchange(fd.fd, -1)) != 0) fail_errno("write", file);
}

void empty_folder(const fs::path& dir) {
  fd_guard fd = open_top_folder(dir);
  empty_at(fd.fd, dir);
}

}  // namespace mailnet
