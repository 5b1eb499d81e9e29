// A whole node in one object: listener, sessions, stores and relay, on the
// caller's io_context. main() runs one; tests can run one in-process on port 0.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/topology.hpp"

namespace boost::asio {
class io_context;
}

namespace mailnet::node {

class node_service {
 public:
  // domain_dir is <run>/<domain>; logs echo to stdout when echo is true.
  // network_domains: every domain of the network, for fault rules "from":
  // "clients" (empty: the domains of net). load_network_domains, when given:
  // net holds only part of the network (the launcher's node topology), and
  // this reads every domain's name when a rule needs them (a "clients" rule,
  // at the start or from faults.json; a faults.json to check), once.
  node_service(boost::asio::io_context& io, topology net, const std::string& domain,
               std::filesystem::path domain_dir, bool echo, std::vector<std::string> network_domains = {},
               std::function<std::vector<std::string>()> load_network_domains = {});
  ~node_service();

  // Binds the listener (throws std::system_error naming the address), creates
  // the Maildirs, recovers the queue, starts accepting, logs event=ready and
  // returns the bound port.
  std::uint16_t start();
  void stop();   // stops accepting; sessions end with the io_context
  // A graceful stop: stops accepting and starting relay attempts, lets the
  // sessions in DATA and the attempts under way finish within drain, answers
  // the other sessions 421 4.3.2, then stops the io_context. Logs
  // event=stopping and event=stopped.
  void shut_down(std::chrono::milliseconds drain);
  // After the io_context has stopped: the commits under way finish (those
  // not yet begun are dropped: their sessions got no 250), the disk work
  // waiting (queue rewrites and removals, attachments) is done, and the
  // logs' last lines are written. What a stop must leave on disk is there
  // then; the rest of the teardown (threads, memory) is the kernel's at
  // exit. The destructor does the same, and more. When the committer and
  // the pools have nothing left to do, they are not stopped: their threads
  // only wait.
  void finish();
  void flush();  // retries every waiting message now
  // Reads <domain>/faults.json again (the launcher's SIGUSR2): the rules
  // added and cleared at run time (fault_plan::set_run_time).
  void reload_faults(bool at_start = false);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace mailnet::node
