#include "launcher/scenario.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>
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
      // "jaku.com/luke/Junk": a folder of the user's Maildir (Maildir++ ".Junk").
      if (auto second = box.user.find('/'); second != std::string::npos) {
        std::string folder = box.user.substr(second + 1);
        box.user.resize(second);
        if (!folder.empty() && folder.front() == '.') folder.erase(0, 1);
        const bool plain = !folder.empty() && folder.size() <= 64 &&
                           std::all_of(folder.begin(), folder.end(), [](unsigned char c) {
                             return std::isalnum(c) || c == '_' || c == '-';
                           });
        if (!plain)
          r_.fail(path, "expected a folder name of letters, digits, _ or - after the user, such as "
                        "\"jaku.com/rey/Junk\", found \"" + text + "\"");
        box.folder = "." + folder;
      }
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
                           "answer", "faults", "auth", "within", "timeout"});
    if (j.contains("auth") && !(j.contains("mailbox") && j.contains("subject")))
      r_.fail(path + ".auth", "only a mailbox expectation with a subject has this field (the message it looks at)");
    condition c;
    if (j.contains("mailbox")) {
      c.box = mailbox(j["mailbox"], path + ".mailbox");
      if (j.contains("subject")) {
        c.what = condition::kind::mailbox_subject;
        c.text = r_.string_at(j["subject"], path + ".subject");
        if (j.contains("auth")) c.auth = auth_results(j["auth"], path + ".auth");
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

  // "spf=pass dkim=pass dmarc=pass": methods and results as RFC 8601 writes them.
  std::vector<std::string> auth_results(const json& j, const std::string& path) const {
    std::vector<std::string> want;
    std::istringstream words(r_.string_at(j, path));
    for (std::string w; words >> w;) {
      auto eq = w.find('=');
      auto word_ok = [](std::string_view x) {
        return !x.empty() && std::all_of(x.begin(), x.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
      };
      if (eq == std::string::npos || !word_ok(std::string_view(w).substr(0, eq)) || !word_ok(std::string_view(w).substr(eq + 1)))
        r_.fail(path, "expected results such as \"spf=pass dkim=pass dmarc=pass\", found \"" + w + "\"");
      for (auto& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      want.push_back(w);
    }
    if (want.empty()) r_.fail(path, "expected results such as \"spf=pass dkim=pass dmarc=pass\"");
    return want;
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
    case kind::mailbox_subject: {
      std::string d = box.to_string() + " has a message with subject \"" + text + "\"";
      if (!auth.empty()) {
        d += " and";
        for (const auto& a : auth) d += " " + a;
      }
      return d;
    }
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

namespace {

std::string lowered(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// The unfolded values of every header of this name (lower case) in the
// message's header section, top first.
std::vector<std::string> header_values(std::string_view raw, std::string_view name) {
  std::vector<std::string> values;
  bool in_wanted = false;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    std::size_t end = raw.find('\n', pos);
    std::string_view line = raw.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? raw.size() : end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // the end of the header section
    if (line.front() == ' ' || line.front() == '\t') {
      if (in_wanted) values.back() += " " + std::string(trimmed(line));
      continue;
    }
    auto colon = line.find(':');
    in_wanted = colon != std::string_view::npos && lowered(trimmed(line.substr(0, colon))) == name;
    if (in_wanted) values.emplace_back(trimmed(line.substr(colon + 1)));
  }
  return values;
}

// RFC 8601 comments, "(...)", may hold anything, ';' and '=' too.
std::string without_comments(std::string_view v) {
  std::string out;
  int depth = 0;
  for (char c : v) {
    if (c == '(') ++depth;
    else if (c == ')' && depth > 0) --depth;
    else if (depth == 0) out += c;
  }
  return out;
}

}  // namespace

bool auth_results_hold(std::string_view raw, std::string_view authserv_id, const std::vector<std::string>& want,
                       std::string& found) {
  for (const auto& value : header_values(raw, "authentication-results")) {
    const std::string v = without_comments(value);
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t semi; (semi = v.find(';', start)) != std::string::npos; start = semi + 1)
      parts.emplace_back(trimmed(std::string_view(v).substr(start, semi - start)));
    parts.emplace_back(trimmed(std::string_view(v).substr(start)));
    // The authserv-id, optionally followed by a version number.
    const std::string id = lowered(parts.front().substr(0, parts.front().find_first_of(" \t")));
    if (id != lowered(authserv_id)) continue;
    std::vector<std::string> have;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      std::string_view p = parts[i];
      have.push_back(lowered(p.substr(0, p.find_first_of(" \t"))));
    }
    found.clear();
    for (const auto& h : have) found += (found.empty() ? "" : " ") + h;
    if (found.empty()) found = "no results";
    return std::all_of(want.begin(), want.end(),
                       [&](const std::string& w) { return std::find(have.begin(), have.end(), w) != have.end(); });
  }
  found = "no Authentication-Results from " + std::string(authserv_id);
  return false;
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
