#include "node/smtp_protocol.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "common/address.hpp"

namespace mailnet::node {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The address part of a MAIL/RCPT argument (through its '>') carries a byte
// of 0x80 or more: a UTF-8 (or raw 8-bit) address.
bool has_8bit_address(std::string_view path_text) {
  auto close = path_text.find('>');
  auto address = path_text.substr(0, close == std::string_view::npos ? path_text.size() : close + 1);
  return std::any_of(address.begin(), address.end(), [](unsigned char c) { return c >= 0x80; });
}

// RFC 6531 §3.5: without the SMTPUTF8 extension (not offered here) a
// non-ASCII mailbox is refused with 553 5.6.7, not stored in another form.
constexpr std::string_view eight_bit_address_text =
    "5.6.7 Non-ASCII addresses need SMTPUTF8, which this server does not offer";

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A local part that may become a folder name when users are not listed.
bool is_safe_mailbox_name(std::string_view s) {
  if (s.empty() || s.size() > 64 || s.front() == '.' || s.find("..") != std::string_view::npos) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
  });
}

bool is_helo_argument(std::string_view s) {
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']')  // address literal
    return std::all_of(s.begin() + 1, s.end() - 1, [](unsigned char c) {
      return std::isalnum(c) || c == '.' || c == ':';
    });
  std::string d = lower(s);
  if (!d.empty() && d.back() == '.') d.pop_back();
  // Host names with '_' are common (containers, Windows machines) and are
  // what swaks and smtplib send by default: taken like letters here.
  std::replace(d.begin(), d.end(), '_', 'x');
  return is_valid_domain_name(d);
}

struct param_result {
  int code = 0;  // 0: fine
  std::string text;
  mail_parameters params;
};

// ESMTP parameters of MAIL FROM (RFC 5321 §4.1.2, RFC 1870 SIZE, RFC 6152 BODY).
param_result parse_mail_parameters(std::string_view rest, std::uint64_t size_limit) {
  param_result r;
  rest = trim(rest);
  while (!rest.empty()) {
    auto space = rest.find(' ');
    std::string_view word = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view{} : trim(rest.substr(space));
    auto eq = word.find('=');
    std::string_view key = word.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view{} : word.substr(eq + 1);
    if (iequals(key, "SIZE")) {
      std::uint64_t n = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
        r.code = 501;
        r.text = "5.5.4 SIZE must be a whole number that fits in 64 bits";
        return r;
      }
      if (n > size_limit) {
        r.code = 552;
        r.text = "5.3.4 Message size exceeds fixed limit of " + std::to_string(size_limit) + " bytes";
        return r;
      }
      r.params.size = n;
    } else if (iequals(key, "BODY")) {
      if (iequals(value, "8BITMIME")) r.params.eight_bit = true;
      else if (!iequals(value, "7BIT")) {
        r.code = 501;
        r.text = "5.5.4 BODY must be 7BIT or 8BITMIME";
        return r;
      }
    } else {
      r.code = 555;
      r.text = "5.5.4 Unsupported parameter " + std::string(key.substr(0, 64));
      return r;
    }
  }
  return r;
}

// RFC 4648 base64 as SASL sends it (RFC 4954 §4): no line breaks, padding
// required; nullopt for anything else.
std::optional<std::string> decode_sasl_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  std::uint32_t bits = 0;
  std::size_t padding = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+' ? 62 : c == '/' ? 63 : -1;
    if (c == '=' && i + 2 >= text.size()) {
      ++padding;
      v = 0;
    } else if (v < 0 || padding > 0) {
      return std::nullopt;
    }
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    if (i % 4 == 3) {
      out += static_cast<char>((bits >> 16) & 0xFF);
      out += static_cast<char>((bits >> 8) & 0xFF);
      out += static_cast<char>(bits & 0xFF);
      bits = 0;
    }
  }
  out.resize(out.size() - padding);
  return out;
}

std::string multiline(int code, const std::vector<std::string>& lines) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i)
    out += std::to_string(code) + (i + 1 < lines.size() ? "-" : " ") + lines[i] + "\r\n";
  return out;
}

}  // namespace

mailbox_lookup find_local_mailbox(const domain_config& config, const mailbox& address) {
  if (address.quoted) return {"", 553, "5.1.3 Quoted local parts are not accepted for local delivery"};
  if (auto user = config.find_user(address.local)) return {lower(*user), 0, ""};
  // RFC 5321 §4.5.1: every SMTP server takes mail for postmaster, in any case;
  // without a user of that name it goes to a Maildir of its own.
  if (lower(address.local) == "postmaster") return {"postmaster", 0, ""};
  if (config.policy.require_known_users)
    return {"", 550, "5.1.1 <" + address.to_string() + ">: Recipient address rejected: User unknown"};
  if (is_safe_mailbox_name(address.local)) return {lower(address.local), 0, ""};
  return {"", 553, "5.1.3 <" + address.to_string() + ">: mailbox name not allowed"};
}

// The verb table: each row names the verb, the phases it is allowed in and
// its action. Phases are a bit set over smtp_protocol::phase.
struct smtp_protocol::verb_row {
  std::string_view name;
  unsigned allowed;
  step (smtp_protocol::*action)(std::string_view);
  std::string_view out_of_sequence;  // the 503 text
};

namespace {
constexpr unsigned any_phase = 0xF;
constexpr unsigned after_helo = 0xE;   // greeted, mail, rcpt
constexpr unsigned need_mail = 0xC;    // mail, rcpt
constexpr unsigned need_rcpt = 0x8;    // rcpt
constexpr unsigned no_mail = 0x2;      // greeted (not inside a transaction)
}  // namespace

const smtp_protocol::verb_row smtp_protocol::verbs_[] = {
    {"HELO", any_phase, nullptr, ""},  // handled before the table (needs the esmtp flag)
    {"EHLO", any_phase, nullptr, ""},
    {"MAIL", no_mail, &smtp_protocol::do_mail, "5.5.1 Send HELO/EHLO first, or finish this transaction"},
    {"RCPT", need_mail, &smtp_protocol::do_rcpt, "5.5.1 Need MAIL before RCPT"},
    {"DATA", need_rcpt, &smtp_protocol::do_data, "5.5.1 Need RCPT before DATA"},
    {"RSET", any_phase, &smtp_protocol::do_rset, ""},
    {"NOOP", any_phase, &smtp_protocol::do_noop, ""},
    {"VRFY", any_phase, &smtp_protocol::do_vrfy, ""},
    {"HELP", any_phase, &smtp_protocol::do_help, ""},
    {"QUIT", any_phase, &smtp_protocol::do_quit, ""},
    {"EXPN", any_phase, &smtp_protocol::do_not_implemented, ""},
    {"TURN", any_phase, &smtp_protocol::do_not_implemented, ""},
    {"ETRN", any_phase, &smtp_protocol::do_not_implemented, ""},
    {"BDAT", any_phase, &smtp_protocol::do_not_implemented, ""},
    {"AUTH", any_phase, &smtp_protocol::do_auth, ""},  // its phases: do_auth
    {"STARTTLS", any_phase, &smtp_protocol::do_starttls, ""},  // its phases: do_starttls
};

smtp_protocol::smtp_protocol(const domain_config& config, std::string client_ip) : config_(config) {
  env_.client_ip = std::move(client_ip);
}

std::string smtp_protocol::greeting() const {
  return "220 " + config_.name + " ESMTP mailnet ready\r\n";
}

std::string smtp_protocol::timeout_reply() const {
  return "421 4.4.2 " + config_.name + " Timeout exceeded, closing connection\r\n";
}

std::string smtp_protocol::pregreet_reply() const {
  return "554 5.5.0 " + config_.name + " Protocol error: client sent data before the greeting\r\n";
}

step smtp_protocol::early_data() {
  reset_transaction();
  closed_ = true;
  return {"554 5.5.0 Improper use of SMTP command pipelining: message data sent before the 354 reply\r\n",
          next_step::close};
}

step smtp_protocol::reply(int code, std::string_view text) {
  step s{std::to_string(code) + " " + std::string(text) + "\r\n", next_step::read_command};
  if (code >= 400 && ++errors_ >= config_.limits.errors) {
    s.reply += "421 4.7.0 " + config_.name + " Too many errors, closing connection\r\n";
    s.next = next_step::close;
    closed_ = true;
  }
  return s;
}

step smtp_protocol::on_line_too_long() {
  if (closed_) return {"", next_step::close};
  return reply(500, "5.5.2 Line too long (limit " + std::to_string(config_.limits.command_line) + " bytes)");
}

step smtp_protocol::on_line(std::string_view line) {
  if (closed_) return {"", next_step::close};  // a closed session stays closed
  if (auth_state_ != auth_state::none) return on_auth_response(line);
  if (has_control(line)) return reply(501, "5.5.2 Control characters are not allowed in commands");
  auto space = line.find(' ');
  std::string_view verb = line.substr(0, space);
  std::string_view arg = space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  if (iequals(verb, "HELO")) return do_helo(arg, false);
  if (iequals(verb, "EHLO")) return do_helo(arg, true);
  for (const auto& row : verbs_) {
    if (!iequals(verb, row.name) || !row.action) continue;
    if (!(row.allowed & (1u << static_cast<unsigned>(phase_)))) return reply(503, row.out_of_sequence);
    return (this->*row.action)(arg);
  }
  return reply(500, "5.5.1 Command unrecognized");
}

void smtp_protocol::reset_transaction() {
  env_.mail_from.clear();
  env_.rcpts.clear();
  if (phase_ != phase::fresh) phase_ = phase::greeted;
}

step smtp_protocol::do_helo(std::string_view arg, bool esmtp) {
  arg = trim(arg);
  if (arg.empty()) return reply(501, "5.5.4 Syntax: " + std::string(esmtp ? "EHLO" : "HELO") + " hostname");
  if (!is_helo_argument(arg)) return reply(501, "5.5.4 Invalid domain name in " + std::string(esmtp ? "EHLO" : "HELO"));
  reset_transaction();
  phase_ = phase::greeted;
  env_.helo = lower(arg);
  if (env_.helo.size() > 1 && env_.helo.back() == '.') env_.helo.pop_back();  // "jaku.com." is jaku.com
  env_.esmtp = esmtp;
  if (!esmtp) return {"250 " + config_.name + "\r\n", next_step::read_command};
  std::vector<std::string> lines{config_.name + " greets " + env_.helo,
                                 "SIZE " + std::to_string(config_.limits.message_size), "8BITMIME", "PIPELINING",
                                 "ENHANCEDSTATUSCODES"};
  if (tls_offered_ && !tls_active()) lines.push_back("STARTTLS");
  if (passwords_ && tls_active()) lines.push_back("AUTH PLAIN LOGIN");  // RFC 4954 §4: only inside TLS here
  lines.push_back("HELP");
  return {multiline(250, lines), next_step::read_command};
}

step smtp_protocol::do_mail(std::string_view arg) {
  if (mail_refusal_code_ != 0) return reply(mail_refusal_code_, mail_refusal_);
  if ((passwords_ || config_.policy.tls == tls_policy::required) && !tls_active())
    return reply(530, "5.7.0 Must issue a STARTTLS command first");
  if (passwords_ && env_.auth_user.empty()) return reply(530, "5.7.0 Authentication required");
  if (!istarts_with(arg, "FROM:")) return reply(501, "5.5.4 Syntax: MAIL FROM:<address>");
  if (has_8bit_address(arg.substr(5))) return reply(553, eight_bit_address_text);
  auto path = parse_path(arg.substr(5));
  switch (path.error) {
    case address_error::none: break;
    case address_error::control_bytes: return reply(501, "5.5.2 " + std::string(describe(path.error)));
    case address_error::too_long:
    case address_error::address_literal: return reply(553, "5.1.7 " + std::string(describe(path.error)));
    default: return reply(501, "5.1.7 Bad sender address syntax: " + std::string(describe(path.error)));
  }
  auto params = parse_mail_parameters(path.rest, config_.limits.message_size);
  if (params.code) return reply(params.code, params.text);
  if (passwords_) {
    // Submission relays for its users only, as themselves (or as the
    // domain's postmaster): the sender is the authenticated user.
    const auto at = env_.auth_user.rfind('@');
    const bool own = !path.null_path && path.box.domain == config_.name && !path.box.quoted &&
                     (lower(path.box.local) == lower(env_.auth_user.substr(0, at)) || lower(path.box.local) == "postmaster");
    if (!own)
      return reply(553, "5.7.1 Sender address <" + (path.null_path ? std::string() : path.box.to_string()) +
                            "> is not owned by " + env_.auth_user + " (send as yourself or postmaster@" + config_.name + ")");
  }
  if (!path.null_path && config_.policy.require_helo_domain_match && path.box.domain != env_.helo)
    return reply(550, "5.7.1 Sender domain " + path.box.domain + " does not match the HELO/EHLO domain " + env_.helo);
  env_.mail_from = path.null_path ? std::string{} : path.box.to_string();
  phase_ = phase::mail;
  return {"250 2.1.0 Ok\r\n", next_step::read_command};
}

step smtp_protocol::do_rcpt(std::string_view arg) {
  if (!istarts_with(arg, "TO:")) return reply(501, "5.5.4 Syntax: RCPT TO:<address>");
  std::string_view text = arg.substr(3);
  if (has_8bit_address(text)) return reply(553, eight_bit_address_text);
  auto path = parse_path(text);
  // RFC 5321 §4.1.1.3: <Postmaster> (and, here, any bare local part) means this domain.
  std::string qualified;
  if (path.error == address_error::bad_syntax) {
    auto open = text.find('<'), close = text.find('>');
    if (open != std::string_view::npos && close != std::string_view::npos && close > open &&
        text.substr(open, close - open).find('@') == std::string_view::npos) {
      qualified = std::string(text.substr(0, close)) + "@" + config_.name + std::string(text.substr(close));
      path = parse_path(qualified);
    }
  }
  switch (path.error) {
    case address_error::none: break;
    case address_error::control_bytes: return reply(501, "5.5.2 " + std::string(describe(path.error)));
    case address_error::too_long:
    case address_error::address_literal: return reply(553, "5.1.3 " + std::string(describe(path.error)));
    default: return reply(501, "5.1.3 Bad recipient address syntax: " + std::string(describe(path.error)));
  }
  if (path.null_path) return reply(501, "5.1.3 The null address <> is not a recipient");
  if (!trim(path.rest).empty()) return reply(555, "5.5.4 RCPT parameters are not supported");
  // Not counted as an error: a client with a long list is doing nothing wrong (RFC 5321 §4.5.3.1.10).
  if (env_.rcpts.size() >= config_.limits.recipients) return {"452 4.5.3 Too many recipients\r\n", next_step::read_command};

  recipient r{path.box.to_string(), path.box.domain, {}};
  const bool ours = path.box.domain == config_.name || config_.policy.mailbox_by_local_part;
  // Relaying is for our own senders only. Another domain is relaying, and so
  // are user%other.example@us, other.example!user@us and "user@other.example"@us,
  // the old ways to name a host through this one (for our own senders such a
  // local part is simply no mailbox here).
  const bool routes_elsewhere = path.box.local.find_first_of("%!@") != std::string::npos;
  if (!ours || routes_elsewhere) {
    auto sender = parse_mailbox(env_.mail_from);
    if (!sender || sender->domain != config_.name)
      return reply(554, "5.7.1 <" + path.box.to_string() + ">: Relay access denied");
  }
  if (ours) {
    auto found = find_local_mailbox(config_, path.box);
    if (found.mailbox.empty()) return reply(found.code, found.text);
    r.mailbox = found.mailbox;
    r.address = path.box.local + "@" + config_.name;
    r.domain = config_.name;
  }
  env_.rcpts.push_back(std::move(r));
  phase_ = phase::rcpt;
  return {"250 2.1.5 Ok\r\n", next_step::read_command};
}

step smtp_protocol::do_data(std::string_view arg) {
  if (!trim(arg).empty()) return reply(501, "5.5.4 DATA takes no arguments");
  return {"354 End data with <CR><LF>.<CR><LF>\r\n", next_step::read_data};
}

step smtp_protocol::on_data_end(const data_outcome& outcome) {
  if (closed_) return {"", next_step::close};
  if (outcome.too_big) {
    reset_transaction();
    return reply(552, "5.3.4 Message size exceeds fixed limit of " + std::to_string(config_.limits.message_size) + " bytes");
  }
  if (outcome.line_too_long) {
    reset_transaction();
    return reply(500, "5.5.2 Message has a line longer than " + std::to_string(config_.limits.text_line) + " bytes");
  }
  if (outcome.received_headers > config_.limits.received_headers) {
    reset_transaction();
    return reply(554, "5.4.6 Too many Received: headers, mail forwarding loop");
  }
  return {"", next_step::commit};
}

step smtp_protocol::on_commit(bool ok, std::string_view queue_id_or_error) {
  if (closed_) return {"", next_step::close};
  reset_transaction();
  if (!ok) return reply(451, "4.3.0 Local error in processing, try again later");
  return {"250 2.0.0 Ok: queued as " + std::string(queue_id_or_error) + "\r\n", next_step::read_command};
}

step smtp_protocol::do_rset(std::string_view) {
  reset_transaction();
  return {"250 2.0.0 Ok\r\n", next_step::read_command};
}

step smtp_protocol::do_noop(std::string_view) { return {"250 2.0.0 Ok\r\n", next_step::read_command}; }

step smtp_protocol::do_vrfy(std::string_view arg) {
  if (trim(arg).empty()) return reply(501, "5.5.4 Syntax: VRFY address");
  return {"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n", next_step::read_command};
}

step smtp_protocol::do_help(std::string_view) {
  return {multiline(214, {"2.0.0 mailnet " + config_.name + " commands:",
                          "2.0.0 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
                          "2.0.0 End of HELP info"}),
          next_step::read_command};
}

step smtp_protocol::do_quit(std::string_view) {
  closed_ = true;
  return {"221 2.0.0 " + config_.name + " Bye\r\n", next_step::close};
}

step smtp_protocol::do_starttls(std::string_view arg) {
  if (!tls_offered_) return do_not_implemented(arg);
  if (tls_active()) return reply(503, "5.5.1 TLS already active");
  if (phase_ != phase::greeted) return reply(503, "5.5.1 Send EHLO first, and STARTTLS outside a mail transaction");
  if (!trim(arg).empty()) return reply(501, "5.5.4 Syntax: STARTTLS");
  return {"220 2.0.0 Ready to start TLS\r\n", next_step::start_tls};
}

void smtp_protocol::on_tls_started(std::string description) {
  reset_transaction();
  phase_ = phase::fresh;
  env_.helo.clear();
  env_.esmtp = false;
  env_.auth_user.clear();
  env_.tls = std::move(description);
}

step smtp_protocol::do_auth(std::string_view arg) {
  if (!passwords_) return do_not_implemented(arg);  // port 25: AUTH is not offered
  if (!tls_active()) return reply(538, "5.7.11 Encryption required for requested authentication mechanism");
  if (phase_ == phase::fresh) return reply(503, "5.5.1 Send EHLO first");
  if (!env_.auth_user.empty()) return reply(503, "5.5.1 Already authenticated");
  if (phase_ != phase::greeted) return reply(503, "5.5.1 AUTH is not allowed during a mail transaction");
  arg = trim(arg);
  const auto space = arg.find(' ');
  const auto mechanism = arg.substr(0, space);
  const auto initial = space == std::string_view::npos ? std::string_view{} : trim(arg.substr(space + 1));
  const bool has_initial = space != std::string_view::npos && !initial.empty();
  if (iequals(mechanism, "PLAIN")) {
    auth_state_ = auth_state::plain;
    if (!has_initial) return {"334 \r\n", next_step::read_command};
    return on_auth_response(initial == "=" ? std::string_view{} : initial);
  }
  if (iequals(mechanism, "LOGIN")) {
    auth_state_ = auth_state::login_user;
    if (!has_initial) return {"334 VXNlcm5hbWU6\r\n", next_step::read_command};  // "Username:"
    return on_auth_response(initial);
  }
  if (mechanism.empty()) return reply(501, "5.5.4 Syntax: AUTH mechanism [initial-response]");
  return reply(504, "5.5.4 Unrecognized authentication type (PLAIN and LOGIN are offered)");
}

step smtp_protocol::on_auth_response(std::string_view line) {
  const auto state = auth_state_;
  auth_state_ = auth_state::none;
  if (line == "*") return reply(501, "5.0.0 Authentication cancelled");
  auto decoded = line.empty() ? std::optional<std::string>("") : decode_sasl_base64(line);
  if (!decoded) return reply(501, "5.5.2 Cannot decode the response (base64 expected)");
  if (state == auth_state::login_user) {
    auth_login_ = *decoded;
    auth_state_ = auth_state::login_password;
    return {"334 UGFzc3dvcmQ6\r\n", next_step::read_command};  // "Password:"
  }
  if (state == auth_state::login_password) return finish_auth({}, std::string(auth_login_), *decoded);
  // PLAIN (RFC 4616): authzid NUL authcid NUL passwd
  const std::string& m = *decoded;
  const auto first = m.find('\0');
  const auto second = first == std::string::npos ? std::string::npos : m.find('\0', first + 1);
  if (second == std::string::npos || m.find('\0', second + 1) != std::string::npos)
    return reply(501, "5.5.2 Malformed PLAIN response (authzid NUL authcid NUL password expected)");
  const std::string_view view(m);
  return finish_auth(view.substr(0, first), view.substr(first + 1, second - first - 1), view.substr(second + 1));
}

step smtp_protocol::finish_auth(std::string_view authzid, std::string_view login, std::string_view password) {
  const std::string login_text(login.substr(0, 256));
  auth_login_.clear();
  // A user of this domain only, as "user" or "user@domain"; no acting as another (authzid).
  const auto at = login.rfind('@');
  const bool this_domain = at == std::string_view::npos || lower(login.substr(at + 1)) == config_.name;
  const bool same_identity = authzid.empty() || lower(authzid) == lower(login) ||
                             (authzid.find('@') == std::string_view::npos && at != std::string_view::npos &&
                              lower(authzid) == lower(login.substr(0, at)));
  const password_entry* entry = find_password(*passwords_, login, config_.name);
  if (this_domain && same_identity && entry && check_password(*passwords_, login, config_.name, password)) {
    env_.auth_user = entry->address();
    step s{"235 2.7.0 Authentication successful\r\n", next_step::read_command};
    s.auth = step::auth_result::succeeded;
    s.login = env_.auth_user;
    return s;
  }
  ++auth_failures_;
  step s = reply(535, "5.7.8 Authentication credentials invalid");
  s.auth = step::auth_result::failed;
  s.login = login_text;
  return s;
}

step smtp_protocol::do_not_implemented(std::string_view) {
  return reply(502, "5.5.1 Command not implemented");
}

}  // namespace mailnet::node
