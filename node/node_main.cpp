#include "node/node_main.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <iostream>
#include <malloc.h>
#include <unistd.h>

#include "common/fd_limit.hpp"
#include "common/full_teardown.hpp"
#include "node/node_service.hpp"

namespace mailnet::node {

namespace {
// How long a graceful stop waits for sessions in DATA and relay attempts
// under way; the launcher waits longer than this before its SIGKILL.
constexpr std::chrono::milliseconds drain_deadline{5000};
}  // namespace

int node_main(int argc, char** argv) {
  CLI::App app{"mailnet-node: one mail domain's SMTP server"};
  std::string topology_file, domain, run_dir;
  std::string network_topology_file;
  app.add_option("--topology", topology_file, "resolved topology (the run folder's topology.json)")->required();
  app.add_option("--network-topology", network_topology_file,
                 "with a --topology that holds this node's part of the network only (the launcher's "
                 "<run>/<domain>/topology.json): the whole network's, read when a fault rule needs "
                 "every domain's name");
  app.add_option("--domain", domain, "the domain this node serves")->required();
  app.add_option("--run-dir", run_dir, "the network's output folder")->required();
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout or socket is an error value, not death
  raise_fd_limit();               // room for limits.connections sessions
  try {
    auto net = load_topology(topology_file);
    std::vector<std::string> network_domains;  // fault rules tell nodes from clients by them
    for (const auto& d : net.domains) network_domains.push_back(d.name);
    // A node needs only its own domain (the others are the resolver's):
    // in a network of 500 the rest was most of an idle node's own memory.
    if (const auto* own = net.find_domain(domain)) {
      std::vector<domain_config> only{*own};
      net.domains.swap(only);
    }
    ::malloc_trim(0);  // and give the parse's memory back
    boost::asio::io_context io(1);
    std::function<std::vector<std::string>()> load_network_domains;
    if (!network_topology_file.empty())
      load_network_domains = [network_topology_file] {
        std::vector<std::string> names;
        for (const auto& d : load_topology(network_topology_file).domains) names.push_back(d.name);
        ::malloc_trim(0);
        return names;
      };
    node_service service(io, std::move(net), domain, std::filesystem::path(run_dir) / domain, true,
                         std::move(network_domains), std::move(load_network_domains));
    // SIGTERM (mailnet stop, restart, down) or SIGINT (Ctrl-C): a graceful
    // stop within drain_deadline. Later signals change nothing: the
    // launcher's SIGKILL, after its own longer wait, is the way to stop at once.
    boost::asio::signal_set signals(io, SIGTERM, SIGINT);
    std::function<void(const boost::system::error_code&, int)> on_stop = [&](const boost::system::error_code& ec,
                                                                             int) {
      if (ec) return;
      service.shut_down(drain_deadline);
      signals.async_wait(on_stop);
    };
    signals.async_wait(on_stop);
    // SIGUSR1: retry the queue now (the launcher sends it when a node comes back).
    boost::asio::signal_set flush_signal(io, SIGUSR1);
    std::function<void(const boost::system::error_code&, int)> on_flush = [&](const boost::system::error_code& ec,
                                                                               int) {
      if (ec) return;
      service.flush();
      flush_signal.async_wait(on_flush);
    };
    flush_signal.async_wait(on_flush);
    // SIGUSR2: the launcher changed this node's faults.json (mailnet fault add, clear).
    boost::asio::signal_set faults_signal(io, SIGUSR2);
    std::function<void(const boost::system::error_code&, int)> on_faults = [&](const boost::system::error_code& ec,
                                                                                int) {
      if (ec) return;
      service.reload_faults();
      faults_signal.async_wait(on_faults);
    };
    faults_signal.async_wait(on_faults);
    service.start();  // after the handlers: a SIGUSR1 right after "ready" must not kill us
    io.run();
    // Stopped. What must be on disk is written now; then, in a normal build,
    // the process ends without its teardown: joining a dozen idle threads
    // (each unmapping its stack), freeing every object and the libraries'
    // exit handlers were most of an idle node's stop, times a thousand nodes
    // at `mailnet down` (bench/README.md, "mailnet down at 1,000 domains").
    // The kernel takes the threads, the memory and the descriptors back.
    service.finish();
    if (!full_teardown_at_exit) ::_exit(0);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "mailnet-node " << domain << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace mailnet::node
