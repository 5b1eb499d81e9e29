// Scenario steps: what `mailnet run` plays against a network. A topology may
// carry "steps"; each is one of send, kill/stop/start/restart, wait, expect.
// Parsing is pure and reports errors like the topology: file, JSON path, what
// was expected.
#pragma once

#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/faults.hpp"
#include "common/topology.hpp"

namespace mailnet::launcher {

struct mailbox_ref {
  std::string domain;
  std::string user;
  std::string folder;  // "" (the inbox) or a Maildir++ folder such as ".Junk"
  std::string to_string() const { return user + "@" + domain + (folder.empty() ? "" : " (" + folder.substr(1) + ")"); }
};

struct send_step {
  std::string from;
  std::vector<std::string> to, cc, bcc;
  std::string subject;
  std::string body;
  std::vector<std::filesystem::path> attach;  // resolved against the scenario's folder
  std::string via;                            // "" (the sender's node), a domain, or host:port
  std::string helo;                           // "" : the sender's domain
  std::string refused;  // when set, the step passes only if the server refuses with this status (e.g. "5.7.1")
  // AUTH password for the sender, as `mailnet send --password`; "" : the
  // stored one when the sender's domain has a submission listener.
  std::string password;
};

struct node_step {
  std::string action;  // kill, stop, start, restart
  std::string node;    // a domain or "resolver"
};

// { "fault": { ...rule... } }: added as `mailnet fault add` does;
// { "clear_faults": "NAME" } (or "*" or true: every rule), as `mailnet fault clear`.
struct fault_step {
  std::optional<fault_rule> add;
  std::string clear;  // the rule's name, or "*"
};

struct condition {
  enum class kind { mailbox_count, mailbox_subject, mailbox_attachment, bounce_status, queue_count, resolves,
                    fault_count };
  kind what = kind::mailbox_count;
  mailbox_ref box;           // mailbox_*, bounce_status
  std::string domain;        // queue_count, resolves
  std::string rule;          // fault_count: the faults a rule injected
  std::size_t count = 0;     // mailbox_count, queue_count, fault_count
  std::string text;          // subject, attachment name, status, or the resolver's answer
  // mailbox_subject: results the message's Authentication-Results (the one
  // its own node added) must hold, such as {"spf=pass", "dmarc=fail"}.
  std::vector<std::string> auth;
  std::string describe() const;
};

struct wait_step {
  millis duration{0};              // a plain pause, or
  std::optional<condition> until;  // a condition to wait for,
  millis timeout{10000};           // failing the step after this long
};

struct expect_step {
  condition what;
  millis within{10000};  // mail is asynchronous: an expectation may become true
};

struct step {
  std::string path;  // "$.steps[3]", for messages
  std::variant<send_step, node_step, wait_step, expect_step, fault_step> action;
  std::string describe() const;
};

// Parses doc["steps"] (absent: no steps). base_dir resolves attachment paths.
// Throws topology_error.
// Whether the Authentication-Results header of a raw message that authserv_id
// (the receiving node's domain) added holds every "method=result" of want.
// found says what it holds instead (or that there is none).
bool auth_results_hold(std::string_view raw, std::string_view authserv_id, const std::vector<std::string>& want,
                       std::string& found);

std::vector<step> parse_steps(const nlohmann::json& doc, std::string_view file_name, const topology& net,
                              const std::filesystem::path& base_dir);

struct scenario {
  topology net;
  std::vector<step> steps;
};

// The topology and its steps from one file. Throws topology_error.
scenario load_scenario(const std::filesystem::path& file);

}  // namespace mailnet::launcher
