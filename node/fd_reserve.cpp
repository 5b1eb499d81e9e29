#include "node/fd_reserve.hpp"

#include <cerrno>
#include <fcntl.h>
#include <filesystem>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace mailnet::node {

namespace {

int open_spare() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

std::size_t open_descriptors() {
  std::error_code ec;
  std::size_t n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) ++n;
  return n > 0 ? n - 1 : 0;  // the iterator's own descriptor
}

}  // namespace

fd_reserve::fd_reserve() : spare_(open_spare()) {}

fd_reserve::~fd_reserve() {
  if (spare_ >= 0) ::close(spare_);
}

void fd_reserve::measure() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const std::size_t total = limit.rlim_cur, used = open_descriptors() + work_reserve;
  session_cap_ = total > used + 2 ? (total - used) / 2 : 1;
}

bool fd_reserve::refuse_waiting(int listen_fd, std::string_view reply) {
  if (spare_ < 0 && (spare_ = open_spare()) < 0) return false;
  ::close(spare_);
  spare_ = -1;
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) {
    answer_now(fd, reply);
    ::close(fd);
  }
  spare_ = open_spare();  // the descriptor just closed is the lowest free one
  return fd >= 0;
}

void fd_reserve::answer_now(int fd, std::string_view reply) {
  ssize_t n;
  do {
    n = ::send(fd, reply.data(), reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
}

}  // namespace mailnet::node
