#include "launcher/launcher_main.hpp"

#include <CLI/CLI.hpp>
#include <iostream>

#include "launcher/child_spawn.hpp"
#include "launcher/commands.hpp"

namespace mailnet::launcher {

int command_registry::run_chosen() const {
  for (const auto& e : entries_)
    if (*e.command) return e.run();
  return 1;
}

int launcher_main(int argc, char** argv) {
  ensure_standard_descriptors();  // `mailnet up >&-`: no child's pipe may become its stdout
  CLI::App app{"mailnet: a simulated mail network on one machine", "mailnet"};
  app.require_subcommand(1);
  command_registry commands;
  register_network_commands(app, commands);
  register_fault_commands(app, commands);
  register_mail_commands(app, commands);
  register_resolver_commands(app, commands);
  register_scenario_commands(app, commands);
  // No arguments at all: the help, as a newcomer expects.
  if (argc <= 1) {
    std::cout << app.help();
    return 0;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and succeeds; every other parse error is bad input,
    // exit 2 like a bad topology or a bad address (CLI11 has its own codes).
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return commands.run_chosen();
}

}  // namespace mailnet::launcher
