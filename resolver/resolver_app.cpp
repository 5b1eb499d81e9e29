#include "resolver/resolver_app.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/system/system_error.hpp>

#include <csignal>
#include <exception>
#include <iostream>
#include <optional>
#include <random>

#include "common/event_log.hpp"
#include "common/private_files.hpp"
#include "common/topology.hpp"
#include "resolver/dns_faults.hpp"
#include "resolver/dns_server.hpp"

namespace mailnet::resolver {

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
    server->stop();  // the TCP side too, or io.run() would never return
  });

  const auto bound = server->local_endpoint();
  log.write({{"event", "ready"}, {"listen", endpoint{bound.address().to_string(), bound.port()}.to_string()}});
  io.run();
  log.write({{"event", "stopped"}});
  return exit_code;
}

}  // namespace mailnet::resolver
