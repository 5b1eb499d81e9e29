// The client side of one SMTP transaction as pure code, the mirror of
// smtp_protocol: replies in, the next command and a verdict per recipient
// out. No sockets: relay.cpp's coroutine does the I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::node {

struct smtp_reply {
  int code = 0;                    // 0: no reply (connection trouble or timeout)
  std::string text;                // the last line, or what went wrong
  std::vector<std::string> lines;  // every line, for EHLO keywords
};

// What became of one recipient in this transaction.
enum class rcpt_verdict {
  unanswered,  // no reply to its RCPT (yet): try again later
  accepted,    // 2xx to RCPT, the data not (yet) taken
  refused,     // a 5xx: final, bounced with the peer's own reply
  deferred,    // a 4xx, or trouble after it was accepted: try again later
  delivered,   // the peer took the data for it
};

// What the relay asks of the peer's TLS (policy.tls_relay, or off when the
// network has no TLS).
enum class tls_want { off, opportunistic, verify };

class smtp_client_protocol {
 public:
  struct transaction {
    std::string helo;       // our name, for EHLO/HELO
    std::string domain;     // the destination, named in the texts of connection trouble
    std::string mail_from;  // empty: <>
    std::uint64_t size = 0;  // for SIZE=, when the peer offers it
    std::vector<std::string> rcpts;
    tls_want tls = tls_want::off;
  };
  // A connection kept from an earlier transaction skips the greeting and EHLO.
  struct session_facts {
    bool greeted = false;
    bool pipelining = false;
    bool size = false;
    bool tls = false;  // the connection is inside TLS
  };
  enum class action {
    send,          // write text (may be empty), then read one reply
    send_message,  // write the message, dot-stuffed, and ".", then read one reply
    finish,        // write text (QUIT or nothing) and stop
    start_tls,     // do the TLS handshake (verified as transaction::tls says), then call on_tls()
  };
  struct step {
    action what = action::finish;
    std::string text;
  };

  smtp_client_protocol(transaction t, session_facts facts);

  step start();
  step on_reply(const smtp_reply& r);
  // The handshake's outcome after action::start_tls; error says why it failed.
  step on_tls(bool ok, const std::string& error);

  const std::vector<rcpt_verdict>& verdicts() const { return verdicts_; }
  // The reply (or the trouble) behind each verdict; empty for delivered.
  const std::vector<std::string>& errors() const { return errors_; }
  const session_facts& facts() const { return facts_; }
  // The transaction ended with a reply to its data other than 421: the
  // connection is ready for the next MAIL.
  bool reusable() const { return reusable_; }
  // A kept connection turned out dead before MAIL was answered: nothing was
  // decided, and a fresh connection should be tried at once.
  bool lost_at_start() const { return lost_at_start_; }
  // The STARTTLS handshake failed (the connection is unusable); why.
  bool tls_failed() const { return !tls_error_.empty(); }
  const std::string& tls_error() const { return tls_error_; }
  // The reply to the data (or the trouble instead of it), for the log.
  const std::string& outcome() const { return outcome_; }

 private:
  enum class phase { greeting, ehlo, helo, starttls, mail, rcpt, data, message, dot_only, done };

  step on_greeting_or_ehlo(const smtp_reply& r);
  step on_starttls(const smtp_reply& r);
  // Under tls_want::verify, a peer that cannot prove it is the domain gets
  // no mail: every recipient waits with a 4.7.5.
  step refuse_unproven(const std::string& why, const smtp_reply& r);
  step start_transaction();
  step on_mail(const smtp_reply& r);
  step on_rcpt(const smtp_reply& r);
  step on_data(const smtp_reply& r);
  step on_message(const smtp_reply& r);
  step quit(const smtp_reply& r);  // ends politely unless the peer is gone
  // Every recipient with no verdict yet, or (also_accepted) accepted, gets this.
  void settle_rest(const smtp_reply& r, bool also_accepted);
  bool any_accepted() const;

  transaction t_;
  session_facts facts_;
  phase phase_ = phase::greeting;
  std::size_t next_rcpt_ = 0;  // the RCPT whose reply comes next
  std::vector<rcpt_verdict> verdicts_;
  std::vector<std::string> errors_;
  bool kept_ = false;  // started on a connection kept from an earlier transaction
  bool reusable_ = false;
  bool lost_at_start_ = false;
  std::string outcome_;
  std::string tls_error_;
};

// Whether an EHLO reply lists keyword (RFC 5321 §4.1.1.1), case-insensitively.
bool ehlo_offers(const smtp_reply& ehlo, std::string_view keyword);

}  // namespace mailnet::node
