#include "launcher/run_folder.hpp"

#include <csignal>
#include <fstream>
#include <sys/socket.h>
#include <sys/un.h>

namespace mailnet::launcher {

void run_folder::prepare(const topology& net, bool fresh) const {
  if (fresh && std::filesystem::exists(dir_)) {
    // --fresh empties the folder: only one that mailnet made (it holds
    // topology.json), or an empty one, never a folder named by mistake.
    if (!std::filesystem::is_empty(dir_) && !std::filesystem::exists(topology_json()))
      throw std::runtime_error("refusing to empty " + dir_.string() +
                               " for --fresh: it is not a mailnet run folder (no topology.json)");
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) std::filesystem::remove_all(entry.path());
  }
  std::filesystem::create_directories(dir_ / "resolver");
  // sun_path holds 108 bytes; say so now rather than fail after starting.
  if (std::filesystem::absolute(control_socket()).string().size() >= sizeof(sockaddr_un{}.sun_path))
    throw std::runtime_error("the path of " + control_socket().string() + " is too long for a unix socket");
  std::ofstream out(topology_json());
  out << to_json_text(net);
  if (!out) throw std::runtime_error("cannot write " + topology_json().string());
}

void run_folder::write_pid(int pid) const { std::ofstream(pid_file()) << pid << "\n"; }

void run_folder::remove_pid() const {
  std::error_code ec;
  std::filesystem::remove(pid_file(), ec);
}

std::size_t run_folder::queued_count(const std::string& domain) const {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_ / domain / "queue", ec))
    if (e.path().extension() == ".msg") ++n;
  return n;
}

std::vector<run_folder> run_folder::running_under(const std::filesystem::path& base) {
  std::vector<run_folder> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(base, ec)) {
    run_folder f(e.path());
    // A folder we may not look into is another user's, maybe running: the
    // probe of its launcher.pid says so when it is chosen.
    std::error_code not_ours;
    const bool has_pid = std::filesystem::exists(f.pid_file(), not_ours);
    if (e.is_directory(ec) && (not_ours == std::errc::permission_denied || (has_pid && f.running_launcher())))
      out.push_back(f);
  }
  return out;
}

}  // namespace mailnet::launcher
