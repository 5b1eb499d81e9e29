#include "launcher/launcher_main.hpp"

#include <CLI/CLI.hpp>

#include "launcher/commands.hpp"

namespace mailnet::launcher {

int command_registry::run_chosen() const {
  for (const auto& e : entries_)
    if (*e.command) return e.run();
  return 1;
}

int launcher_main(int argc, char** argv) {
  CLI::App app{"mailnet: a simulated mail network on one machine"};
  app.require_subcommand(1);
  command_registry commands;
  register_network_commands(app, commands);
  register_mail_commands(app, commands);
  register_resolver_commands(app, commands);
  register_scenario_commands(app, commands);
  CLI11_PARSE(app, argc, argv);
  return commands.run_chosen();
}

}  // namespace mailnet::launcher
