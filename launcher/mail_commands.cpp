// `mailnet send`, `mailnet inbox` and `mailnet show`: a mail client for the
// simulated network. send speaks SMTP to a node like any client would;
// inbox and show only read the run folder's Maildirs.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <iterator>
#include <memory>
#include <unistd.h>

#include "common/address.hpp"
#include "common/passwords.hpp"
#include "common/terminal_text.hpp"
#include "launcher/commands.hpp"
#include "launcher/control_client.hpp"
#include "launcher/display_width.hpp"
#include "launcher/mail_client.hpp"
#include "launcher/tls_ca.hpp"
#include "launcher/web/trace.hpp"
#include "common/mail/durable_file.hpp"
#include "common/mail/maildir_read.hpp"
#include "common/mail/mime_parse.hpp"

namespace mailnet::launcher {

namespace {

namespace fs = std::filesystem;

struct folder_options {
  std::string dir, net;
};

void add_folder_options(CLI::App* cmd, folder_options& o) {
  cmd->add_option("--dir", o.dir, "the network's output folder");
  cmd->add_option("--net", o.net, "the network's name, when several are up under ./run");
}

// A network's folder, running or not (inbox and show only read files).
run_folder find_folder(const folder_options& o, bool may_be_down = false) {
  network_choice c;
  if (!o.dir.empty()) c.dir = o.dir;
  c.net = o.net;
  return may_be_down ? locate_network_files(c) : locate_network(c);
}

struct send_options {
  folder_options folder;
  outgoing_mail mail;
  std::string body_file, via, password;
  bool body_given = false, verbose = false;
  int timeout_s = 30;
};

int run_send(const send_options& o) {
  outgoing_mail mail = o.mail;
  auto named_sender = parse_named_address(mail.from);
  if (!named_sender) throw mail_error("--from: not a mail address: '" + mail.from + "'");
  auto sender = parse_mailbox(named_sender->address);
  if (!sender) throw mail_error("--from: not a mail address: '" + mail.from + "'");
  if (!o.body_file.empty()) {
    try {
      mail.body = node::read_whole_file(o.body_file);
    } catch (const std::system_error& e) {
      throw mail_error("--body-file " + o.body_file + ": " + e.code().message());
    }
  } else if (!o.body_given) {
    // Typed at a terminal, the body needs its end (Ctrl-D): say so, where
    // the output of the command does not go.
    if (::isatty(STDIN_FILENO))
      std::cerr << "mailnet: send: reading the body from standard input; end it with Ctrl-D on a line of its own "
                   "(or give --body TEXT or --body-file FILE)\n";
    mail.body.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  const std::string message = build_mime(mail);  // bad input is told before the network is looked for

  // --via HOST:PORT talks to that address; otherwise a domain's node (the
  // sender's own by default) is found through the network's resolver.
  std::optional<endpoint> via_address;
  resolver_settings resolver;
  submission_login login;
  bool use_login = false;
  std::string node_domain;  // the domain whose node takes the message, when found by name
  const auto colon = o.via.rfind(':');
  if (colon != std::string::npos && o.via.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
      colon + 1 < o.via.size()) {
    endpoint target;
    target.host = o.via.substr(0, colon);
    if (target.host.size() > 2 && target.host.front() == '[') target.host = target.host.substr(1, target.host.size() - 2);
    const long port = std::stol(o.via.substr(colon + 1));
    if (port <= 0 || port > 65535) throw mail_error("--via " + o.via + ": port out of range");
    target.port = static_cast<std::uint16_t>(port);
    via_address = target;
  } else {
    node_domain = o.via.empty() ? sender->domain : o.via;
    const auto folder = find_folder(o.folder);
    auto net = load_topology(folder.topology_json());
    resolver = net.resolver;
    const auto* own = net.find_domain(sender->domain);
    if (own && own->submission && net.find_domain(node_domain) == own) {
      // The sender's domain has a submission listener: mail goes there, as
      // the user, over verified TLS (README: Submission).
      via_address = *own->submission;
      login.ca_file = ca_certificate(folder.dir());
      login.server_name = own->name;
      login.user = sender->to_string();
      login.password = o.password;
      if (login.password.empty()) {
        const auto entries = read_passwords(passwords_file(folder.dir()));
        const auto* found = find_password(entries, sender->local, own->name);
        if (!found)
          throw mail_error("--from " + sender->to_string() + ": " + own->name +
                           " takes mail on its submission listener after AUTH, and this sender is not one of its users"
                           " (`mailnet users " + own->name + "` lists them); give --password, or send as a user");
        login.password = found->password;
      }
      use_login = true;
    }
  }
  if (!o.password.empty() && !use_login) {
    // --via HOST:PORT (or another domain) with --password: AUTH there, the
    // certificate checked for the sender's domain.
    login = {ca_certificate(find_folder(o.folder).dir()), sender->domain, sender->to_string(), o.password};
    use_login = true;
  }
  const auto delivery = deliver_mail(mail, message, resolver, via_address ? std::string() : o.via,
                                     o.verbose ? &std::cerr : nullptr, std::chrono::seconds(o.timeout_s), via_address,
                                     use_login ? &login : nullptr);
  const auto& result = delivery.result;
  const auto& target = delivery.target;
  if (!delivery.node_domain.empty()) node_domain = delivery.node_domain;
  if (!result.connected && !node_domain.empty()) {
    std::cerr << "mailnet: send: the node of " << terminal_safe(node_domain) << " (" << target.to_string()
              << ") does not answer: " << terminal_safe(result.reply) << "\n"
              << "  is it down? `mailnet status` shows it; `mailnet start " << terminal_safe(node_domain)
              << "` starts it\n";
    return 1;
  }
  if (result.ok && result.queue_ids.size() == 1) {
    std::cout << terminal_safe(result.queue_id.empty() ? result.reply : result.queue_id) << "\n";  // as always
    return 0;
  }
  // Several transactions, or refusals: a line for each recipient, the
  // accepted ones on stdout, the refused ones on stderr.
  std::size_t refused = 0;
  for (const auto& r : result.rcpts) {
    if (r.accepted) {
      std::cout << terminal_safe(r.address) << ": queued as " << terminal_safe(r.queue_id) << "\n";
    } else {
      ++refused;
      std::cerr << "mailnet: send: " << (r.address.empty() ? "" : terminal_safe(r.address) + ": ") << "refused by "
                << target.to_string() << ": " << terminal_safe(r.reply) << "\n";
    }
  }
  if (result.rcpts.empty()) std::cerr << "mailnet: send: " << terminal_safe(result.reply) << "\n";
  if (refused == 0) return 0;
  std::cerr << "mailnet: send: " << refused << " of " << result.rcpts.size() << " recipient"
            << (result.rcpts.size() == 1 ? "" : "s") << " refused\n";
  return 1;
}

using node::entry_in_any_case;
using node::maildir_files;
using node::user_folders;

// A user's message files: the inbox's, then those of the Junk folder (DMARC
// quarantine), each with its label ("luke", "luke/Junk").
std::vector<std::pair<std::string, fs::path>> user_messages(const fs::path& maildir) {
  std::vector<std::pair<std::string, fs::path>> out;
  const std::string user = maildir.filename().string();
  for (auto& f : maildir_files(maildir)) out.emplace_back(user, std::move(f));
  for (auto& f : maildir_files(maildir / node::junk_maildir)) out.emplace_back(user + "/Junk", std::move(f));
  return out;
}

std::string lower(std::string s) { return node::ascii_lower(std::move(s)); }

int run_inbox(const folder_options& o, std::string domain, const std::string& user) {
  const auto folder = find_folder(o, true);
  // A domain in any case, with or without the root's dot, as SMTP and the other commands take it.
  domain = lower(domain);
  if (domain.size() > 1 && domain.back() == '.') domain.pop_back();
  const auto net = load_topology(folder.topology_json());
  if (!net.find_domain(domain)) {
    std::string known;
    for (const auto& d : net.domains) known += (known.empty() ? "" : ", ") + d.name;
    throw std::runtime_error("no domain " + domain + " in network " + net.name + " (its domains: " + known + ")");
  }
  const auto mail_root = folder.dir() / domain / "mail";
  std::vector<fs::path> users;
  if (user.empty()) {
    users = user_folders(mail_root);
  } else {
    auto found = entry_in_any_case(mail_root, user);
    if (found.empty()) throw std::runtime_error("no Maildir for " + user + "@" + domain + " in " + folder.dir().string());
    users.push_back(found);
  }
  std::vector<std::vector<std::string>> rows{{"USER", "DATE", "FROM", "SUBJECT", "ATT", "PATH"}};
  for (const auto& u : users) {
    for (const auto& [label, file] : user_messages(u)) {
      std::string raw;
      try {
        raw = node::read_whole_file(file, false);  // never through a link
      } catch (const std::exception&) {
        continue;  // moved or removed by a reader meanwhile
      }
      auto m = node::parse_mail(raw);
      std::string att = m.structure_ok ? std::to_string(m.attachments.size()) : "?";
      rows.push_back({terminal_safe(label), terminal_safe(m.date), terminal_safe(m.from),
                      terminal_safe(m.subject), att, terminal_safe(file.string())});
    }
  }
  // Columns by display width (CJK and emoji take two); long dates, senders
  // and subjects are cut, the path never.
  std::cout << format_table(rows, {20, 31, 32, 40, 3, 0});
  const auto count = rows.size() - 1;
  std::cout << count << (count == 1 ? " message\n" : " messages\n");
  return 0;
}

// A path to a message file, or a unique prefix of a Maildir file name in
// the network's folder.
fs::path find_message(const folder_options& o, const std::string& which) {
  if (fs::is_regular_file(which)) return which;
  const auto folder = find_folder(o, true);
  // The name as written; else in any case (1795318974.m4475 for .M4475).
  std::vector<fs::path> matches, folded;
  const std::string which_folded = lower(which);
  std::error_code ec;
  for (const auto& domain : fs::directory_iterator(folder.dir(), ec)) {
    if (!fs::is_directory(domain.path() / "mail")) continue;
    for (const auto& u : user_folders(domain.path() / "mail"))
      for (const auto& [label, file] : user_messages(u)) {
        if (file.filename().string().starts_with(which)) matches.push_back(file);
        else if (lower(file.filename().string()).starts_with(which_folded)) folded.push_back(file);
      }
  }
  if (matches.empty()) matches = std::move(folded);
  if (matches.empty()) throw std::runtime_error("no message file or Maildir name starting with '" + which + "' in " + folder.dir().string());
  // One name is one message: a message to several users of a node is one
  // file linked under the same name into each of their Maildirs.
  std::vector<std::string> names;
  for (const auto& m : matches)
    if (std::find(names.begin(), names.end(), m.filename().string()) == names.end()) names.push_back(m.filename().string());
  if (names.size() > 1) {
    std::sort(names.begin(), names.end());
    std::string list;
    const std::size_t shown = std::min<std::size_t>(names.size(), 10);
    for (std::size_t i = 0; i < shown; ++i) list += (i ? ", " : "") + names[i];
    if (shown < names.size()) list += " and " + std::to_string(names.size() - shown) + " more";
    throw std::runtime_error("'" + which + "' matches " + std::to_string(names.size()) + " messages (" + list +
                             "); give more of the name or a path");
  }
  return matches.front();
}

int run_show(const folder_options& o, const std::string& which) {
  const auto file = find_message(o, which);
  const auto m = node::parse_mail(node::read_whole_file(file));
  // Every header, the text and the file names come from the sender: escaped.
  std::cout << "File:    " << terminal_safe(file.string()) << "\n";
  if (node::in_junk(file))
    std::cout << "Folder:  Junk (quarantined: it failed DMARC under the sender's p=quarantine)\n";
  std::cout << "Date:    " << terminal_safe(m.date) << "\n"
            << "From:    " << terminal_safe(m.from) << "\n"
            << "To:      " << terminal_safe(m.to) << "\n";
  if (!m.cc.empty()) std::cout << "Cc:      " << terminal_safe(m.cc) << "\n";
  const std::string text = terminal_safe(m.text, newlines::keep);
  std::cout << "Subject: " << terminal_safe(m.subject) << "\n\n" << text;
  if (!text.empty() && text.back() != '\n') std::cout << "\n";
  std::cout << "\nAttachments: " << m.attachments.size() << "\n";
  for (const auto& a : m.attachments)
    std::cout << "  " << (a.file_name.empty() ? "(unnamed)" : terminal_safe(a.file_name)) << "  "
              << terminal_safe(a.content_type) << "  " << a.data.size() << " bytes\n";
  // <domain>/mail/<user>/[.Junk/]new/<name>: the node saved them in <domain>/attachments/<name>.
  const auto name = file.filename().string().substr(0, file.filename().string().find(':'));
  const auto saved = node::user_maildir_of(file).parent_path().parent_path() / "attachments" / name;
  if (fs::is_directory(saved)) std::cout << "Saved in: " << terminal_safe(saved.string()) << "\n";
  for (const auto& e : m.errors) std::cout << "MIME problem: " << terminal_safe(e) << "\n";
  return 0;
}

int run_trace(const folder_options& o, const std::string& which) {
  const auto folder = find_folder(o, true);
  std::cout << web::trace_text(web::message_trace(folder.dir(), which));
  return 0;
}

}  // namespace

void register_mail_commands(CLI::App& app, command_registry& commands) {
  auto send = std::make_shared<send_options>();
  auto* send_cmd = app.add_subcommand("send", "send a MIME message with attachments through a node");
  send_cmd->add_option("--from", send->mail.from, "sender address")->required();
  send_cmd->add_option("--to", send->mail.to, "recipient (repeat for more)");
  send_cmd->add_option("--cc", send->mail.cc, "copy recipient (repeat for more)");
  send_cmd->add_option("--bcc", send->mail.bcc, "hidden recipient: in the envelope only");
  send_cmd->add_option("--subject", send->mail.subject, "subject (UTF-8)")->required();
  auto* body = send_cmd->add_option("--body", send->mail.body, "message text (default: read stdin)");
  send_cmd->add_option("--body-file", send->body_file, "read the message text from a file")->excludes(body);
  send_cmd->add_option("--attach", send->mail.attachments, "attach a file (repeat for more)");
  send_cmd->add_option("--via", send->via, "DOMAIN (its node, through the resolver) or HOST:PORT; default: the sender's domain");
  send_cmd->add_option("--password", send->password,
                       "AUTH password for the sender (default: the stored one, when the sender's domain has a "
                       "submission listener)");
  send_cmd->add_option("--timeout", send->timeout_s, "seconds allowed for each SMTP step")->check(CLI::Range(1, 3600));
  send_cmd->add_flag("-v,--verbose", send->verbose, "print the SMTP dialogue on stderr");
  add_folder_options(send_cmd, send->folder);
  commands.add(send_cmd, [send, body] {
    send->body_given = body->count() > 0;
    try {
      return run_send(*send);
    } catch (const mail_error& e) {
      std::cerr << "mailnet: send: " << terminal_safe(e.what()) << "\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "mailnet: send: " << terminal_safe(e.what()) << "\n";
      return 1;
    }
  });

  struct inbox_options {
    folder_options folder;
    std::string domain, user;
  };
  auto inbox = std::make_shared<inbox_options>();
  auto* inbox_cmd = app.add_subcommand("inbox", "list the messages delivered to a domain's users");
  inbox_cmd->add_option("domain", inbox->domain, "a domain of the network")->required();
  inbox_cmd->add_option("user", inbox->user, "only this user's Maildir");
  add_folder_options(inbox_cmd, inbox->folder);
  commands.add(inbox_cmd, [inbox] {
    try {
      return run_inbox(inbox->folder, inbox->domain, inbox->user);
    } catch (const std::exception& e) {
      std::cerr << "mailnet: inbox: " << terminal_safe(e.what()) << "\n";
      return 1;
    }
  });

  struct show_options {
    folder_options folder;
    std::string message;
  };
  auto show = std::make_shared<show_options>();
  auto* show_cmd = app.add_subcommand("show", "print a delivered message: headers, text and attachments");
  show_cmd->add_option("message", show->message, "a message file, or a unique prefix of its Maildir name")->required();
  add_folder_options(show_cmd, show->folder);
  commands.add(show_cmd, [show] {
    try {
      return run_show(show->folder, show->message);
    } catch (const std::exception& e) {
      std::cerr << "mailnet: show: " << terminal_safe(e.what()) << "\n";
      return 1;
    }
  });

  auto trace = std::make_shared<show_options>();
  auto* trace_cmd = app.add_subcommand("trace", "a message's path across the nodes, from their logs, in time order");
  trace_cmd->add_option("message", trace->message, "a Message-ID, a node's queue id, or a prefix of a Maildir name")
      ->required();
  add_folder_options(trace_cmd, trace->folder);
  commands.add(trace_cmd, [trace] {
    try {
      return run_trace(trace->folder, trace->message);
    } catch (const std::exception& e) {
      std::cerr << "mailnet: trace: " << terminal_safe(e.what()) << "\n";
      return 1;
    }
  });
}

}  // namespace mailnet::launcher
