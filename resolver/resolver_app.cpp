#include "resolver/resolver_app.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/system/system_error.hpp>

#include <csignal>
#include <exception>
#include <functional>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/event_log.hpp"
#include "common/private_files.hpp"
#include "common/topology.hpp"
#include "resolver/dns_fault_file.hpp"
#include "resolver/dns_faults.hpp"
#include "resolver/dns_server.hpp"

namespace mailnet::resolver {

namespace {

// <run>/resolver/faults.json (dns_fault_file.hpp); none when there is no
// file at the start, or when it cannot be used: then event=fault_rules_error
// names the file and the mistake, and the rules stay as they were.
std::optional<run_time_faults> read_faults_file(const std::filesystem::path& file,
                                                const std::vector<std::string>& domains, event_log& log,
                                                bool at_start) {
  try {
    std::error_code ec;
    if (at_start && !std::filesystem::exists(std::filesystem::symlink_status(file, ec))) return std::nullopt;
    return read_run_time_faults(file, domains);
  } catch (const std::exception& e) {
    log.write({{"event", "fault_rules_error"}, {"file", file.string()}, {"error", e.what()},
               {"kept", "the rules in force"}});
    return std::nullopt;
  }
}

// The launcher waits for this line (its generation) after a change.
void log_fault_rules(event_log& log, const run_time_faults& loaded, const dns_faults& in_force) {
  log.write({{"event", "fault_rules"}, {"generation", std::to_string(loaded.generation)},
             {"rules", std::to_string(in_force.size())}, {"added", std::to_string(loaded.added.size())},
             {"cleared", std::to_string(loaded.cleared.size())}, {"seed", std::to_string(in_force.seed())}});
}

}  // namespace

int resolver_main(int argc, char** argv) {
  CLI::App app{"mailnet-resolver: the authoritative DNS server of a mailnet network"};
  std::string topology_file;
  std::string run_dir;
  app.add_option("--topology", topology_file, "topology JSON file")->required();
  app.add_option("--run-dir", run_dir, "the network's output folder")->required();
  CLI11_PARSE(app, argc, argv);

  topology net;
  try {
    net = load_topology(topology_file);
  } catch (const std::exception& e) {
    std::cerr << "mailnet-resolver: " << e.what() << '\n';
    return 1;
  }

  event_log log;
  const auto log_file = std::filesystem::path(run_dir) / "resolver" / "resolver.log";
  try {
    // Its folder: ours and 0700, not a link someone planted (private_files.hpp).
    mailnet::make_private_folder(log_file.parent_path());
    log.open(log_file, true);
  } catch (const std::exception& e) {
    std::cerr << "mailnet-resolver: " << e.what() << '\n';  // names the file
    return 1;
  }

  // The dns fault rules; without a seed in the topology, one of our own,
  // logged so that a run can be replayed.
  std::random_device random;
  const std::uint64_t random_seed = ((std::uint64_t{random()} << 32) | random()) & ((1ULL << 53) - 1);
  dns_faults faults(net.faults, random_seed, std::chrono::steady_clock::now());
  if (!faults.empty())
    log.write({{"event", "faults"}, {"seed", std::to_string(faults.seed())}, {"rules", std::to_string(faults.size())},
               {"seeded_by", net.faults.seed ? "topology" : "resolver"}});
  // Rules added or cleared at run time (a restart keeps them): the file the
  // launcher writes, read now and again at each SIGUSR2.
  const auto faults_file = log_file.parent_path() / "faults.json";
  std::vector<std::string> domains;
  for (const auto& d : net.domains) domains.push_back(d.name);
  if (auto loaded = read_faults_file(faults_file, domains, log, true)) {
    faults.set_run_time(loaded->added, loaded->cleared);
    log_fault_rules(log, *loaded, faults);
  }

  boost::asio::io_context io;
  std::optional<dns_server> server;
  try {
    server.emplace(io.get_executor(), zone(net, net.resolver.ttl), net.resolver.listen, log, std::move(faults));
  } catch (const boost::system::system_error& e) {
    std::cerr << "mailnet-resolver: cannot listen on udp " << net.resolver.listen.to_string() << ": "
              << e.code().message() << '\n';
    log.write({{"event", "bind_failed"}, {"listen", net.resolver.listen.to_string()}, {"error", e.code().message()}});
    return 1;
  }

  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int signal_number) {
    if (ec) return;
    log.write({{"event", "stopping"}, {"signal", signal_number == SIGTERM ? "TERM" : "INT"}});
    server->stop();
  });

  // SIGUSR2: the launcher changed faults.json (mailnet fault add, clear).
  // Handled on the event loop, between two queries: none is dropped.
  boost::asio::signal_set faults_signal(io, SIGUSR2);
  std::function<void(const boost::system::error_code&, int)> on_faults = [&](const boost::system::error_code& ec,
                                                                              int) {
    if (ec) return;
    if (auto loaded = read_faults_file(faults_file, domains, log, false)) {
      server->change_faults([&](dns_faults& rules) { rules.set_run_time(loaded->added, loaded->cleared); });
      log_fault_rules(log, *loaded, server->faults());
    }
    faults_signal.async_wait(on_faults);
  };
  faults_signal.async_wait(on_faults);

  int exit_code = 0;
  if (server->tcp_ready()) boost::asio::co_spawn(io, server->run_tcp(), boost::asio::detached);
  boost::asio::co_spawn(io, server->run(), [&](std::exception_ptr failure) {
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        log.write({{"event", "crashed"}, {"error", e.what()}});
      }
      exit_code = 1;
    }
    signals.cancel();
    faults_signal.cancel();
    server->stop();  // the TCP side too, or io.run() would never return
  });

  const auto bound = server->local_endpoint();
  log.write({{"event", "ready"}, {"listen", endpoint{bound.address().to_string(), bound.port()}.to_string()}});
  io.run();
  log.write({{"event", "stopped"}});
  return exit_code;
}

}  // namespace mailnet::resolver
