// What a node keeps back at its descriptor limit (RLIMIT_NOFILE): room to
// commit the mail it holds, and one spare descriptor to answer a connection
// it cannot serve with 421 4.3.2 instead of leaving it unanswered in the
// listen queue. Plain POSIX, no Asio: the accept loop passes raw descriptors.
#pragma once

#include <cstddef>
#include <string_view>

namespace mailnet::node {

class fd_reserve {
 public:
  // Descriptors kept for the node's own work whatever the sessions hold: the
  // group commit's files and folders, relay connections, the resolver, logs.
  static constexpr std::size_t work_reserve = 32;

  fd_reserve();  // opens the spare
  ~fd_reserve();
  fd_reserve(const fd_reserve&) = delete;
  fd_reserve& operator=(const fd_reserve&) = delete;

  // Sessions a node admits with the descriptors it has: each session counts
  // two (its socket, and its message's file while the group commit holds it
  // open), after those open now and work_reserve. Measured once, at start.
  std::size_t session_cap() const { return session_cap_; }
  void measure();

  // At EMFILE: gives up the spare for a moment to accept one waiting
  // connection, answers it reply and closes it. False when no connection was
  // waiting or the spare could not be used (then the caller pauses).
  bool refuse_waiting(int listen_fd, std::string_view reply);

  // Answers reply on a connection already accepted, without waiting (the
  // send buffer of a new socket is empty), and closes nothing.
  static void answer_now(int fd, std::string_view reply);

 private:
  int spare_ = -1;
  std::size_t session_cap_ = static_cast<std::size_t>(-1);
};

}  // namespace mailnet::node
