#include "launcher/run_folder.hpp"

#include <algorithm>

#include "common/passwords.hpp"
#include "common/private_files.hpp"
#include "launcher/tls_ca.hpp"

#include <csignal>
#include <fstream>
#include <sys/socket.h>
#include <sys/un.h>

namespace mailnet::launcher {

topology node_topology(const topology& net, const std::string& domain) {
  // Every network-level setting is copied whole ("tls": false once got lost
  // when this listed them one by one: the nodes then asked for verified TLS
  // that nobody offered, and no mail was relayed); only the domains and the
  // fault rules are narrowed to this node's.
  topology out = net;
  out.domains.clear();
  out.faults.rules.clear();
  std::vector<std::string> wanted{domain};
  for (const auto& r : net.faults.rules)
    if (r.to == domain) {
      out.faults.rules.push_back(r);
      if (std::find(wanted.begin(), wanted.end(), r.from) == wanted.end()) wanted.push_back(r.from);
    }
  for (const auto& d : net.domains)
    if (std::find(wanted.begin(), wanted.end(), d.name) != wanted.end()) out.domains.push_back(d);
  return out;
}

void run_folder::prepare(const topology& net, bool fresh) const {
  // Before anything is written: the folder and everything in it must be
  // ours, with no link and nothing others can write (private_files.hpp).
  make_private_folder(dir_);
  if (fresh) {
    // --fresh empties the folder: only one that mailnet made (it holds
    // topology.json), or an empty one, never a folder named by mistake.
    const bool made_by_us = std::filesystem::symlink_status(topology_json()).type() != std::filesystem::file_type::not_found;
    if (!std::filesystem::is_empty(dir_) && !made_by_us)
      throw std::runtime_error("refusing to empty " + dir_.string() +
                               " for --fresh: it is not a mailnet run folder (no topology.json)");
    empty_folder(dir_);  // a link is removed, never followed
  } else {
    // Mail that arrives now is the user's: the next `mailnet run` must not empty it.
    std::error_code ec;
    std::filesystem::remove(scenario_marker(), ec);
  }
  check_private_tree(dir_);
  make_private_folders(dir_, "resolver");
  if (net.tls) prepare_network_tls(dir_, net);
  prepare_passwords(dir_, net);  // run/<name>/passwords (common/passwords.hpp)
  // sun_path holds 108 bytes; say so now rather than fail after starting.
  if (std::filesystem::absolute(control_socket()).string().size() >= sizeof(sockaddr_un{}.sun_path))
    throw std::runtime_error("the path of " + control_socket().string() + " is too long for a unix socket");
  write_private_file(topology_json(), to_json_text(net));
  for (const auto& d : net.domains) {
    make_private_folders(dir_, d.name);
    write_private_file(node_topology_json(d.name), to_json_text(node_topology(net, d.name)));
  }
}

void run_folder::write_pid(int pid) const { write_private_file(pid_file(), std::to_string(pid) + "\n"); }

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
