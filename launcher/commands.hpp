// The `mailnet` command line is made of groups of subcommands, each in its
// own file: a group adds its CLI11 subcommands and what runs when one of them
// is chosen. launcher_main parses and runs the chosen one.
#pragma once

#include <functional>
#include <vector>

namespace CLI {
class App;
}

namespace mailnet::launcher {

class command_registry {
 public:
  void add(CLI::App* command, std::function<int()> run) { entries_.push_back({command, std::move(run)}); }
  int run_chosen() const;  // the exit code of the parsed subcommand

 private:
  struct entry {
    CLI::App* command;
    std::function<int()> run;
  };
  std::vector<entry> entries_;
};

// up, validate, status, kill, stop, start, restart, down, flush, web, ca, users, queue, logs
void register_network_commands(CLI::App& app, command_registry& commands);

// resolve NAME [TYPE]
void register_resolver_commands(CLI::App& app, command_registry& commands);

// run, init, graph
void register_scenario_commands(CLI::App& app, command_registry& commands);

// fault list, fault add, fault clear
void register_fault_commands(CLI::App& app, command_registry& commands);

// send, inbox, show, trace
void register_mail_commands(CLI::App& app, command_registry& commands);

}  // namespace mailnet::launcher
