#include "launcher/scenario.hpp"

#include <cctype>
#include <nlohmann/json.hpp>

#include "common/address.hpp"
#include "common/faults_json.hpp"
#include "common/json_reader.hpp"

namespace mailnet::launcher {

using json = nlohmann::json;

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string ms_text(millis m) {
  return m.count() % 1000 == 0 ? std::to_string(m.count() / 1000) + "s" : std::to_string(m.count()) + "ms";
}

class step_parser {
 public:
  step_parser(const json_reader& r, const topology& net, std::filesystem::path base)
      : r_(r), net_(net), base_(std::move(base)) {}

  step parse(const json& j, const std::string& path) const {
    r_.expect_object(j, path);
    if (j.size() != 1)
      r_.fail(path, "expected exactly one action (send, kill, stop, start, restart, wait, expect, fault or "
                    "clear_faults)");
    // Copy the key and keep a reference into j itself: what items() hands out
    // lives only as long as the expression (ASan caught a dangling reference).
    const std::string key = j.begin().key();
    const json& value = j.begin().value();
    const std::string sub = path + "." + key;
    step s;
    s.path = path;
    if (key == "send") s.action = send(value, sub);
    else if (key == "kill" || key == "stop" || key == "start" || key == "restart") s.action = node(key, value, sub);
    else if (key == "wait") s.action = wait(value, sub);
    else if (key == "expect") s.action = expect(value, sub);
    else if (key == "fault" || key == "clear_faults") s.action = fault(key, value, sub);
    else r_.fail(sub, "unknown action (expected send, kill, stop, start, restart, wait, expect, fault or "
                      "clear_faults)");
    return s;
  }

 private:
  // An address of the network, "user@domain".
  std::string address(const json& j, const std::string& path) const {
    auto text = r_.string_at(j, path);
    if (!parse_mailbox(text)) r_.fail(path, "expected a mail address such as \"rey@jaku.com\", found \"" + text + "\"");
    return text;
  }

  std::vector<std::string> addresses(const json& j, const std::string& path) const {
    if (j.is_string()) return {address(j, path)};
    if (!j.is_array()) r_.fail(path, "expected an address or a list of addresses, found " + r_.type_name(j));
    std::vector<std::string> out;
    for (std::size_t i = 0; i < j.size(); ++i) out.push_back(address(j[i], path + "[" + std::to_string(i) + "]"));
    return out;
  }

  // "jaku.com/obiwan" or "obiwan@jaku.com": a mailbox of a domain of this topology.
  mailbox_ref mailbox(const json& j, const std::string& path) const {
    auto text = r_.string_at(j, path);
    mailbox_ref box;
    if (auto slash = text.find('/'); slash != std::string::npos) {
      box.domain = text.substr(0, slash);
      box.user = text.substr(slash + 1);
    } else if (auto at = text.rfind('@'); at != std::string::npos) {
      box.user = text.substr(0, at);
      box.domain = text.substr(at + 1);
    }
    const auto* d = net_.find_domain(box.domain);
    if (!d || box.user.empty())
      r_.fail(path, "expected a mailbox of this network such as \"jaku.com/rey\", found \"" + text + "\"");
    box.domain = d->name;
    if (auto user = d->find_user(box.user)) box.user = *user;
    else if (d->policy.require_known_users) r_.fail(path, "no user \"" + box.user + "\" in " + d->name);
    for (auto& c : box.user) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return box;
  }

  std::string node_name(const json& j, const std::string& path) const {
    auto name = r_.string_at(j, path);
    std::string folded = name;  // "Resolver", like a domain, in any case
    for (auto& ch : folded) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (folded == "resolver") name = folded;
    if (name != "resolver" && !net_.find_domain(name))
      r_.fail(path, "expected \"resolver\" or a domain of this network, found \"" + name + "\"");
    return name == "resolver" ? name : net_.find_domain(name)->name;
  }

  send_step send(const json& j, const std::string& path) const {
    r_.expect_object(j, path);
    r_.only_keys(j, path, {"from", "to", "cc", "bcc", "subject", "body", "attach", "via", "helo", "refused", "password"});
    send_step s;
    if (!j.contains("from")) r_.fail(path + ".from", "missing (expected the sender's address)");
    s.from = address(j["from"], path + ".from");
    if (j.contains("to")) s.to = addresses(j["to"], path + ".to");
    if (j.contains("cc")) s.cc = addresses(j["cc"], path + ".cc");
    if (j.contains("bcc")) s.bcc = addresses(j["bcc"], path + ".bcc");
    if (s.to.empty() && s.cc.empty() && s.bcc.empty()) r_.fail(path + ".to", "missing (expected at least one recipient)");
    if (j.contains("subject")) s.subject = r_.string_at(j["subject"], path + ".subject");
    if (j.contains("body")) s.body = r_.string_at(j["body"], path + ".body");
    if (j.contains("via")) s.via = r_.string_at(j["via"], path + ".via");
    if (j.contains("helo")) s.helo = r_.string_at(j["helo"], path + ".helo");
    if (j.contains("refused")) s.refused = r_.string_at(j["refused"], path + ".refused");
    if (j.contains("password")) {
      s.password = r_.string_at(j["password"], path + ".password");
      if (!is_valid_password(s.password))
        r_.fail(path + ".password", "expected 1 to 128 printable ASCII characters other than ':'");
    }
    if (j.contains("attach")) {
      const auto& a = j["attach"];
      if (!a.is_array()) r_.fail(path + ".attach", "expected a list of file names, found " + r_.type_name(a));
      for (std::size_t i = 0; i < a.size(); ++i) {
        const std::string apath = path + ".attach[" + std::to_string(i) + "]";
        std::filesystem::path file = r_.string_at(a[i], apath);
        if (file.is_relative()) file = base_ / file;
        if (!std::filesystem::is_regular_file(file)) r_.fail(apath, "no such file: " + file.string());
        s.attach.push_back(file);
      }
    }
    return s;
  }

  node_step node(const std::string& action, const json& j, const std::string& path) const {
    return {action, node_name(j, path)};
  }

  // A rule, checked as the topology's rules are; or the name of one to clear.
  fault_step fault(const std::string& key, const json& j, const std::string& path) const {
    fault_step f;
    if (key == "fault") {
      std::vector<std::string> domains;
      for (const auto& d : net_.domains) domains.push_back(d.name);
      f.add = read_fault_rule(r_, j, path, domains);
      return f;
    }
    if (j.is_boolean() && j.get<bool>()) f.clear = "*";
    else if (j.is_string() && !j.get<std::string>().empty()) f.clear = j.get<std::string>();
    else r_.fail(path, "expected the name of a rule, or \"*\" or true for every rule, found " + j.dump());
    return f;
  }

  condition cond(const json& j, const std::string& path) const {
    r_.expect_object(j, path);
    r_.only_keys(j, path, {"mailbox", "count", "subject", "attachment", "bounce", "status", "queue", "resolve",
                           "answer", "faults", "within", "timeout"});
    condition c;
    if (j.contains("mailbox")) {
      c.box = mailbox(j["mailbox"], path + ".mailbox");
      if (j.contains("subject")) {
        c.what = condition::kind::mailbox_subject;
        c.text = r_.string_at(j["subject"], path + ".subject");
      } else if (j.contains("attachment")) {
        c.what = condition::kind::mailbox_attachment;
        c.text = r_.string_at(j["attachment"], path + ".attachment");
      } else if (j.contains("count")) {
        c.what = condition::kind::mailbox_count;
        c.count = r_.count_at(j["count"], path + ".count", 0, 1000000);
      } else {
        r_.fail(path, "a mailbox expectation needs count, subject or attachment");
      }
    } else if (j.contains("bounce")) {
      c.what = condition::kind::bounce_status;
      c.box = mailbox(j["bounce"], path + ".bounce");
      if (!j.contains("status")) r_.fail(path + ".status", "missing (expected an enhanced status such as \"5.1.2\")");
      c.text = r_.string_at(j["status"], path + ".status");
    } else if (j.contains("queue")) {
      c.what = condition::kind::queue_count;
      c.domain = node_name(j["queue"], path + ".queue");
      if (c.domain == "resolver") r_.fail(path + ".queue", "the resolver has no queue");
      if (!j.contains("count")) r_.fail(path + ".count", "missing (expected how many messages wait)");
      c.count = r_.count_at(j["count"], path + ".count", 0, 1000000);
    } else if (j.contains("resolve")) {
      c.what = condition::kind::resolves;
      c.domain = r_.string_at(j["resolve"], path + ".resolve");
      if (!j.contains("answer")) r_.fail(path + ".answer", "missing (expected \"host:port\" or \"NXDOMAIN\")");
      c.text = r_.string_at(j["answer"], path + ".answer");
    } else if (j.contains("faults")) {
      c.what = condition::kind::fault_count;
      c.rule = r_.string_at(j["faults"], path + ".faults");
      if (!j.contains("count")) r_.fail(path + ".count", "missing (expected how many faults the rule injected)");
      c.count = r_.count_at(j["count"], path + ".count", 0, 1000000000);
    } else {
      r_.fail(path, "expected one of mailbox, bounce, queue, resolve or faults");
    }
    return c;
  }

  wait_step wait(const json& j, const std::string& path) const {
    wait_step w;
    if (j.is_string() || j.is_number()) {
      w.duration = r_.duration_at(j, path, true);
      return w;
    }
    r_.expect_object(j, path);
    if (!j.contains("until")) r_.fail(path + ".until", "missing (expected a condition, or give a duration instead)");
    r_.only_keys(j, path, {"until", "timeout"});
    w.until = cond(j["until"], path + ".until");
    if (j.contains("timeout")) w.timeout = r_.duration_at(j["timeout"], path + ".timeout");
    return w;
  }

  expect_step expect(const json& j, const std::string& path) const {
    expect_step e{cond(j, path)};
    if (j.contains("within")) e.within = r_.duration_at(j["within"], path + ".within", true);
    return e;
  }

  const json_reader& r_;
  const topology& net_;
  std::filesystem::path base_;
};

}  // namespace

std::string condition::describe() const {
  switch (what) {
    case kind::mailbox_count: return box.to_string() + " holds " + std::to_string(count) + " message(s)";
    case kind::mailbox_subject: return box.to_string() + " has a message with subject \"" + text + "\"";
    case kind::mailbox_attachment: return box.to_string() + " has a message with attachment " + text;
    case kind::bounce_status: return box.to_string() + " has a bounce with Status " + text;
    case kind::queue_count: return domain + "'s queue holds " + std::to_string(count) + " message(s)";
    case kind::resolves: return "the resolver answers " + domain + " → " + text;
    case kind::fault_count: return "fault rule " + rule + " injected " + std::to_string(count) + " fault(s)";
  }
  return "?";
}

std::string step::describe() const {
  struct visitor {
    std::string operator()(const send_step& s) const {
      std::vector<std::string> all = s.to;
      all.insert(all.end(), s.cc.begin(), s.cc.end());
      all.insert(all.end(), s.bcc.begin(), s.bcc.end());
      return "send " + s.from + " → " + join(all) + (s.subject.empty() ? "" : " \"" + s.subject + "\"") +
             (s.attach.empty() ? "" : " with " + std::to_string(s.attach.size()) + " attachment(s)") +
             (s.helo.empty() ? "" : " saying HELO " + s.helo) + (s.password.empty() ? "" : " with a password") +
             (s.refused.empty() ? "" : ", expecting " + s.refused);
    }
    std::string operator()(const node_step& n) const { return n.action + " " + n.node; }
    std::string operator()(const wait_step& w) const {
      return w.until ? "wait until " + w.until->describe() + " (at most " + ms_text(w.timeout) + ")"
                     : "wait " + ms_text(w.duration);
    }
    std::string operator()(const expect_step& e) const { return "expect " + e.what.describe(); }
    std::string operator()(const fault_step& f) const {
      if (!f.add) return f.clear == "*" ? "clear every fault rule" : "clear fault rule " + f.clear;
      return "add fault rule " + f.add->name + " (" + f.add->from + " → " + f.add->to + ")";
    }
  };
  return std::visit(visitor{}, action);
}

std::vector<step> parse_steps(const json& doc, std::string_view file_name, const topology& net,
                              const std::filesystem::path& base_dir) {
  std::vector<step> steps;
  if (!doc.is_object() || !doc.contains("steps")) return steps;
  json_reader r(file_name);
  const auto& list = doc["steps"];
  if (!list.is_array()) r.fail("$.steps", "expected a list of steps, found " + r.type_name(list));
  step_parser parser(r, net, base_dir);
  for (std::size_t i = 0; i < list.size(); ++i) steps.push_back(parser.parse(list[i], "$.steps[" + std::to_string(i) + "]"));
  return steps;
}

scenario load_scenario(const std::filesystem::path& file) {
  scenario s;
  const std::string text = read_topology_file(file);
  s.net = parse_topology(text, file.string());  // validates the document and reports bad JSON
  s.steps = parse_steps(json::parse(text), file.string(), s.net, file.parent_path());
  return s;
}

}  // namespace mailnet::launcher
