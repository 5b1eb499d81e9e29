// The output folder of one network (run/<name>/ by default) and the files the
// launcher keeps in it: topology.json (what the children read), network.json
// (what is running), launcher.pid, mailnet.sock, launcher.log, and
// scenario-run.txt in a folder that `mailnet run` made.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher {

// The part of a topology one domain's node needs: the network's settings,
// its own domain, the fault rules acting on it, and the domains those rules
// name as senders (so that the result is a valid topology of its own).
topology node_topology(const topology& net, const std::string& domain);

class run_folder {
 public:
  explicit run_folder(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path topology_json() const { return dir_ / "topology.json"; }
  // A node's own part of topology.json (node_topology below), what its node
  // reads at its start: in a network of a thousand domains, each node parsing
  // the whole file made the start O(domains²).
  std::filesystem::path node_topology_json(const std::string& domain) const { return dir_ / domain / "topology.json"; }
  std::filesystem::path network_json() const { return dir_ / "network.json"; }
  std::filesystem::path control_socket() const { return dir_ / "mailnet.sock"; }
  std::filesystem::path pid_file() const { return dir_ / "launcher.pid"; }
  std::filesystem::path launcher_log() const { return dir_ / "launcher.log"; }
  // Written by `mailnet run` after its `up --fresh` (it names the scenario):
  // the folder holds a scenario's mail, which the next `mailnet run` may empty.
  // `up` without --fresh removes it: the mail is then the user's.
  std::filesystem::path scenario_marker() const { return dir_ / "scenario-run.txt"; }

  // What launcher.pid says, read without changing anything.
  struct launcher_probe {
    enum class state { none, gone, running, other_user } what = state::none;
    int pid = 0;
    std::string why;  // for other_user: whose it is and what can be done, for the user
  };
  launcher_probe probe_launcher() const;

  // The pid of a live launcher serving this folder, the user's own or another
  // user's. Leftovers (pid file, socket) are removed on the way only when the
  // launcher is known to be gone: never for a pid that cannot be signalled
  // (EPERM: it runs as another user) or a pid file that cannot be read.
  std::optional<int> running_launcher() const;

  // Throws std::runtime_error saying so when the launcher runs as another
  // user: only that user (or root) may control the network.
  void refuse_other_users_launcher() const;

  // Creates the folder (emptied first with fresh), the domains' DKIM keys
  // (their public halves written into net: dkim_keys.hpp) and writes
  // topology.json. Earlier mail, queues and keys are kept otherwise. Throws
  // on failure.
  void prepare(topology& net, bool fresh) const;

  void write_pid(int pid) const;
  void remove_pid() const;

  std::size_t queued_count(const std::string& domain) const;  // .msg files in <domain>/queue

  // Folders under base (default ./run) whose launcher is alive.
  static std::vector<run_folder> running_under(const std::filesystem::path& base);

 private:
  std::filesystem::path dir_;
};

}  // namespace mailnet::launcher
