// Asking the network's resolver from the command line (`mailnet resolve`,
// and the scenario runner's "resolve" expectations).
#pragma once

#include <chrono>
#include <string>

#include "common/topology.hpp"
#include "common/dns/resolver_client.hpp"

namespace mailnet::launcher {

// Where mail for domain goes, asked as a node asks (blocking).
node::lookup_result lookup_mail_route(const endpoint& resolver, std::chrono::milliseconds timeout, int attempts,
                                      const std::string& domain);
node::lookup_result lookup_mail_domain(const topology& net, const std::string& domain);

// "127.0.0.1:1030", "[::1]:1030"
std::string route_text(const node::mail_route& route);

}  // namespace mailnet::launcher
