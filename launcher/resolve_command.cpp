// `mailnet resolve NAME [TYPE]`: asks the running network's resolver, the way
// a node does, and prints the answer for a person.
#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>

#include "common/terminal_text.hpp"
#include "common/topology.hpp"
#include "launcher/commands.hpp"
#include "launcher/control_client.hpp"
#include "launcher/resolve_command.hpp"
#include "common/dns/resolver_client.hpp"

namespace mailnet::launcher {

namespace {

namespace asio = boost::asio;
using node::dns_reply;
using node::reply_kind;

const std::map<std::string, std::uint16_t> known_types = {
    {"A", node::dns_type::a}, {"AAAA", node::dns_type::aaaa}, {"MX", node::dns_type::mx}, {"SRV", node::dns_type::srv},
    {"TXT", node::dns_type::txt}, {"PTR", node::dns_type::ptr}};

// Exit codes: 0 an answer, 1 no such name (or no data), 2 the resolver did not answer usefully.
int print_reply(const std::string& name, const std::string& type, const dns_reply& reply) {
  switch (reply.kind) {
    case reply_kind::nxdomain:
      std::cout << name << ": no such name (NXDOMAIN)\n";
      return 1;
    case reply_kind::nodata:
      std::cout << name << ": no " << type << " record\n";
      return 1;
    case reply_kind::failure:
      std::cerr << "mailnet: the resolver did not answer usefully: " << terminal_safe(reply.detail) << "\n";
      return 2;
    case reply_kind::answer:
      break;
  }
  for (const auto& s : reply.srv)
    std::cout << name << " SRV → " << terminal_safe(s.target) << ":" << s.port << " (priority " << s.priority << ", weight "
              << s.weight << ")\n";
  for (const auto& m : reply.mx) std::cout << name << " MX → " << terminal_safe(m.exchange) << " (preference " << m.preference << ")\n";
  for (const auto& n : reply.names) std::cout << name << " PTR → " << terminal_safe(n) << "\n";
  // Record text is anyone's: shown quoted, control characters escaped.
  for (const auto& t : reply.texts) std::cout << name << " TXT \"" << terminal_safe(t) << "\"\n";
  std::vector<std::string> printed;  // the answer and the additional section may repeat a record
  for (const auto& a : reply.addresses) {
    std::string line = a.owner + " " + (a.address.find(':') == std::string::npos ? "A" : "AAAA") + " → " + a.address;
    if (std::find(printed.begin(), printed.end(), line) != printed.end()) continue;
    printed.push_back(line);
    std::cout << terminal_safe(line) << "\n";
  }
  return 0;
}

int resolve(const run_folder& folder, std::string name, std::string type) {
  auto net = load_topology(folder.topology_json());
  for (auto& c : type) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // An address: its PTR, under its in-addr.arpa or ip6.arpa name.
  if (auto reverse = reverse_dns_name(name); !reverse.empty() && (type.empty() || type == "PTR")) {
    type = "PTR";
    reverse.pop_back();
    name = reverse;
  }
  if (type.empty()) {
    // A mail domain, as a node routes it: SRV, else MX + address, port 25.
    auto result = lookup_mail_domain(net, name);
    if (result.status == node::lookup_status::ok) {
      for (const auto& route : result.routes) std::cout << node::canonical_name(name) << " → " << route_text(route) << "\n";
      return 0;
    }
    if (result.status == node::lookup_status::nxdomain) {
      std::cout << node::canonical_name(name) << ": no such mail domain (" << result.detail << ")\n";
      return 1;
    }
    std::cerr << "mailnet: the resolver at " << net.resolver.listen.to_string() << " did not answer: " << result.detail
              << "\n";
    return 2;
  }
  asio::io_context io(1);
  const auto& r = net.resolver;
  node::resolver_client client(io.get_executor(),
                               asio::ip::udp::endpoint(asio::ip::make_address(r.listen.host), r.listen.port),
                               r.query_timeout, r.query_attempts);
  auto it = known_types.find(type);
  if (it == known_types.end()) {
    std::cerr << "mailnet: unknown record type '" << type << "' (expected A, AAAA, MX, SRV, TXT or PTR)\n";
    return 2;
  }
  if (!node::is_queryable_name(name)) {
    std::cerr << "mailnet: '" << name << "' is not a valid DNS name\n";
    return 2;
  }
  int code = 2;
  asio::co_spawn(io, client.query(name, it->second), [&](std::exception_ptr e, dns_reply reply) {
    if (!e) code = print_reply(name, type, reply);
  });
  io.run();
  return code;
}

}  // namespace

node::lookup_result lookup_mail_route(const endpoint& resolver, std::chrono::milliseconds timeout, int attempts,
                                      const std::string& domain) {
  asio::io_context io(1);
  node::resolver_client client(io.get_executor(),
                               asio::ip::udp::endpoint(asio::ip::make_address(resolver.host), resolver.port), timeout,
                               attempts);
  node::lookup_result result;
  result.detail = "internal error";
  asio::co_spawn(io, client.lookup_mail_route(domain), [&](std::exception_ptr e, node::lookup_result got) {
    if (!e) result = std::move(got);
  });
  io.run();
  return result;
}

node::lookup_result lookup_mail_domain(const topology& net, const std::string& domain) {
  return lookup_mail_route(net.resolver.listen, net.resolver.query_timeout, net.resolver.query_attempts, domain);
}

std::string route_text(const node::mail_route& route) {
  return (route.host.find(':') == std::string::npos ? route.host : "[" + route.host + "]") + ":" +
         std::to_string(route.port);
}

void register_resolver_commands(CLI::App& app, command_registry& commands) {
  struct options {
    std::string dir, net, name, type;
  };
  auto o = std::make_shared<options>();
  auto* cmd = app.add_subcommand("resolve", "ask the running network's resolver: a mail domain, or NAME TYPE");
  cmd->add_option("name", o->name, "a domain (where does its mail go?) or any name")->required();
  cmd->add_option("type", o->type, "A, AAAA, MX, SRV, TXT or PTR (an address alone: its PTR)");
  cmd->add_option("--dir", o->dir, "the network's output folder");
  cmd->add_option("--net", o->net, "the network's name, when several are up under ./run");
  commands.add(cmd, [o] {
    try {
      network_choice choice;
      if (!o->dir.empty()) choice.dir = o->dir;
      choice.net = o->net;
      return resolve(locate_network(choice), o->name, o->type);
    } catch (const std::exception& e) {
      std::cerr << "mailnet: " << e.what() << "\n";
      return 2;
    }
  });
}

}  // namespace mailnet::launcher
