// The output folder of one network (run/<name>/ by default) and the files the
// launcher keeps in it: topology.json (what the children read), network.json
// (what is running), launcher.pid, mailnet.sock and launcher.log.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher {

class run_folder {
 public:
  explicit run_folder(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path topology_json() const { return dir_ / "topology.json"; }
  std::filesystem::path network_json() const { return dir_ / "network.json"; }
  std::filesystem::path control_socket() const { return dir_ / "mailnet.sock"; }
  std::filesystem::path pid_file() const { return dir_ / "launcher.pid"; }
  std::filesystem::path launcher_log() const { return dir_ / "launcher.log"; }

  // The pid of a live launcher serving this folder. Leftovers of a dead one
  // (pid file, socket) are removed on the way.
  std::optional<int> running_launcher() const;

  // Creates the folder (emptied first with fresh) and writes topology.json.
  // Earlier mail and queues are kept otherwise. Throws on failure.
  void prepare(const topology& net, bool fresh) const;

  void write_pid(int pid) const;
  void remove_pid() const;

  std::size_t queued_count(const std::string& domain) const;  // .msg files in <domain>/queue

  // Folders under base (default ./run) whose launcher is alive.
  static std::vector<run_folder> running_under(const std::filesystem::path& base);

 private:
  std::filesystem::path dir_;
};

}  // namespace mailnet::launcher
