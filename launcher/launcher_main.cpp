#include "launcher/launcher_main.hpp"

#include <CLI/CLI.hpp>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/topology.hpp"
#include "launcher/control_client.hpp"
#include "launcher/supervisor.hpp"
#include "node/spool.hpp"

namespace mailnet::launcher {

namespace {

using json = nlohmann::json;

std::string uptime_text(long s) {
  if (s <= 0) return "-";
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string(s / 60 % 60) + "m";
}

void print_status_table(const json& status) {
  std::cout << "network " << status.value("name", "") << " (" << status.value("dir", "") << ")\n";
  std::ostringstream out;
  auto row = [&](auto... cells) {
    const int widths[] = {16, 19, 8, 22, 8, 9, 10, 8, 7, 8};
    int i = 0;
    ((out << std::left << std::setw(widths[i++]) << cells), ...);
    out << "\n";
  };
  row("NODE", "STATE", "PID", "ADDRESS", "UPTIME", "RECEIVED", "DELIVERED", "RELAYED", "QUEUED", "BOUNCED");
  for (const auto& n : status["nodes"]) {
    std::string state = n.value("state", "");
    if (!n.value("exit", "").empty() && state != "ready" && state != "starting") state += " (" + n.value("exit", "") + ")";
    auto num = [&](const char* key) { return n.contains(key) ? std::to_string(n[key].get<long>()) : std::string("-"); };
    row(n.value("name", ""), state, n.value("pid", 0) ? std::to_string(n.value("pid", 0)) : "-", n.value("listen", ""),
        uptime_text(n.value("uptime_s", 0L)), num("received"), num("delivered"), num("relayed"), num("queued"),
        num("bounced"));
  }
  std::cout << out.str();
}

std::string time_text(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

int print_queue(const run_folder& folder, const std::string& only) {
  json topo = json::parse(std::ifstream(folder.topology_json()));
  std::size_t total = 0;
  for (const auto& d : topo["domains"]) {
    std::string domain = d["name"];
    if (!only.empty() && domain != only) continue;
    node::spool queue(folder.dir() / domain / "queue");
    std::error_code ec;
    if (!std::filesystem::exists(folder.dir() / domain / "queue", ec)) continue;
    for (const auto& id : queue.list()) {
      std::optional<node::queued_message> m;
      try {
        m = queue.load(id);
      } catch (const std::exception& e) {
        std::cout << domain << "  " << id << "  (unreadable: " << e.what() << ")\n";
        continue;
      }
      if (!m) continue;
      ++total;
      std::string to;
      for (const auto& r : m->rcpts)
        if (r.state == "pending") to += (to.empty() ? "" : ", ") + r.address;
      std::cout << domain << "  " << m->id << "  from <" << m->mail_from << ">  to " << to << "\n"
                << "    attempts " << m->attempts << ", next try "
                << (m->next_try_ms ? time_text(m->next_try_ms) : std::string("now")) << ", size "
                << m->message.size() << "\n";
      if (!m->last_error.empty()) std::cout << "    last error: " << m->last_error << "\n";
    }
  }
  std::cout << total << (total == 1 ? " message" : " messages") << " waiting\n";
  return 0;
}

// Prints a log file from offset; returns the new offset.
std::uintmax_t print_from(const std::filesystem::path& file, std::uintmax_t offset, const std::string& prefix) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return offset;
  in.seekg(static_cast<std::streamoff>(offset));
  std::string line;
  std::uintmax_t pos = offset;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a line still being written: read it next time
    pos += line.size() + 1;
    std::cout << prefix << line << "\n";
  }
  std::cout << std::flush;
  return pos;
}

int print_logs(const run_folder& folder, const std::string& node, bool follow) {
  json topo = json::parse(std::ifstream(folder.topology_json()));
  std::vector<std::pair<std::string, std::filesystem::path>> files;
  auto add = [&](const std::string& name) {
    files.emplace_back(name, name == "resolver" ? folder.dir() / "resolver" / "resolver.log"
                                                : folder.dir() / name / "node.log");
  };
  if (node.empty() || node == "resolver") add("resolver");
  for (const auto& d : topo["domains"])
    if (node.empty() || node == d["name"]) add(d["name"]);
  if (files.empty()) {
    std::cerr << "mailnet: no node named '" << node << "'\n";
    return 2;
  }
  std::size_t width = 8;
  for (const auto& f : files) width = std::max(width, f.first.size());
  std::vector<std::uintmax_t> offsets(files.size(), 0);
  auto prefix = [&](const std::string& name) {
    if (files.size() == 1) return std::string();
    std::string p = name;
    p.resize(width, ' ');
    return p + " | ";
  };
  for (;;) {
    for (std::size_t i = 0; i < files.size(); ++i)
      offsets[i] = print_from(files[i].second, offsets[i], prefix(files[i].first));
    if (!follow) return 0;
    if (!folder.running_launcher()) return 0;  // the network went down: stop following
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

int launcher_main(int argc, char** argv) {
  CLI::App app{"mailnet: a simulated mail network on one machine"};
  app.require_subcommand(1);

  up_options up;
  std::string up_dir;
  auto* up_cmd = app.add_subcommand("up", "start the network described by a topology file");
  up_cmd->add_option("file", up.topology_file, "topology file (JSON)")->required();
  up_cmd->add_option("--dir", up_dir, "output folder (default: ./run/<name>)");
  up_cmd->add_flag("--fresh", up.fresh, "start with empty Maildirs and queues");
  up_cmd->add_flag("-d,--detach", up.detach, "return once every node is ready; keep running in the background");

  std::string validate_file;
  auto* validate_cmd = app.add_subcommand("validate", "check a topology file without starting anything");
  validate_cmd->add_option("file", validate_file, "topology file (JSON)")->required();

  // Commands for a running network, from any terminal.
  network_choice choice;
  std::string dir_text;
  auto network_options = [&](CLI::App* cmd) {
    cmd->add_option("--dir", dir_text, "the network's output folder");
    cmd->add_option("--net", choice.net, "the network's name, when several are up under ./run");
  };
  bool status_json = false;
  auto* status_cmd = app.add_subcommand("status", "show every node: state, pid, address, uptime, mail counters");
  status_cmd->add_flag("--json", status_json, "machine-readable output");
  network_options(status_cmd);

  std::string target;
  std::map<std::string, CLI::App*> node_cmds;
  for (const auto& [name, help] : std::vector<std::pair<std::string, std::string>>{
           {"kill", "SIGKILL a node (a simulated crash); it stays down"},
           {"stop", "stop a node gracefully"},
           {"start", "start a stopped node and wait until it is ready"},
           {"restart", "stop and start a node"}}) {
    auto* cmd = app.add_subcommand(name, help);
    cmd->add_option("node", target, "a domain, or 'resolver'")->required();
    network_options(cmd);
    node_cmds[name] = cmd;
  }
  auto* down_cmd = app.add_subcommand("down", "stop every node and the launcher");
  network_options(down_cmd);
  auto* flush_cmd = app.add_subcommand("flush", "retry every waiting message now");
  flush_cmd->add_option("domain", target, "only this domain (every node retries all it holds)");
  network_options(flush_cmd);
  auto* queue_cmd = app.add_subcommand("queue", "list the mail waiting in the nodes' queues");
  queue_cmd->add_option("domain", target, "only this domain's queue");
  network_options(queue_cmd);
  bool follow = false;
  auto* logs_cmd = app.add_subcommand("logs", "print the nodes' event logs");
  logs_cmd->add_option("node", target, "a domain, or 'resolver'");
  logs_cmd->add_flag("-f,--follow", follow, "keep printing new lines until the network goes down");
  network_options(logs_cmd);

  CLI11_PARSE(app, argc, argv);
  if (!dir_text.empty()) choice.dir = dir_text;

  if (*up_cmd) {
    if (!up_dir.empty()) up.dir = up_dir;
    return run_up(up);
  }
  if (*validate_cmd) {
    try {
      auto net = load_topology(validate_file);
      std::cout << validate_file << ": ok, network " << net.name << " with " << net.domains.size() << " domains\n";
      return 0;
    } catch (const topology_error& e) {
      std::cerr << "mailnet: " << e.what() << "\n";
      return 2;
    }
  }

  try {
    run_folder folder = locate_network(choice);
    if (*queue_cmd) return print_queue(folder, target);
    if (*logs_cmd) return print_logs(folder, target, follow);
    json request;
    if (*status_cmd) request = {{"cmd", "status"}};
    else if (*down_cmd) request = {{"cmd", "down"}};
    else if (*flush_cmd) request = {{"cmd", "flush"}, {"name", target}};
    for (const auto& [name, cmd] : node_cmds)
      if (*cmd) request = {{"cmd", name}, {"name", target}};
    json reply = ask_launcher(folder, request);
    if (!reply.value("ok", false)) {
      std::cerr << "mailnet: " << reply.value("error", "failed") << "\n";
      return 1;
    }
    if (*status_cmd) {
      if (status_json) std::cout << reply["status"].dump(2) << "\n";
      else print_status_table(reply["status"]);
    } else if (*down_cmd) {
      // The launcher answers first, then stops: wait for it to be gone.
      for (int i = 0; i < 200 && folder.running_launcher(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::cout << "mailnet: network is down\n";
    } else if (request["cmd"] != "flush") {
      std::cout << target << ": " << reply.value("state", "ok") << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "mailnet: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace mailnet::launcher
