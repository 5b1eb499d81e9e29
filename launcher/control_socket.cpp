#include "launcher/control_socket.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace mailnet::launcher {

namespace {

std::string failed(const std::string& what) { return what + ": " + std::strerror(errno); }

// bind(2) gives a unix socket the mode 0777 & ~umask. With 0177 it is born
// 0600, so it is never reachable by others, not even for a moment.
bool bind_owner_only(int fd, const sockaddr_un& addr) {
  const mode_t previous = ::umask(0177);
  const int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int saved = errno;
  ::umask(previous);
  errno = saved;
  return rc == 0;
}

// The socket file is ours, a socket, and 0600; chmod when only the mode differs.
bool verify_mode(const std::string& path, std::string& error) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return error = failed("stat " + path), false;
  if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid())
    return error = path + " is not a socket of this user's after bind", false;
  if ((st.st_mode & 07777) != 0600 && ::chmod(path.c_str(), 0600) != 0) return error = failed("chmod " + path), false;
  return true;
}

}  // namespace

int listen_owner_only(const std::filesystem::path& path, std::string& error) {
  const std::string text = path.string();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (text.size() >= sizeof addr.sun_path) return error = "the path " + text + " is too long for a unix socket", -1;
  std::memcpy(addr.sun_path, text.c_str(), text.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return error = failed("socket"), -1;
  bool ok = bind_owner_only(fd, addr);
  if (!ok) error = failed("bind " + text);
  if (ok && !(ok = verify_mode(text, error))) ::unlink(text.c_str());
  if (ok && !(ok = ::listen(fd, SOMAXCONN) == 0)) error = failed("listen on " + text);
  if (ok) return fd;
  ::close(fd);
  return -1;
}

int accept_control_client(int listener) {
  int fd;
  do fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  return fd;
}

std::optional<std::string> refusal_for_peer(int fd) {
  ucred peer{};
  socklen_t len = sizeof peer;
  const uid_t owner = ::geteuid();
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
    return "refused: cannot tell who is connecting (" + std::string(std::strerror(errno)) + ")";
  if (peer.uid == owner || peer.uid == 0) return std::nullopt;
  return "refused: uid " + std::to_string(peer.uid) + " is not the owner of this network (uid " +
         std::to_string(owner) + ")";
}

}  // namespace mailnet::launcher
