// The server side of an SMTP conversation as pure code: command lines in,
// replies and the next step out. No sockets, no disk: the session coroutine
// (smtp_session) does the I/O, and commits the message between
// on_data_end() and on_commit().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.hpp"
#include "common/passwords.hpp"
#include "common/topology.hpp"

namespace mailnet::node {

struct recipient {
  std::string address;  // as it goes into the envelope: local@domain
  std::string domain;
  std::string mailbox;  // the Maildir folder name for a local recipient, empty for relay
  bool is_local() const { return !mailbox.empty(); }
};

struct envelope {
  std::string helo;
  bool esmtp = false;
  std::string client_ip;
  std::string mail_from;  // empty: the null sender <>
  std::vector<recipient> rcpts;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384" inside TLS, empty in plain text
  std::string auth_user;  // "rey@jaku.com" once AUTH succeeded (submission), else empty
};

// start_tls: the reply (220) goes out alone, then the TLS handshake; the
// session calls on_tls_started() once it is done.
enum class next_step { read_command, read_data, commit, close, start_tls };

struct step {
  step() = default;
  step(std::string r, next_step n = next_step::read_command) : reply(std::move(r)), next(n) {}
  std::string reply;  // wire text, CRLF-terminated (possibly several lines); may be empty
  next_step next = next_step::read_command;
  // AUTH: the credentials were wrong (the session delays the 535 and logs
  // it), or right; login is what the client gave as its user name.
  enum class auth_result { none, failed, succeeded } auth = auth_result::none;
  std::string login;
};

// Result of the data phase, as the session reports it.
struct data_outcome {
  bool too_big = false;
  bool line_too_long = false;
  std::size_t received_headers = 0;
};

class smtp_protocol {
 public:
  smtp_protocol(const domain_config& config, std::string client_ip);

  std::string greeting() const;
  // Every MAIL of this session gets this reply (code and text, e.g. 550
  // "5.7.25 ..."): a check made at connect (policy.require_fcrdns) failed.
  void refuse_mail(int code, std::string text) {
    mail_refusal_code_ = code;
    mail_refusal_ = std::move(text);
  }
  step on_line(std::string_view line);  // one command line, CRLF removed
  step on_line_too_long();              // the line passed limits.command_line
  step on_data_end(const data_outcome& outcome);  // commit, or a rejection
  step on_commit(bool ok, std::string_view queue_id_or_error);
  std::string timeout_reply() const;    // 421 4.4.2
  std::string pregreet_reply() const;   // the client spoke before the 220
  step early_data();                    // message data came before the 354
  // The transaction ends without a commit (a fault answered in its place):
  // the client may begin a new one.
  void abort_transaction() { reset_transaction(); }

  const envelope& transaction() const { return env_; }

  // Whether STARTTLS is offered in EHLO and taken (the node has a
  // certificate and policy.tls is not "off"); false by default.
  void offer_tls(bool on) { tls_offered_ = on; }
  // RFC 3207 §4.2: the session starts again from the beginning, as if just
  // greeted (no EHLO name, no transaction); description goes into Received:.
  void on_tls_started(std::string description);
  bool tls_active() const { return !env_.tls.empty(); }

  // The submission listener (README: Submission): STARTTLS, then AUTH PLAIN
  // or LOGIN (RFC 4954, offered only inside TLS) checked against passwords,
  // then MAIL from the authenticated user or the domain's postmaster only.
  // Elsewhere AUTH stays 502 (not offered). passwords must outlive this.
  void serve_submission(const std::vector<password_entry>* passwords) { passwords_ = passwords; }
  // The next line is a SASL response (334 went out), not a command: the
  // session keeps it out of the transcript.
  bool awaiting_auth_response() const { return auth_state_ != auth_state::none; }
  std::size_t auth_failures() const { return auth_failures_; }  // on this connection

 private:
  enum class phase { fresh, greeted, mail, rcpt };
  struct verb_row;
  static const verb_row verbs_[];

  step reply(int code, std::string_view text);  // counts errors, may close
  step do_helo(std::string_view arg, bool esmtp);
  step do_mail(std::string_view arg);
  step do_rcpt(std::string_view arg);
  step do_data(std::string_view arg);
  step do_rset(std::string_view arg);
  step do_noop(std::string_view arg);
  step do_vrfy(std::string_view arg);
  step do_help(std::string_view arg);
  step do_quit(std::string_view arg);
  step do_starttls(std::string_view arg);
  step do_not_implemented(std::string_view arg);
  step do_auth(std::string_view arg);
  step on_auth_response(std::string_view line);
  step finish_auth(std::string_view authzid, std::string_view login, std::string_view password);
  void reset_transaction();

  const domain_config& config_;
  phase phase_ = phase::fresh;
  envelope env_;
  std::size_t errors_ = 0;
  bool tls_offered_ = false;
  int mail_refusal_code_ = 0;
  std::string mail_refusal_;
  const std::vector<password_entry>* passwords_ = nullptr;  // non-null: the submission listener
  enum class auth_state { none, plain, login_user, login_password };
  auth_state auth_state_ = auth_state::none;
  std::string auth_login_;  // AUTH LOGIN: the user name, while the password is asked for
  std::size_t auth_failures_ = 0;
  bool closed_ = false;  // a closing reply went out: later calls answer nothing and stay closed
};

struct mail_parameters {
  std::optional<std::uint64_t> size;
  bool eight_bit = false;
};

// The Maildir folder that receives mail for a local address, or the reply
// that refuses it (code and text). Shared by RCPT and by bounces.
struct mailbox_lookup {
  std::string mailbox;  // empty when refused
  int code = 0;
  std::string text;
};
mailbox_lookup find_local_mailbox(const domain_config& config, const mailnet::mailbox& address);

}  // namespace mailnet::node
