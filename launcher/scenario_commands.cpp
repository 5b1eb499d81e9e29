// run, init and graph: the commands that make and play scenario files.
#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <cctype>
#include <fstream>
#include <iostream>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/socket.h>
#include <unistd.h>
#include <variant>

#include "common/json_reader.hpp"
#include "common/topology.hpp"
#include "launcher/bind_rights.hpp"
#include "launcher/commands.hpp"
#include "launcher/graph.hpp"
#include "launcher/scenario_runner.hpp"

namespace mailnet::launcher {

namespace {

using json = nlohmann::json;

// Whether a socket of this type can bind host:port now (host: a loopback
// literal, as the topology keeps it).
bool can_bind(const endpoint& at, int type) {
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  const sockaddr* addr = nullptr;
  socklen_t len = 0;
  if (::inet_pton(AF_INET, at.host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(at.port);
    addr = reinterpret_cast<const sockaddr*>(&v4);
    len = sizeof v4;
  } else if (::inet_pton(AF_INET6, at.host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(at.port);
    addr = reinterpret_cast<const sockaddr*>(&v6);
    len = sizeof v6;
  } else {
    return false;
  }
  int fd = ::socket(addr->sa_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int on = 1;  // as the node binds: a previous server's TIME_WAIT does not make the port taken
  if (type == SOCK_STREAM) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  bool free = ::bind(fd, addr, len) == 0;
  ::close(fd);
  return free;
}

// The resolver holds UDP and TCP on its port: "" when both are free, else which is taken.
std::string resolver_address_problem(const endpoint& at) {
  const bool udp = can_bind(at, SOCK_DGRAM), tcp = can_bind(at, SOCK_STREAM);
  if (udp && tcp) return "";
  return at.to_string() + " is in use (" + std::string(!udp && !tcp ? "UDP and TCP" : !udp ? "UDP" : "TCP") +
         "): the resolver needs both; choose another port";
}

// A network name as the topology takes it: "" when fine, else what is wrong.
std::string network_name_problem(const std::string& name) {
  try {
    parse_topology(json{{"name", name}, {"domains", json::array({{{"name", "a.example"}, {"listen", "127.0.0.1:1"}}})}}.dump(),
                   "init");
    return "";
  } catch (const topology_error& e) {
    std::string what = e.what();
    auto at = what.find("$.name: ");
    return at == std::string::npos ? what : what.substr(at + 8);
  }
}

// "127.0.0.1:5353" as the topology reads it, or what is wrong with it.
std::variant<endpoint, std::string> parse_address(const std::string& text) {
  try {
    return json_reader("init").endpoint_at(json(text), "address");
  } catch (const topology_error& e) {
    std::string what = e.what();
    auto at = what.find("address: ");
    return at == std::string::npos ? what : what.substr(at + 9);
  }
}

struct server_answer {
  std::string domain;
  std::uint16_t port = 0;
  std::vector<std::string> users;
  std::string host = "127.0.0.1";
};

// init --addresses: the n-th domain (from 1) listens on 127.0.1.n.
std::string own_address(std::size_t n) { return "127.0.1." + std::to_string(n); }

std::vector<std::string> split_users(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',' || c == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Checks one server; "" when fine, else what is wrong. The domain is
// compared in lower case, as the topology keeps it.
std::string check_server(const server_answer& s, const std::vector<server_answer>& earlier, const endpoint& resolver,
                         bool check_free) {
  const std::string domain = lower(s.domain);
  if (!is_valid_domain_name(domain)) return "'" + s.domain + "' is not a valid domain name";
  if (domain == "resolver" || is_run_folder_entry(domain))
    return "'" + s.domain + "' is reserved (it names a file or folder of the run folder)";
  for (const auto& e : earlier) {
    if (lower(e.domain) == domain) return "domain " + domain + " is already in the network";
    if (e.port == s.port && e.host == s.host) return "port " + std::to_string(s.port) + " is already used by " + e.domain;
  }
  if (s.port == 0) return "the port must be a number from 1 to 65535";
  if (s.port == resolver.port && resolver.host == s.host)
    return "port " + std::to_string(s.port) + " is the resolver's (" + resolver.to_string() + ")";
  if (check_free && !can_bind({s.host, s.port}, SOCK_STREAM) &&
      (s.port >= launcher::current_bind_rights().unprivileged_port_start ||
       launcher::current_bind_rights().node_bind_service))
    return "port " + std::to_string(s.port) + " is in use on " + s.host;
  if (s.users.empty()) return "a server needs at least one user";
  std::set<std::string> seen;
  for (const auto& u : s.users) {
    if (!is_valid_user_name(u)) return "'" + u + "' is not a valid user name (letters, digits, . _ - +)";
    if (!seen.insert(lower(u)).second) return "user " + u + " is listed twice";
  }
  return "";
}

std::uint16_t parse_port(const std::string& text) {
  try {
    std::size_t used = 0;
    long v = std::stol(text, &used);
    return used == text.size() && v > 0 && v <= 65535 ? static_cast<std::uint16_t>(v) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// Asks until the answer passes check; throws when the input ends.
std::string ask(const std::string& question, const std::function<std::string(const std::string&)>& check) {
  for (;;) {
    std::cout << question << std::flush;
    std::string line;
    if (!std::getline(std::cin, line)) throw std::runtime_error("the input ended before every question was answered");
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    auto problem = check(line);
    if (problem.empty()) return line;
    std::cout << "  " << problem << ", try again\n";
  }
}

struct init_options {
  std::string name, output, resolver = "127.0.0.1:5353";
  std::vector<std::string> servers;  // DOMAIN:PORT:user1,user2
  bool force = false;
  bool no_port_check = false;
  bool addresses = false;  // each domain on 127.0.1.N, port 25 unless given
};

int run_init(const init_options& o) {
  std::string name = o.name;
  std::vector<server_answer> servers;
  endpoint resolver;
  const auto file_for = [&](const std::string& n) { return o.output.empty() ? n + ".json" : o.output; };
  // Every answer is checked where it is given, so a mistake costs one answer, not all of them.
  const auto file_problem = [&](const std::string& n) {
    return !o.force && std::filesystem::exists(file_for(n))
               ? file_for(n) + " exists; choose another " + (o.output.empty() ? "name" : "-o FILE") + " or add --force"
               : std::string();
  };
  try {
    if (!name.empty()) {
      if (auto problem = network_name_problem(name); !problem.empty()) throw std::runtime_error("--name: " + problem);
    }
    if (!name.empty() || !o.output.empty() || !o.servers.empty())
      if (auto problem = file_problem(name.empty() ? "network" : name); !problem.empty()) throw std::runtime_error(problem);
    auto given = parse_address(o.resolver);
    if (auto* problem = std::get_if<std::string>(&given)) throw std::runtime_error("--resolver: " + *problem);
    resolver = std::get<endpoint>(given);
    if (o.servers.empty()) {
      // The classic teaching scripts asked these questions; so do we.
      if (name.empty())
        name = ask("Network name: ", [&](const std::string& a) {
          if (a.empty()) return std::string("give a simple name such as 'classroom'");
          if (auto problem = network_name_problem(a); !problem.empty()) return problem;
          return file_problem(a);
        });
      // The resolver's address: the default unless the user says otherwise.
      const std::string shown = resolver.to_string();
      ask("Resolver address [" + shown + "]: ", [&](const std::string& a) {
        auto parsed = parse_address(a.empty() ? shown : a);
        if (auto* problem = std::get_if<std::string>(&parsed)) return *problem;
        resolver = std::get<endpoint>(parsed);
        return o.no_port_check ? std::string() : resolver_address_problem(resolver);
      });
      bool addresses = o.addresses;
      if (!addresses) {
        const auto yes = ask("Give each server its own address (127.0.1.N, port 25, as on the internet)? [y/N] ",
                             [](const std::string& a) {
                               const auto l = lower(a);
                               return l.empty() || l == "y" || l == "yes" || l == "n" || l == "no"
                                          ? std::string()
                                          : std::string("answer y or n");
                             });
        addresses = lower(yes) == "y" || lower(yes) == "yes";
      }
      auto count = std::stoi(ask("How many mail servers? ", [](const std::string& a) {
        auto n = parse_port(a);
        return n >= 1 && n <= 500 ? std::string() : std::string("a number from 1 to 500");
      }));
      for (int i = 1; i <= count; ++i) {
        server_answer s;
        const std::string n = std::to_string(i);
        if (addresses) s.host = own_address(static_cast<std::size_t>(i));
        s.domain = lower(ask("Server " + n + " domain: ", [&](const std::string& a) {
          server_answer probe{a, 1, {"x"}, s.host};
          return check_server(probe, servers, resolver, false);
        }));
        if (s.domain.size() > 1 && s.domain.back() == '.') s.domain.pop_back();
        const std::string port_question =
            addresses ? "Server " + n + " port on " + s.host + " [25]: " : "Server " + n + " port: ";
        const auto port_of = [&](const std::string& a) { return a.empty() && addresses ? std::uint16_t{25} : parse_port(a); };
        s.port = port_of(ask(port_question, [&](const std::string& a) {
          server_answer probe{s.domain, port_of(a), {"x"}, s.host};
          return check_server(probe, servers, resolver, !o.no_port_check);
        }));
        s.users = split_users(ask("Server " + n + " users (comma-separated): ", [&](const std::string& a) {
          server_answer probe{s.domain, s.port, split_users(a), s.host};
          return check_server(probe, servers, resolver, false);
        }));
        servers.push_back(s);
      }
    } else {
      if (!o.no_port_check)
        if (auto problem = resolver_address_problem(resolver); !problem.empty())
          throw std::runtime_error("--resolver " + o.resolver + ": " + problem);
      for (const auto& spec : o.servers) {
        auto first = spec.find(':'), second = spec.find(':', first == std::string::npos ? 0 : first + 1);
        if (first == std::string::npos || second == std::string::npos)
          throw std::runtime_error("--server " + spec + ": expected DOMAIN:PORT:user1,user2" +
                                   (o.addresses ? " (PORT may be empty: 25)" : ""));
        const std::string port_text = spec.substr(first + 1, second - first - 1);
        server_answer s{lower(spec.substr(0, first)),
                        port_text.empty() && o.addresses ? std::uint16_t{25} : parse_port(port_text),
                        split_users(spec.substr(second + 1))};
        if (o.addresses) s.host = own_address(servers.size() + 1);
        auto problem = check_server(s, servers, resolver, !o.no_port_check);
        if (!problem.empty()) throw std::runtime_error("--server " + spec + ": " + problem);
        servers.push_back(s);
      }
      if (name.empty()) name = "network";
    }
  } catch (const std::exception& e) {
    std::cerr << "mailnet init: " << e.what() << "\n";
    return 2;
  }

  json doc = {{"name", name}, {"resolver", {{"listen", resolver.to_string()}}}, {"domains", json::array()}};
  for (const auto& s : servers)
    doc["domains"].push_back({{"name", s.domain}, {"listen", s.host + ":" + std::to_string(s.port)}, {"users", s.users}});
  const std::string file = o.output.empty() ? name + ".json" : o.output;
  try {
    parse_topology(doc.dump(), file);  // the same checks `mailnet up` will make
  } catch (const topology_error& e) {
    std::cerr << "mailnet init: " << e.what() << "\n";
    return 2;
  }
  if (!o.force && std::filesystem::exists(file)) {
    std::cerr << "mailnet init: " << file << " exists; choose another -o FILE or add --force\n";
    return 2;
  }
  std::ofstream out(file);
  out << doc.dump(2) << "\n";
  if (!out) {
    std::cerr << "mailnet init: cannot write " << file << "\n";
    return 1;
  }
  std::cout << "wrote " << file << " with " << servers.size() << " server(s); start it with: mailnet up " << file << "\n";
  // The file is fine; this user may still need a way to take port 25.
  if (auto problem = launcher::privileged_port_problem(parse_topology(doc.dump(), file), launcher::current_bind_rights());
      !problem.empty())
    std::cout << "note: " << problem << "\n";
  return 0;
}

}  // namespace

void register_scenario_commands(CLI::App& app, command_registry& commands) {
  auto run = std::make_shared<run_options>();
  auto run_dir = std::make_shared<std::string>();
  auto* run_cmd = app.add_subcommand("run", "bring a scenario up in a fresh folder, play its steps, bring it down");
  run_cmd->add_option("file", run->file, "scenario file (a topology with steps)")->required();
  run_cmd->add_option("--dir", *run_dir, "output folder (default: ./run/<name>)");
  run_cmd->add_flag("--keep", run->keep, "leave the network running afterwards");
  run_cmd->add_flag("--fresh", run->fresh, "also empty a folder where a network was brought up with `mailnet up`");
  commands.add(run_cmd, [run, run_dir] {
    if (!run_dir->empty()) run->dir = *run_dir;
    return run_scenario(*run);
  });

  auto init = std::make_shared<init_options>();
  auto* init_cmd = app.add_subcommand("init", "write a topology file, by questions or from --server flags");
  init_cmd->add_option("-o,--output", init->output, "the file to write (default: <name>.json)");
  init_cmd->add_option("--name", init->name, "the network's name");
  init_cmd->add_option("--server", init->servers, "DOMAIN:PORT:user1,user2 (repeat; no questions then)");
  init_cmd->add_option("--resolver", init->resolver, "the resolver's address (default 127.0.0.1:5353)");
  init_cmd->add_flag("--force", init->force, "overwrite an existing file");
  init_cmd->add_flag("--no-port-check", init->no_port_check, "do not check that the ports are free now");
  init_cmd->add_flag("--addresses", init->addresses,
                     "give each domain its own address, 127.0.1.N, on port 25 (PORT may be left empty in --server)");
  commands.add(init_cmd, [init] { return run_init(*init); });

  struct graph_options {
    std::string file, dir, format = "dot";
  };
  auto graph = std::make_shared<graph_options>();
  auto* graph_cmd = app.add_subcommand("graph", "print the topology as Graphviz DOT or Mermaid");
  graph_cmd->add_option("file", graph->file, "topology file")->required();
  graph_cmd->add_option("--format", graph->format, "dot or mermaid")->check(CLI::IsMember({"dot", "mermaid"}));
  graph_cmd->add_option("--dir", graph->dir, "the run folder whose logs give the edges (default: ./run/<name>)");
  commands.add(graph_cmd, [graph] {
    try {
      auto net = load_topology(graph->file);
      std::filesystem::path dir = graph->dir.empty() ? std::filesystem::path("run") / net.name : std::filesystem::path(graph->dir);
      std::cout << render_graph(net, relay_counts_from_logs(dir, net),
                                graph->format == "mermaid" ? graph_format::mermaid : graph_format::dot);
      return 0;
    } catch (const topology_error& e) {
      std::cerr << "mailnet: " << e.what() << "\n";
      return 2;
    }
  });
}

}  // namespace mailnet::launcher
