// A whole node in this process, its descriptor table filled to EMFILE: the
// connection it cannot serve still gets 421 4.3.2 (its spare descriptor),
// not silence in the listen queue.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <chrono>
#include <boost/asio/io_context.hpp>
#include <fcntl.h>
#include <netinet/in.h>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "node/node_service.hpp"
#include "temp_dir.hpp"

using namespace mailnet;

namespace {

// Lowers the soft open-file limit for one test (filling a table of a million
// takes long), and puts it back.
struct soft_fd_limit {
  rlimit saved{};
  explicit soft_fd_limit(rlim_t n) {
    ::getrlimit(RLIMIT_NOFILE, &saved);
    rlimit low = saved;
    if (low.rlim_cur == RLIM_INFINITY || low.rlim_cur > n) low.rlim_cur = n;
    ::setrlimit(RLIMIT_NOFILE, &low);
  }
  ~soft_fd_limit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
};

// The first reply line on a connection to port, or "" after 10 s of silence.
std::string first_reply(int fd) {
  timeval wait{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  std::string got;
  char buf[256];
  while (got.find("\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

}  // namespace

TEST_CASE("a node at EMFILE answers a new connection 421 4.3.2 and serves again after") {
  test::temp_dir dir("fd_spare");
  topology net;
  net.name = "spare";
  net.resolver.listen = {"127.0.0.1", 9};  // never asked: the node relays nothing here
  domain_config jaku;
  jaku.name = "jaku.com";
  jaku.listen = {"127.0.0.1", 0};
  jaku.users = {"rey"};
  net.domains.push_back(jaku);

  soft_fd_limit limit(1024);
  boost::asio::io_context io(1);
  node::node_service node(io, net, "jaku.com", dir.path / "jaku.com", false);
  const auto port = node.start();
  std::thread runner([&] { io.run(); });

  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto connect_one = [&] {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0);
    return fd;
  };

  // Every descriptor of the process taken but one, which the client takes.
  std::vector<int> fillers;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
  ::close(fillers.back());
  fillers.pop_back();
  int client = connect_one();
  const std::string refused = first_reply(client);
  ::close(client);
  for (int fd : fillers) ::close(fd);
  CHECK(refused.rfind("421 4.3.2 ", 0) == 0);

  // Serves again once descriptors are free. Other threads of this test
  // binary may hold a descriptor for a moment as the table empties, so a
  // connection refused meanwhile is tried again, up to a deadline.
  std::string greeting;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
       greeting.rfind("220 ", 0) != 0 && std::chrono::steady_clock::now() < deadline;) {
    client = connect_one();
    greeting = first_reply(client);
    ::close(client);
  }
  CHECK(greeting.rfind("220 ", 0) == 0);

  io.stop();
  runner.join();
}
