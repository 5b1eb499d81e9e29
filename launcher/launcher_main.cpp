#include "launcher/launcher_main.hpp"

#include <CLI/CLI.hpp>
#include <iostream>

#include "common/topology.hpp"
#include "launcher/supervisor.hpp"

namespace mailnet::launcher {

int launcher_main(int argc, char** argv) {
  CLI::App app{"mailnet: a simulated mail network on one machine"};
  app.require_subcommand(1);

  up_options up;
  std::string dir;
  auto* up_cmd = app.add_subcommand("up", "start the network described by a topology file");
  up_cmd->add_option("file", up.topology_file, "topology file (JSON)")->required();
  up_cmd->add_option("--dir", dir, "output folder (default: ./run/<name>)");
  up_cmd->add_flag("--fresh", up.fresh, "start with empty Maildirs and queues");

  std::string validate_file;
  auto* validate_cmd = app.add_subcommand("validate", "check a topology file without starting anything");
  validate_cmd->add_option("file", validate_file, "topology file (JSON)")->required();

  CLI11_PARSE(app, argc, argv);

  if (*up_cmd) {
    if (!dir.empty()) up.dir = dir;
    return run_up(up);
  }
  if (*validate_cmd) {
    try {
      auto net = load_topology(validate_file);
      std::cout << validate_file << ": ok, network " << net.name << " with " << net.domains.size() << " domains\n";
      return 0;
    } catch (const topology_error& e) {
      std::cerr << "mailnet: " << e.what() << "\n";
      return 2;
    }
  }
  return 1;
}

}  // namespace mailnet::launcher
