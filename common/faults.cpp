#include <algorithm>
#include <cctype>
#include <set>

#include "common/faults_json.hpp"

namespace mailnet {

using json = nlohmann::json;

namespace {

struct stage_name {
  fault_stage stage;
  std::string_view name;
};
constexpr stage_name stage_names[] = {
    {fault_stage::dns, "dns"},   {fault_stage::connect, "connect"},         {fault_stage::greeting, "greeting"},
    {fault_stage::ehlo, "ehlo"}, {fault_stage::mail, "mail"},               {fault_stage::rcpt, "rcpt"},
    {fault_stage::data, "data"}, {fault_stage::end_of_data, "end_of_data"}, {fault_stage::quit, "quit"},
    {fault_stage::any, "any"},
};

struct action_name {
  fault_action action;
  std::string_view name;
};
constexpr action_name action_names[] = {
    {fault_action::reply, "reply"},         {fault_action::disconnect, "disconnect"}, {fault_action::delay, "delay"},
    {fault_action::bandwidth, "bandwidth"}, {fault_action::hang, "hang"},             {fault_action::rate_limit, "rate_limit"},
    {fault_action::alter, "alter"},
};

constexpr std::string_view dns_answers[] = {"SERVFAIL", "NXDOMAIN", "REFUSED", "truncated", "timeout"};

constexpr std::string_view stage_list =
    "dns, connect, greeting, ehlo, mail, rcpt, data, end_of_data, quit or any";
constexpr std::string_view action_list = "reply, disconnect, delay, hang, bandwidth, rate_limit or alter";

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_rule_name(std::string_view n) {
  return !n.empty() && n.size() <= 64 && std::all_of(n.begin(), n.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-';
  });
}

// "451 4.3.0 Simulated trouble": a 4xx or 5xx code, a space, printable ASCII.
bool is_fault_reply(std::string_view s) {
  if (s.size() < 5 || s.size() > 510) return false;
  if ((s[0] != '4' && s[0] != '5') || !std::isdigit(static_cast<unsigned char>(s[1])) ||
      !std::isdigit(static_cast<unsigned char>(s[2])) || s[3] != ' ')
    return false;
  return std::all_of(s.begin() + 4, s.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
}

std::string domain_list(const std::vector<std::string>& domains) {
  std::string out;
  for (std::size_t i = 0; i < domains.size() && i < 5; ++i) out += (i ? ", " : "") + domains[i];
  if (domains.size() > 5) out += ", ...";
  return out;
}

fault_rule read_rule(const json_reader& r, const json& j, const std::string& path,
                     const std::vector<std::string>& domains) {
  r.expect_object(j, path);
  r.only_keys(j, path, {"name", "from", "to", "stage", "action", "reply", "delay", "jitter", "probability", "every",
                        "first", "after", "for", "bytes_per_second", "messages", "per", "answer"});
  fault_rule rule;
  auto is_domain = [&](const std::string& d) { return std::find(domains.begin(), domains.end(), d) != domains.end(); };

  if (!j.contains("name")) r.fail(path + ".name", "missing (expected the rule's name, unique in the network)");
  rule.name = r.string_at(j["name"], path + ".name");
  if (!is_rule_name(rule.name))
    r.fail(path + ".name", "expected 1 to 64 letters, digits, '.', '_' or '-', found \"" + rule.name + "\"");

  if (j.contains("stage")) {
    auto s = r.string_at(j["stage"], path + ".stage");
    auto st = fault_stage_from(s);
    if (!st) r.fail(path + ".stage", "expected " + std::string(stage_list) + ", found \"" + s + "\"");
    rule.stage = *st;
  }
  const bool dns = rule.stage == fault_stage::dns;

  if (!j.contains("to")) r.fail(path + ".to", "missing (expected the domain the rule acts on)");
  rule.to = lower(r.string_at(j["to"], path + ".to"));
  if (!rule.to.empty() && rule.to.back() == '.') rule.to.pop_back();
  if (dns ? !is_valid_domain_name(rule.to) : !is_domain(rule.to))
    r.fail(path + ".to", std::string(dns ? "expected a domain name" : "expected a domain of this network (" +
                                                                      domain_list(domains) + ")") +
                             ", found \"" + rule.to + "\"");

  if (j.contains("from")) {
    auto f = r.string_at(j["from"], path + ".from");
    rule.from = f == "*" || f == "clients" ? f : lower(f);
    if (!rule.from.empty() && rule.from.size() > 1 && rule.from.back() == '.') rule.from.pop_back();
    if (rule.from != "*" && rule.from != "clients" && !is_domain(rule.from))
      r.fail(path + ".from", "expected a domain of this network (" + domain_list(domains) +
                                 "), \"clients\" (anything that is not a node of the network) or \"*\", found \"" + f +
                                 "\"");
    if (rule.from == rule.to)
      r.fail(path + ".from", "\"" + f + "\" is the rule's own \"to\": a node does not send mail to itself over SMTP");
  }

  if (j.contains("action")) {
    if (dns) r.fail(path + ".action", "a dns rule has an \"answer\", not an action");
    auto a = r.string_at(j["action"], path + ".action");
    auto act = fault_action_from(a);
    if (!act) r.fail(path + ".action", "expected " + std::string(action_list) + ", found \"" + a + "\"");
    rule.action = *act;
  } else if (dns) {
    rule.action = fault_action::dns_answer;
  } else if (!j.contains("reply")) {
    r.fail(path + ".action", "missing (expected " + std::string(action_list) + "; or give a \"reply\")");
  }
  const auto act = rule.action;
  const std::string act_name(to_string(act));

  // Each field belongs to some actions only: a field that would do nothing is a mistake.
  auto only_for = [&](const char* key, bool allowed, const char* who) {
    if (j.contains(key) && !allowed)
      r.fail(path + "." + key, std::string("only a ") + who + " rule has this field (this one is " +
                                   (dns ? std::string("a dns rule") : "\"" + act_name + "\"") + ")");
  };
  only_for("reply", act == fault_action::reply || act == fault_action::rate_limit, "reply or rate_limit");
  only_for("delay", act == fault_action::delay, "delay");
  only_for("jitter", act == fault_action::delay, "delay");
  only_for("bytes_per_second", act == fault_action::bandwidth, "bandwidth");
  only_for("messages", act == fault_action::rate_limit, "rate_limit");
  only_for("per", act == fault_action::rate_limit, "rate_limit");
  only_for("answer", dns, "dns");

  if (j.contains("reply")) {
    rule.reply = r.string_at(j["reply"], path + ".reply");
    if (!is_fault_reply(rule.reply))
      r.fail(path + ".reply", "expected a reply such as \"451 4.3.0 Simulated trouble\": a code from 400 to 599, "
                              "a space and a text of printable ASCII (at most 510 bytes)");
  } else if (act == fault_action::reply || act == fault_action::rate_limit) {
    r.fail(path + ".reply", "missing (expected a reply such as \"451 4.3.0 Simulated trouble\")");
  }
  if (act == fault_action::delay) {
    if (!j.contains("delay")) r.fail(path + ".delay", "missing (expected a duration such as \"200ms\")");
    rule.delay = r.duration_at(j["delay"], path + ".delay");
    if (j.contains("jitter")) rule.jitter = r.duration_at(j["jitter"], path + ".jitter", true);
    if (rule.jitter > rule.delay) r.fail(path + ".jitter", "must not be longer than delay");
  }
  if (act == fault_action::bandwidth) {
    if (!j.contains("bytes_per_second")) r.fail(path + ".bytes_per_second", "missing (expected bytes per second)");
    rule.bytes_per_second = r.count_at(j["bytes_per_second"], path + ".bytes_per_second", 1, 1ULL << 40);
  }
  if (act == fault_action::rate_limit) {
    if (!j.contains("messages")) r.fail(path + ".messages", "missing (expected how many messages per interval)");
    rule.messages = r.count_at(j["messages"], path + ".messages", 1, 1000000);
    if (!j.contains("per")) r.fail(path + ".per", "missing (expected the interval, such as \"1m\")");
    rule.per = r.duration_at(j["per"], path + ".per");
  }
  if (dns) {
    if (!j.contains("answer"))
      r.fail(path + ".answer", "missing (expected SERVFAIL, NXDOMAIN, REFUSED, truncated or timeout)");
    rule.answer = r.string_at(j["answer"], path + ".answer");
    if (std::find(std::begin(dns_answers), std::end(dns_answers), rule.answer) == std::end(dns_answers))
      r.fail(path + ".answer", "expected SERVFAIL, NXDOMAIN, REFUSED, truncated or timeout, found \"" + rule.answer + "\"");
  }

  // The stage: whole-connection actions have none, every other rule needs one.
  const bool connection_wide = act == fault_action::bandwidth || act == fault_action::rate_limit;
  if (connection_wide && j.contains("stage"))
    r.fail(path + ".stage", act == fault_action::rate_limit
                                ? std::string("a rate_limit rule acts at MAIL (each message begun): it has no stage")
                                : "a " + act_name + " rule acts on the whole connection: it has no stage");
  if (!connection_wide && rule.stage == fault_stage::none)
    r.fail(path + ".stage", act == fault_action::alter ? std::string("missing (an alter rule acts at end_of_data)")
                                                       : "missing (expected " + std::string(stage_list) + ")");
  if (act == fault_action::alter && rule.stage != fault_stage::end_of_data)
    r.fail(path + ".stage", "an alter rule changes a message once its body is in: its stage is end_of_data, found \"" +
                                std::string(to_string(rule.stage)) + "\"");
  // Every node asks the resolver from 127.0.0.1: it cannot tell them apart.
  if (dns && rule.from != "*")
    r.fail(path + ".from", "a dns rule acts in the resolver, which cannot tell which node asks (they all ask from "
                           "127.0.0.1): use \"*\" (the default)");
  if ((rule.stage == fault_stage::connect || rule.stage == fault_stage::greeting) && rule.from != "*")
    r.fail(path + ".from", "a " + std::string(to_string(rule.stage)) +
                               " rule acts before EHLO, which is how a node knows its sender: use \"*\" (the default)");

  if (j.contains("probability")) {
    const auto& p = j["probability"];
    if (!p.is_number() || p.get<double>() < 0 || p.get<double>() > 1)
      r.fail(path + ".probability", "expected a number from 0 to 1");
    rule.probability = p.get<double>();
  }
  if (j.contains("every")) rule.every = r.count_at(j["every"], path + ".every", 1, 1000000000);
  if (j.contains("first")) rule.first = r.count_at(j["first"], path + ".first", 1, 1000000000);
  if (j.contains("after")) rule.after = r.duration_at(j["after"], path + ".after", true);
  if (j.contains("for")) rule.for_ = r.duration_at(j["for"], path + ".for");

  // Set when the connection is accepted, before EHLO names the sender.
  if (act == fault_action::bandwidth && rule.from != "*")
    r.fail(path + ".from", "a bandwidth rule acts from the connection on, before EHLO, which is how a node knows "
                           "its sender: use \"*\" (the default)");
  return rule;
}

}  // namespace

std::string_view to_string(fault_stage s) {
  for (const auto& n : stage_names)
    if (n.stage == s) return n.name;
  return "none";
}

std::string_view to_string(fault_action a) {
  for (const auto& n : action_names)
    if (n.action == a) return n.name;
  return "answer";
}

std::optional<fault_stage> fault_stage_from(std::string_view name) {
  for (const auto& n : stage_names)
    if (n.name == name) return n.stage;
  return std::nullopt;
}

std::optional<fault_action> fault_action_from(std::string_view name) {
  for (const auto& n : action_names)
    if (n.name == name) return n.action;
  return std::nullopt;
}

fault_settings read_faults(const json_reader& r, const json& j, const std::vector<std::string>& domains) {
  fault_settings out;
  r.expect_object(j, "$.faults");
  r.only_keys(j, "$.faults", {"seed", "rules"});
  if (j.contains("seed")) out.seed = r.count_at(j["seed"], "$.faults.seed", 0, UINT64_MAX);
  if (!j.contains("rules")) return out;
  const auto& rules = j["rules"];
  if (!rules.is_array()) r.fail("$.faults.rules", "expected a list of rules, found " + r.type_name(rules));
  std::set<std::string> names;
  for (std::size_t i = 0; i < rules.size(); ++i) {
    const std::string path = "$.faults.rules[" + std::to_string(i) + "]";
    auto rule = read_rule(r, rules[i], path, domains);
    if (!names.insert(rule.name).second) r.fail(path + ".name", "duplicate rule name \"" + rule.name + "\"");
    out.rules.push_back(std::move(rule));
  }
  return out;
}

fault_rule read_fault_rule(const json_reader& r, const json& j, const std::string& path,
                           const std::vector<std::string>& domains) {
  return read_rule(r, j, path, domains);
}

json fault_rule_to_json(const fault_rule& rule) {
  auto ms = [](std::chrono::milliseconds m) { return std::to_string(m.count()) + "ms"; };
  json j = {{"name", rule.name}, {"from", rule.from}, {"to", rule.to}};
  if (rule.stage != fault_stage::none) j["stage"] = to_string(rule.stage);
  if (rule.action != fault_action::dns_answer) j["action"] = to_string(rule.action);
  if (!rule.reply.empty()) j["reply"] = rule.reply;
  if (rule.action == fault_action::delay) {
    j["delay"] = ms(rule.delay);
    j["jitter"] = ms(rule.jitter);
  }
  if (rule.probability) j["probability"] = *rule.probability;
  if (rule.every) j["every"] = rule.every;
  if (rule.first) j["first"] = rule.first;
  if (rule.after) j["after"] = ms(*rule.after);
  if (rule.for_) j["for"] = ms(*rule.for_);
  if (rule.action == fault_action::bandwidth) j["bytes_per_second"] = rule.bytes_per_second;
  if (rule.action == fault_action::rate_limit) {
    j["messages"] = rule.messages;
    j["per"] = ms(rule.per);
  }
  if (!rule.answer.empty()) j["answer"] = rule.answer;
  return j;
}

json faults_to_json(const fault_settings& f) {
  json out = json::object();
  if (f.seed) out["seed"] = *f.seed;
  out["rules"] = json::array();
  for (const auto& rule : f.rules) out["rules"].push_back(fault_rule_to_json(rule));
  return out;
}

}  // namespace mailnet
