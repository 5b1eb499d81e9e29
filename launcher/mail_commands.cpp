// `mailnet send`, `mailnet inbox` and `mailnet show`: a mail client for the
// simulated network. send speaks SMTP to a node like any client would;
// inbox and show only read the run folder's Maildirs.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>
#include <iterator>
#include <memory>

#include "common/address.hpp"
#include "common/terminal_text.hpp"
#include "launcher/commands.hpp"
#include "launcher/control_client.hpp"
#include "launcher/mail_client.hpp"
#include "common/mail/durable_file.hpp"
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

// A network's folder, running or not when named; otherwise the one network
// that is up, or (for readers: inbox and show only read files) the one that ran.
run_folder find_folder(const folder_options& o, bool may_be_down = false) {
  if (!o.dir.empty() || !o.net.empty()) {
    fs::path dir = !o.dir.empty() ? fs::path(o.dir) : fs::path("run") / o.net;
    run_folder f(dir);
    if (!fs::exists(f.topology_json())) throw std::runtime_error("no network folder at " + dir.string() + " (no topology.json)");
    return f;
  }
  if (!may_be_down || !run_folder::running_under("run").empty()) return locate_network({});
  // Nothing is up: the mail of a network that ran here is still there to read.
  std::vector<fs::path> ran;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("run", ec))
    if (fs::exists(entry.path() / "topology.json")) ran.push_back(entry.path());
  if (ran.size() == 1) return run_folder(ran.front());
  if (ran.empty()) return locate_network({});  // its message says what to do
  throw std::runtime_error("no network is up and several have run under ./run: choose one with --net NAME or --dir");
}

struct send_options {
  folder_options folder;
  outgoing_mail mail;
  std::string body_file, via;
  bool body_given = false, verbose = false;
  int timeout_s = 30;
};

int run_send(const send_options& o) {
  outgoing_mail mail = o.mail;
  auto named_sender = parse_named_address(mail.from);
  if (!named_sender) throw mail_error("--from: not a mail address: '" + mail.from + "'");
  auto sender = parse_mailbox(named_sender->address);
  if (!o.body_file.empty()) {
    try {
      mail.body = node::read_whole_file(o.body_file);
    } catch (const std::system_error& e) {
      throw mail_error("--body-file " + o.body_file + ": " + e.code().message());
    }
  } else if (!o.body_given) {
    mail.body.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  const std::string message = build_mime(mail);

  // --via HOST:PORT talks to that address; otherwise a domain's node (the
  // sender's own by default) is found through the network's resolver.
  endpoint target;
  const auto colon = o.via.rfind(':');
  if (colon != std::string::npos && o.via.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
      colon + 1 < o.via.size()) {
    target.host = o.via.substr(0, colon);
    if (target.host.size() > 2 && target.host.front() == '[') target.host = target.host.substr(1, target.host.size() - 2);
    const long port = std::stol(o.via.substr(colon + 1));
    if (port <= 0 || port > 65535) throw mail_error("--via " + o.via + ": port out of range");
    target.port = static_cast<std::uint16_t>(port);
  } else {
    const std::string domain = o.via.empty() ? sender->domain : o.via;
    auto net = load_topology(find_folder(o.folder).topology_json());
    target = find_domain_node(net.resolver.listen, domain, net.resolver.query_timeout, net.resolver.query_attempts);
  }

  // The envelope: bare addresses (build_mime has checked every one).
  std::vector<std::string> rcpts;
  for (const auto* lists : {&mail.to, &mail.cc, &mail.bcc})
    for (const auto& a : addresses_of(*lists, "")) rcpts.push_back(a.address);
  auto result = send_message(target.host, target.port, sender->domain, sender->to_string(), rcpts, message,
                             o.verbose ? &std::cerr : nullptr, std::chrono::seconds(o.timeout_s));
  if (!result.ok) {
    std::cerr << "mailnet: send to " << target.to_string() << " failed: " << terminal_safe(result.reply) << "\n";
    return 1;
  }
  std::cout << terminal_safe(result.queue_id.empty() ? result.reply : result.queue_id) << "\n";
  return 0;
}

// text (escaped for the terminal) cut or padded to width characters (UTF-8
// code points, not bytes), so that non-ASCII subjects keep the columns straight.
std::string cell(const std::string& raw, std::size_t width) {
  const std::string text = terminal_safe(raw);
  std::string out;
  std::size_t chars = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool starts_char = (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
    if (starts_char && ++chars > width - 2) break;  // keep two spaces between columns
    out += text[i];
  }
  chars = std::min(chars, width - 2);
  return out + std::string(width - chars, ' ');
}

// Maildir files of one user, oldest first (names start with the time).
std::vector<fs::path> maildir_files(const fs::path& maildir) {
  std::vector<fs::path> files;
  for (const char* sub : {"new", "cur"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(maildir / sub, ec))
      if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());  // a planted link is not mail
  }
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return files;
}

std::vector<fs::path> user_folders(const fs::path& mail_root) {
  std::vector<fs::path> users;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(mail_root, ec))
    if (e.is_directory() && !e.is_symlink()) users.push_back(e.path());
  std::sort(users.begin(), users.end());
  return users;
}

int run_inbox(const folder_options& o, const std::string& domain, const std::string& user) {
  const auto folder = find_folder(o, true);
  const auto mail_root = folder.dir() / domain / "mail";
  if (!fs::is_directory(mail_root)) throw std::runtime_error("no Maildirs for domain '" + domain + "' in " + folder.dir().string());
  std::vector<fs::path> users;
  if (user.empty()) {
    users = user_folders(mail_root);
  } else {
    if (!fs::is_directory(mail_root / user)) throw std::runtime_error("no Maildir for " + user + "@" + domain);
    users.push_back(mail_root / user);
  }
  std::cout << cell("DATE", 33) << cell("FROM", 28) << cell("SUBJECT", 34) << cell("ATT", 5) << "PATH\n";
  std::size_t count = 0;
  for (const auto& u : users) {
    for (const auto& file : maildir_files(u)) {
      std::string raw;
      try {
        raw = node::read_whole_file(file, false);  // never through a link
      } catch (const std::exception&) {
        continue;  // moved or removed by a reader meanwhile
      }
      auto m = node::parse_mail(raw);
      std::string att = m.structure_ok ? std::to_string(m.attachments.size()) : "?";
      std::cout << cell(m.date, 33) << cell(m.from, 28) << cell(m.subject, 34) << cell(att, 5)
                << terminal_safe(file.string()) << "\n";
      ++count;
    }
  }
  std::cout << count << (count == 1 ? " message\n" : " messages\n");
  return 0;
}

// A path to a message file, or a unique prefix of a Maildir file name in
// the network's folder.
fs::path find_message(const folder_options& o, const std::string& which) {
  if (fs::is_regular_file(which)) return which;
  const auto folder = find_folder(o, true);
  std::vector<fs::path> matches;
  std::error_code ec;
  for (const auto& domain : fs::directory_iterator(folder.dir(), ec)) {
    if (!fs::is_directory(domain.path() / "mail")) continue;
    for (const auto& u : user_folders(domain.path() / "mail"))
      for (const auto& file : maildir_files(u))
        if (file.filename().string().starts_with(which)) matches.push_back(file);
  }
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
  std::cout << "File:    " << terminal_safe(file.string()) << "\n"
            << "Date:    " << terminal_safe(m.date) << "\n"
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
  // <domain>/mail/<user>/new/<name>: the node saved them in <domain>/attachments/<name>.
  const auto name = file.filename().string().substr(0, file.filename().string().find(':'));
  const auto saved = file.parent_path().parent_path().parent_path().parent_path() / "attachments" / name;
  if (fs::is_directory(saved)) std::cout << "Saved in: " << terminal_safe(saved.string()) << "\n";
  for (const auto& e : m.errors) std::cout << "MIME problem: " << terminal_safe(e) << "\n";
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
}

}  // namespace mailnet::launcher
