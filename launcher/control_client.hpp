// The client side of the launcher's control socket: one JSON line out, one
// JSON line back. Plain POSIX sockets: the commands that use it stay light.
#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "launcher/run_folder.hpp"

namespace mailnet::launcher {

struct network_choice {
  std::optional<std::filesystem::path> dir;  // --dir
  std::string net;                           // --net
};

// The folder of the running network the user means. Throws std::runtime_error
// with a message for the user when there is none, or more than one to choose from.
run_folder locate_network(const network_choice& choice);

// For the commands that only read a network's files (inbox, show, logs): the
// folder named by --dir or --net, running or not (it must hold topology.json);
// else the one network that is up; else, when nothing is up, the one network
// that ran under ./run. Throws std::runtime_error saying what to do.
run_folder locate_network_files(const network_choice& choice);

// Sends request and returns the reply. Throws std::runtime_error.
nlohmann::json ask_launcher(const run_folder& folder, const nlohmann::json& request,
                            std::chrono::milliseconds timeout = std::chrono::seconds(40));

}  // namespace mailnet::launcher
