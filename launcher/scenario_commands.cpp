// run, init and graph: the commands that make and play scenario files.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/socket.h>
#include <unistd.h>

#include "common/topology.hpp"
#include "launcher/commands.hpp"
#include "launcher/graph.hpp"
#include "launcher/scenario_runner.hpp"

namespace mailnet::launcher {

namespace {

using json = nlohmann::json;

bool port_is_free(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int on = 1;  // as the node binds: a previous server's TIME_WAIT does not make the port taken
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return free;
}

struct server_answer {
  std::string domain;
  std::uint16_t port = 0;
  std::vector<std::string> users;
};

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

// Checks one server; "" when fine, else what is wrong.
std::string check_server(const server_answer& s, const std::vector<server_answer>& earlier, bool check_free) {
  if (!is_valid_domain_name(s.domain)) return "'" + s.domain + "' is not a valid domain name";
  for (const auto& e : earlier) {
    if (e.domain == s.domain) return "domain " + s.domain + " is already in the network";
    if (e.port == s.port) return "port " + std::to_string(s.port) + " is already used by " + e.domain;
  }
  if (s.port == 0) return "the port must be a number from 1 to 65535";
  if (check_free && !port_is_free(s.port)) return "port " + std::to_string(s.port) + " is in use on 127.0.0.1";
  if (s.users.empty()) return "a server needs at least one user";
  std::set<std::string> seen;
  for (const auto& u : s.users) {
    if (!is_valid_user_name(u)) return "'" + u + "' is not a valid user name (letters, digits, . _ - +)";
    if (!seen.insert(u).second) return "user " + u + " is listed twice";
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
};

int run_init(const init_options& o) {
  std::string name = o.name;
  std::vector<server_answer> servers;
  try {
    if (o.servers.empty()) {
      // The classic teaching scripts asked these questions; so do we.
      if (name.empty())
        name = ask("Network name: ", [](const std::string& a) {
          return a.empty() || a.find('/') != std::string::npos || a[0] == '.' ? std::string("give a simple name such as 'classroom'")
                                                                               : std::string();
        });
      auto count = std::stoi(ask("How many mail servers? ", [](const std::string& a) {
        auto n = parse_port(a);
        return n >= 1 && n <= 500 ? std::string() : std::string("a number from 1 to 500");
      }));
      for (int i = 1; i <= count; ++i) {
        server_answer s;
        const std::string n = std::to_string(i);
        s.domain = ask("Server " + n + " domain: ", [&](const std::string& a) {
          server_answer probe{a, 1, {"x"}};
          return check_server(probe, servers, false);
        });
        s.port = parse_port(ask("Server " + n + " port: ", [&](const std::string& a) {
          server_answer probe{s.domain, parse_port(a), {"x"}};
          return check_server(probe, servers, !o.no_port_check);
        }));
        s.users = split_users(ask("Server " + n + " users (comma-separated): ", [&](const std::string& a) {
          server_answer probe{s.domain, s.port, split_users(a)};
          return check_server(probe, servers, false);
        }));
        servers.push_back(s);
      }
    } else {
      for (const auto& spec : o.servers) {
        auto first = spec.find(':'), second = spec.find(':', first == std::string::npos ? 0 : first + 1);
        if (first == std::string::npos || second == std::string::npos)
          throw std::runtime_error("--server " + spec + ": expected DOMAIN:PORT:user1,user2");
        server_answer s{spec.substr(0, first), parse_port(spec.substr(first + 1, second - first - 1)),
                        split_users(spec.substr(second + 1))};
        auto problem = check_server(s, servers, !o.no_port_check);
        if (!problem.empty()) throw std::runtime_error("--server " + spec + ": " + problem);
        servers.push_back(s);
      }
      if (name.empty()) name = "network";
    }
  } catch (const std::exception& e) {
    std::cerr << "mailnet init: " << e.what() << "\n";
    return 2;
  }

  json doc = {{"name", name}, {"resolver", {{"listen", o.resolver}}}, {"domains", json::array()}};
  for (const auto& s : servers)
    doc["domains"].push_back({{"name", s.domain}, {"listen", "127.0.0.1:" + std::to_string(s.port)}, {"users", s.users}});
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
