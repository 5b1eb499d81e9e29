#include "launcher/scenario_runner.hpp"
#include "launcher/bind_rights.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <csignal>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "common/address.hpp"
#include "common/faults_json.hpp"
#include "common/passwords.hpp"
#include "common/private_files.hpp"
#include "common/terminal_text.hpp"
#include "launcher/control_client.hpp"
#include "launcher/mail_client.hpp"
#include "launcher/resolve_command.hpp"
#include "launcher/scenario.hpp"
#include "launcher/tls_ca.hpp"
#include "common/mail/durable_file.hpp"
#include "common/mail/mime_parse.hpp"

namespace mailnet::launcher {

namespace {

using clock = std::chrono::steady_clock;

struct outcome {
  bool ok = false;
  std::string detail;  // what was seen, or why it failed
};

std::filesystem::path self_binary() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path("mailnet") : self;
}

// Runs this binary with args and returns its exit code (output passes through).
int run_self(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string exe = self_binary().string();
  argv.push_back(exe.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::cout << std::flush;
  pid_t pid = ::fork();
  if (pid < 0) return 127;
  if (pid == 0) {
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

class runner {
 public:
  runner(scenario s, run_folder folder) : s_(std::move(s)), folder_(std::move(folder)) {}

  outcome play(const step& st) {
    return std::visit([&](const auto& action) { return perform(action); }, st.action);
  }

 private:
  outcome perform(const send_step& s) {
    outgoing_mail mail{s.from, s.to, s.cc, s.bcc, s.subject, s.body, s.attach, {}};
    std::string message;
    try {
      message = build_mime(mail);
    } catch (const std::exception& e) {
      return {false, std::string("cannot build the message: ") + e.what()};
    }
    std::vector<std::string> rcpts = s.to;
    rcpts.insert(rcpts.end(), s.cc.begin(), s.cc.end());
    rcpts.insert(rcpts.end(), s.bcc.begin(), s.bcc.end());
    endpoint target;
    submission_login login;
    bool use_login = false;
    try {
      use_login = submission_listener(s, target, login);
      if (!use_login) target = submission_node(s);
    } catch (const std::exception& e) {
      return {false, e.what()};
    }
    // HELO with the sender's domain, as a mail client of that domain would.
    std::string helo = s.helo.empty() ? s.from.substr(s.from.rfind('@') + 1) : s.helo;
    auto sent = send_message(target.host, target.port, helo, s.from, rcpts, message, nullptr, std::chrono::seconds(30),
                             use_login ? &login : nullptr);
    if (!s.refused.empty()) {
      if (sent.ok) return {false, "accepted (queued as " + sent.queue_id + "), expected a refusal with " + s.refused};
      if (sent.reply.find(" " + s.refused) == std::string::npos) return {false, "refused, but with " + sent.reply};
      return {true, "refused: " + sent.reply};
    }
    if (!sent.ok) return {false, "refused: " + sent.reply};
    return {true, "queued as " + sent.queue_id};
  }

  // As `mailnet send` does: a sender whose domain has a submission listener
  // (and no "via" elsewhere) sends there, over TLS verified for the domain,
  // with AUTH as itself: the step's password or the stored one. A password
  // with another target logs in there, the certificate checked for the
  // sender's domain. False: plain SMTP to submission_node(s).
  bool submission_listener(const send_step& s, endpoint& target, submission_login& login) const {
    const auto sender = parse_mailbox(s.from);
    if (!sender) throw std::runtime_error("not a mail address: " + s.from);
    const auto* own = s_.net.find_domain(sender->domain);
    const bool via_own = s.via.empty() || (own && s_.net.find_domain(s.via) == own);
    if (own && own->submission && via_own) {
      target = *own->submission;
      login = {ca_certificate(folder_.dir()), own->name, sender->to_string(), s.password};
      if (login.password.empty()) {
        const auto entries = read_passwords(passwords_file(folder_.dir()));
        const auto* found = find_password(entries, sender->local, own->name);
        if (!found)
          throw std::runtime_error(s.from + " is not a user of " + own->name +
                                   ", which takes mail on its submission listener after AUTH: give the step a "
                                   "\"password\", or send as a user");
        login.password = found->password;
      }
      return true;
    }
    if (s.password.empty()) return false;
    target = submission_node(s);
    login = {ca_certificate(folder_.dir()), sender->domain, sender->to_string(), s.password};
    return true;
  }

  // The sender's own node (found through the resolver, as `mailnet send` does),
  // another domain's node, or host:port.
  endpoint submission_node(const send_step& s) const {
    std::string domain = s.via.empty() ? s.from.substr(s.from.rfind('@') + 1) : s.via;
    if (auto colon = domain.rfind(':'); colon != std::string::npos)
      return endpoint{domain.substr(0, colon), static_cast<std::uint16_t>(std::stoi(domain.substr(colon + 1)))};
    return find_domain_node(s_.net.resolver.listen, domain, s_.net.resolver.query_timeout, s_.net.resolver.query_attempts);
  }

  // "Status: 5.1.2" lines of a delivery report (RFC 3464), if raw is one.
  static std::vector<std::string> delivery_statuses(const std::string& raw) {
    std::vector<std::string> out;
    if (raw.find("multipart/report") == std::string::npos) return out;
    for (std::size_t pos = raw.find("\nStatus: "); pos != std::string::npos; pos = raw.find("\nStatus: ", pos + 1)) {
      auto start = pos + 9, end = raw.find_first_of("\r\n", start);
      out.push_back(raw.substr(start, end - start));
    }
    return out;
  }

  outcome perform(const node_step& n) {
    try {
      auto reply = ask_launcher(folder_, {{"cmd", n.action}, {"name", n.node}});
      if (!reply.value("ok", false)) return {false, reply.value("error", "refused")};
      return {true, n.node + " " + reply.value("state", "")};
    } catch (const std::exception& e) {
      return {false, e.what()};
    }
  }

  outcome perform(const fault_step& f) {
    try {
      nlohmann::json request;
      if (f.add) {
        request["cmd"] = "fault_add";
        request["rule"] = fault_rule_to_json(*f.add);
      } else {
        request["cmd"] = "fault_clear";
        request["name"] = f.clear;
      }
      auto reply = ask_launcher(folder_, request);
      if (!reply.value("ok", false)) return {false, reply.value("error", "refused")};
      std::string detail = f.add ? "applied by " : "cleared ";
      auto list = f.add ? reply.value("applied", nlohmann::json::array()) : reply.value("cleared", nlohmann::json::array());
      for (std::size_t i = 0; i < list.size(); ++i) detail += (i ? ", " : "") + list[i].get<std::string>();
      for (const auto& p : reply.value("pending", nlohmann::json::array())) detail += "; " + p.get<std::string>();
      return {true, detail};
    } catch (const std::exception& e) {
      return {false, e.what()};
    }
  }

  outcome perform(const wait_step& w) {
    if (!w.until) {
      std::this_thread::sleep_for(w.duration);  // the scenario asked for a pause
      return {true, ""};
    }
    return eventually(*w.until, w.timeout);
  }

  outcome perform(const expect_step& e) { return eventually(e.what, e.within); }

  // Mail is asynchronous: poll the condition until it holds or time is up.
  outcome eventually(const condition& c, millis within) {
    const auto deadline = clock::now() + within;
    for (;;) {
      outcome o = check(c);
      if (o.ok || clock::now() >= deadline) {
        if (!o.ok) o.detail = "after " + std::to_string(within.count()) + " ms: " + o.detail;
        return o;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::vector<std::filesystem::path> messages(const mailbox_ref& box) const {
    std::vector<std::filesystem::path> files;
    for (const char* sub : {"new", "cur"}) {
      std::error_code ec;
      const auto dir = folder_.dir() / box.domain / "mail" / box.user / box.folder / sub;
      for (const auto& e : std::filesystem::directory_iterator(dir, ec))
        if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());  // no planted links
    }
    return files;
  }

  outcome check(const condition& c) {
    using k = condition::kind;
    switch (c.what) {
      case k::mailbox_count: {
        auto n = messages(c.box).size();
        return {n == c.count, "found " + std::to_string(n)};
      }
      case k::mailbox_subject:
      case k::mailbox_attachment:
      case k::bounce_status: {
        std::vector<std::string> seen;
        for (const auto& file : messages(c.box)) {
          std::string raw;
          try {
            raw = node::read_whole_file(file);
          } catch (const std::exception&) {
            continue;  // moved to cur/ meanwhile: the next round sees it
          }
          if (c.what == k::bounce_status) {
            auto statuses = delivery_statuses(raw);
            if (std::find(statuses.begin(), statuses.end(), c.text) != statuses.end()) return {true, file.filename().string()};
            if (!statuses.empty()) seen.push_back("a bounce with Status " + statuses.front());
            continue;
          }
          auto m = node::parse_mail(raw);
          if (c.what == k::mailbox_subject && m.subject == c.text) {
            if (c.auth.empty()) return {true, file.filename().string()};
            std::string results;
            if (auth_results_hold(raw, c.box.domain, c.auth, results)) return {true, file.filename().string()};
            seen.push_back("\"" + m.subject + "\" with " + results);
            continue;
          }
          if (c.what == k::mailbox_attachment)
            for (const auto& a : m.attachments)
              if (a.file_name == c.text) return {true, file.filename().string()};
          seen.push_back(c.what == k::mailbox_subject ? "\"" + m.subject + "\""
                                                      : std::to_string(m.attachments.size()) + " attachment(s)");
        }
        std::string list;
        for (const auto& s : seen) list += (list.empty() ? "" : ", ") + s;
        return {false, seen.empty() ? "the mailbox is empty" : "found " + list};
      }
      case k::queue_count: {
        auto n = folder_.queued_count(c.domain);
        return {n == c.count, "found " + std::to_string(n)};
      }
      case k::fault_count: {
        try {
          auto reply = ask_launcher(folder_, {{"cmd", "fault_list"}});
          for (const auto& f : reply.value("faults", nlohmann::json::array()))
            if (f.value("name", "") == c.rule) {
              auto n = f.value("injected", std::size_t{0});
              return {n == c.count, "found " + std::to_string(n)};
            }
          return {false, "no rule " + c.rule + " in force"};
        } catch (const std::exception& e) {
          return {false, e.what()};
        }
      }
      case k::resolves: {
        auto result = lookup_mail_domain(s_.net, c.domain);
        std::string answer = result.status == node::lookup_status::nxdomain ? "NXDOMAIN"
                             : result.status == node::lookup_status::ok && !result.routes.empty()
                                 ? route_text(result.routes.front())
                                 : "no answer (" + result.detail + ")";
        return {answer == c.text, "answered " + answer};
      }
    }
    return {false, "unknown condition"};
  }

  scenario s_;
  run_folder folder_;
};

}  // namespace

int run_scenario(const run_options& options) {
  scenario s;
  try {
    s = load_scenario(options.file);
  } catch (const topology_error& e) {
    std::cerr << "mailnet: " << e.what() << "\n";
    return 2;
  }
  if (auto problem = privileged_port_problem(s.net, current_bind_rights()); !problem.empty()) {
    std::cerr << "mailnet: " << options.file.string() << ": " << problem << "\n";
    return 2;
  }
  run_folder folder(options.dir ? *options.dir : std::filesystem::path("run") / s.net.name);
  std::cout << "mailnet run: " << s.net.name << ", " << s.steps.size() << " steps, in " << folder.dir().string()
            << "\n";
  // A folder where the user brought a network up holds their mail: never
  // emptied without --fresh. One that `mailnet run` made is the scenario's.
  std::error_code ec;
  const bool holds_network = std::filesystem::exists(folder.topology_json(), ec);
  const bool made_by_run = std::filesystem::is_regular_file(std::filesystem::symlink_status(folder.scenario_marker(), ec));
  if (holds_network && !made_by_run && !options.fresh) {
    std::cerr << "mailnet run: " << folder.dir().string()
              << " holds a network brought up with `mailnet up`, and running the scenario there would empty it "
                 "(its mail, queues and logs).\n"
              << "  Add --fresh to empty it anyway, or play the scenario in another folder with --dir DIR.\n";
    return 2;
  }
  const int up = run_self({"up", "-d", "--fresh", options.file.string(), "--dir", folder.dir().string()});
  // The folder is the scenario's now, also when its network did not come up
  // (a busy port): the next run there needs no --fresh.
  if (std::filesystem::exists(folder.topology_json(), ec)) {
    try {
      write_private_file(folder.scenario_marker(), "this folder was made by `mailnet run " + options.file.string() + "`\n");
    } catch (const std::exception& e) {
      std::cerr << "mailnet run: " << e.what() << "\n";  // the next run will ask for --fresh; this one goes on
    }
  }
  if (up != 0) {
    std::cout << "FAIL: the network did not come up\n0 passed, 1 failed\n";
    return 1;
  }
  runner r(s, folder);
  std::size_t passed = 0, failed = 0;
  const auto width = std::to_string(s.steps.size()).size();
  for (std::size_t i = 0; i < s.steps.size(); ++i) {
    const auto& st = s.steps[i];
    std::string number = std::to_string(i + 1);
    number.insert(0, width - number.size(), ' ');
    std::cout << "[" << number << "/" << s.steps.size() << "] " << st.describe() << " ... " << std::flush;
    auto started = clock::now();
    outcome o;
    try {
      o = r.play(st);
    } catch (const std::exception& e) {  // a step that throws is a failed step; the network still comes down
      o = {false, std::string("error: ") + e.what()};
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count();
    if (o.ok) {
      ++passed;
      // A step's detail may quote mail (a subject seen): escaped.
      std::cout << "pass" << (o.detail.empty() ? "" : " (" + terminal_safe(o.detail) + ")") << " [" << ms << " ms]\n";
    } else {
      ++failed;
      std::cout << "FAIL: " << terminal_safe(o.detail) << " (" << st.path << ")\n";
    }
  }
  std::cout << std::flush;
  if (options.keep) {
    std::cout << "mailnet run: the network stays up (--keep); stop it with `mailnet down --dir " << folder.dir().string()
              << "`\n";
  } else {
    try {
      ask_launcher(folder, {{"cmd", "down"}});
      for (int i = 0; i < 200 && folder.running_launcher(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } catch (const std::exception& e) {
      std::cerr << "mailnet: could not bring the network down: " << e.what() << "\n";
    }
    // Never leave a network behind on fixed ports: the launcher's nodes die with it.
    if (auto pid = folder.running_launcher()) {
      std::cerr << "mailnet: the launcher (pid " << *pid << ") did not stop; killing it\n";
      ::kill(*pid, SIGKILL);
    }
  }
  // A child that crashed or tripped a sanitizer said so in the launcher's log.
  std::ifstream log(folder.launcher_log());
  for (std::string line; std::getline(log, line);) {
    if (line.find("ERROR: AddressSanitizer") != std::string::npos || line.find("runtime error: ") != std::string::npos ||
        line.find("ERROR: LeakSanitizer") != std::string::npos) {
      std::cout << "FAIL: a child reported: " << terminal_safe(line) << " (see " << folder.launcher_log().string() << ")\n";
      ++failed;
      break;
    }
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace mailnet::launcher
