// `mailnet fault list`, `mailnet fault add '<rule JSON>'` and `mailnet fault
// clear [NAME]`: the fault rules of a running network, through the control
// socket (the launcher forwards a change to the node concerned).
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>

#include "common/terminal_text.hpp"
#include "launcher/commands.hpp"
#include "launcher/control_client.hpp"
#include "launcher/display_width.hpp"

namespace mailnet::launcher {

namespace {

using json = nlohmann::json;

struct fault_options {
  std::string dir, net, argument;
  bool json_output = false;
  network_choice choice() const {
    network_choice c;
    if (!dir.empty()) c.dir = dir;
    c.net = net;
    return c;
  }
};

// "probability 0.5, every 3" or "always".
std::string when_text(const json& rule) {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (rule.contains("probability")) add("probability " + rule["probability"].dump());
  if (rule.contains("every")) add("every " + rule["every"].dump());
  if (rule.contains("first")) add("first " + rule["first"].dump());
  if (rule.contains("after")) add("after " + rule["after"].get<std::string>());
  if (rule.contains("for")) add("for " + rule["for"].get<std::string>());
  return out.empty() ? "always" : out;
}

std::string action_text(const json& rule) {
  const std::string action = rule.value("action", "answer");
  if (rule.contains("reply")) return action + " \"" + rule.value("reply", "") + "\"";
  if (action == "delay") return "delay " + rule.value("delay", "") + " ±" + rule.value("jitter", "");
  return action;
}

void print_faults(const json& faults) {
  if (faults.empty()) {
    std::cout << "no fault rules in force\n";
    return;
  }
  std::vector<std::vector<std::string>> rows{{"RULE", "SOURCE", "FROM", "TO", "STAGE", "ACTION", "WHEN", "INJECTED"}};
  for (const auto& f : faults) {
    const auto& r = f["rule"];
    rows.push_back({terminal_safe(f.value("name", "")), f.value("source", ""), terminal_safe(r.value("from", "*")),
                    terminal_safe(r.value("to", "")), r.value("stage", "-"), terminal_safe(action_text(r)),
                    when_text(r), std::to_string(f.value("injected", 0L))});
  }
  std::cout << format_table(rows);
}

// The launcher's reply: 0 when it says ok; else its error, and 2 for bad input.
int failed(const json& reply) {
  std::cerr << "mailnet: " << terminal_safe(reply.value("error", "failed")) << "\n";
  return reply.value("bad_input", false) ? 2 : 1;
}

void print_pending(const json& reply) {
  for (const auto& p : reply.value("pending", json::array()))
    std::cout << "mailnet: " << terminal_safe(p.get<std::string>()) << "\n";
}

int run_fault(const std::string& verb, const fault_options& o) {
  run_folder folder = locate_network(o.choice());
  if (verb == "list") {
    const json reply = ask_launcher(folder, {{"cmd", "fault_list"}});
    if (!reply.value("ok", false)) return failed(reply);
    if (o.json_output)
      std::cout << terminal_safe(reply["faults"].dump(2, ' ', true, json::error_handler_t::replace), newlines::keep)
                << "\n";
    else print_faults(reply["faults"]);
    return 0;
  }
  if (verb == "add") {
    json rule;
    try {
      rule = json::parse(o.argument);
    } catch (const json::exception& e) {
      std::cerr << "mailnet: fault add: the rule is not JSON: " << terminal_safe(e.what()) << "\n";
      return 2;
    }
    json request = {{"cmd", "fault_add"}};
    request["rule"] = std::move(rule);
    const json reply = ask_launcher(folder, request);
    if (!reply.value("ok", false)) return failed(reply);
    std::string applied;
    for (const auto& n : reply.value("applied", json::array())) applied += (applied.empty() ? "" : ", ") + n.get<std::string>();
    std::cout << "mailnet: rule " << terminal_safe(reply.value("added", "")) << " added"
              << (applied.empty() ? "" : " (" + terminal_safe(applied) + " applies it)") << "\n";
    print_pending(reply);
    return 0;
  }
  json request = {{"cmd", "fault_clear"}};
  request["name"] = o.argument;
  const json reply = ask_launcher(folder, request);
  if (!reply.value("ok", false)) return failed(reply);
  std::string cleared;
  for (const auto& n : reply.value("cleared", json::array())) cleared += (cleared.empty() ? "" : ", ") + n.get<std::string>();
  if (cleared.empty()) std::cout << "mailnet: no fault rules were in force\n";
  else std::cout << "mailnet: cleared " << terminal_safe(cleared) << "\n";
  print_pending(reply);
  return 0;
}

}  // namespace

void register_fault_commands(CLI::App& app, command_registry& commands) {
  auto* fault = app.add_subcommand("fault", "list, add and clear the fault rules of a running network");
  fault->require_subcommand(1);
  struct verb {
    const char* name;
    const char* help;
  };
  for (const verb& v : {verb{"list", "the rules in force, with the faults each injected"},
                        verb{"add", "add a rule (JSON, as in the topology's faults.rules); it acts within a second"},
                        verb{"clear", "remove the rule NAME (default: every rule, the topology's too)"}}) {
    auto opts = std::make_shared<fault_options>();
    auto* cmd = fault->add_subcommand(v.name, v.help);
    cmd->add_option("--dir", opts->dir, "the network's output folder");
    cmd->add_option("--net", opts->net, "the network's name, when several are up under ./run");
    const std::string name = v.name;
    if (name == "list") cmd->add_flag("--json", opts->json_output, "machine-readable output");
    if (name == "add") cmd->add_option("rule", opts->argument, "the rule, a JSON object")->required();
    if (name == "clear") cmd->add_option("name", opts->argument, "the rule's name (\"*\" or nothing: every rule)");
    commands.add(cmd, [opts, name] {
      try {
        return run_fault(name, *opts);
      } catch (const std::exception& e) {
        std::cerr << "mailnet: " << terminal_safe(e.what()) << "\n";
        return 1;
      }
    });
  }
}

}  // namespace mailnet::launcher
