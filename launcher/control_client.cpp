#include "launcher/control_client.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace mailnet::launcher {

namespace {

// The folder of the network the user means, whoever runs it.
run_folder find_running(const network_choice& choice) {
  if (choice.dir) {
    run_folder f(*choice.dir);
    if (!f.running_launcher()) throw std::runtime_error("no network is up in " + choice.dir->string());
    return f;
  }
  if (!choice.net.empty()) {
    run_folder f(std::filesystem::path("run") / choice.net);
    if (!f.running_launcher()) throw std::runtime_error("network " + choice.net + " is not up (looked in run/" + choice.net + ")");
    return f;
  }
  auto up = run_folder::running_under("run");
  if (up.empty()) throw std::runtime_error("no network is up under ./run (start one with `mailnet up FILE`, or name its folder with --dir)");
  if (up.size() > 1) {
    std::string names;
    for (const auto& f : up) names += (names.empty() ? "" : ", ") + f.dir().filename().string();
    throw std::runtime_error("several networks are up (" + names + "): choose one with --net NAME");
  }
  return up.front();
}

}  // namespace

run_folder locate_network(const network_choice& choice) {
  auto folder = find_running(choice);
  folder.refuse_other_users_launcher();
  return folder;
}

run_folder locate_network_files(const network_choice& choice) {
  namespace fs = std::filesystem;
  if (choice.dir || !choice.net.empty()) {
    const fs::path dir = choice.dir ? *choice.dir : fs::path("run") / choice.net;
    run_folder f(dir);
    f.refuse_other_users_launcher();  // another user's network: said so, as every command does
    if (!fs::exists(f.topology_json())) throw std::runtime_error("no network folder at " + dir.string() + " (no topology.json)");
    return f;
  }
  if (!run_folder::running_under("run").empty()) return locate_network(choice);
  // Nothing is up: the files of a network that ran here are still there to read.
  std::vector<fs::path> ran;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("run", ec))
    if (fs::exists(entry.path() / "topology.json", ec)) ran.push_back(entry.path());
  if (ran.size() == 1) return run_folder(ran.front());
  if (ran.empty()) return locate_network(choice);  // its message says what to do
  throw std::runtime_error("no network is up and several have run under ./run: choose one with --net NAME or --dir");
}

nlohmann::json ask_launcher(const run_folder& folder, const nlohmann::json& request, std::chrono::milliseconds timeout) {
  const std::string path = folder.control_socket().string();
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("control socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const bool denied = errno == EACCES;
    throw std::runtime_error("cannot reach the launcher at " + path + ": " + std::strerror(errno) +
                             (denied ? " (the socket is its owner's alone: the network belongs to another user)" : ""));
  }
  std::string line = request.dump() + "\n";
  for (std::size_t sent = 0; sent < line.size();) {
    ssize_t n = ::send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // A launcher that refuses this user answers at once and hangs up: its
    // answer is still there to read.
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
    if (n < 0) throw std::runtime_error(std::string("send to the launcher: ") + std::strerror(errno));
    sent += static_cast<std::size_t>(n);
  }
  std::string reply;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (reply.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("the launcher did not answer within " + std::to_string(timeout.count()) + " ms");
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("the launcher closed the connection without an answer");
    reply.append(buf, static_cast<std::size_t>(n));
    if (reply.size() > (16u << 20)) throw std::runtime_error("the launcher's answer is too large");
  }
  return nlohmann::json::parse(reply.substr(0, reply.find('\n')));
}

}  // namespace mailnet::launcher
