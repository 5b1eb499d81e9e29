#include "node/smtp_client_protocol.hpp"

#include <algorithm>
#include <cctype>

namespace mailnet::node {

namespace {

bool positive(const smtp_reply& r) { return r.code / 100 == 2; }

}  // namespace

bool ehlo_offers(const smtp_reply& ehlo, std::string_view keyword) {
  for (const auto& line : ehlo.lines) {
    if (line.size() < 4 + keyword.size()) continue;
    auto word = std::string_view(line).substr(4, keyword.size());
    if (std::equal(word.begin(), word.end(), keyword.begin(),
                   [](char a, char b) { return std::toupper(static_cast<unsigned char>(a)) == b; }) &&
        (line.size() == 4 + keyword.size() || line[4 + keyword.size()] == ' '))
      return true;
  }
  return false;
}

smtp_client_protocol::smtp_client_protocol(transaction t, session_facts facts)
    : t_(std::move(t)), facts_(facts), verdicts_(t_.rcpts.size(), rcpt_verdict::unanswered),
      errors_(t_.rcpts.size()), kept_(facts.greeted) {}

smtp_client_protocol::step smtp_client_protocol::start() {
  if (facts_.greeted) return start_transaction();
  phase_ = phase::greeting;
  return {action::send, ""};  // nothing to say before the 220
}

smtp_client_protocol::step smtp_client_protocol::on_reply(const smtp_reply& r) {
  switch (phase_) {
    case phase::greeting:
    case phase::ehlo:
    case phase::helo: return on_greeting_or_ehlo(r);
    case phase::starttls: return on_starttls(r);
    case phase::mail: return on_mail(r);
    case phase::rcpt: return on_rcpt(r);
    case phase::data: return on_data(r);
    case phase::message: return on_message(r);
    case phase::dot_only: return quit(r);
    case phase::done: break;
  }
  return {action::finish, ""};
}

smtp_client_protocol::step smtp_client_protocol::on_greeting_or_ehlo(const smtp_reply& r) {
  if (phase_ == phase::greeting) {
    if (r.code != 220) return settle_rest(r, false), quit(r);
    phase_ = phase::ehlo;
    return {action::send, "EHLO " + t_.helo + "\r\n"};
  }
  if (phase_ == phase::ehlo && r.code >= 500) {  // an old server: say HELO instead
    phase_ = phase::helo;
    return {action::send, "HELO " + t_.helo + "\r\n"};
  }
  if (r.code != 250) return settle_rest(r, false), quit(r);
  facts_ = {true, ehlo_offers(r, "PIPELINING"), ehlo_offers(r, "SIZE"), facts_.tls};
  if (!facts_.tls && t_.tls != tls_want::off) {
    if (phase_ == phase::ehlo && ehlo_offers(r, "STARTTLS")) {
      phase_ = phase::starttls;
      return {action::send, "STARTTLS\r\n"};
    }
    if (t_.tls == tls_want::verify) return refuse_unproven(t_.domain + " does not offer STARTTLS", r);
  }
  return start_transaction();
}

smtp_client_protocol::step smtp_client_protocol::on_starttls(const smtp_reply& r) {
  if (r.code == 220) return {action::start_tls, ""};
  if (r.code == 0 || r.code == 421) return settle_rest(r, false), quit(r);
  if (t_.tls == tls_want::verify) return refuse_unproven(t_.domain + " refused STARTTLS: " + r.text, r);
  return start_transaction();  // opportunistic: in plain text, as before
}

smtp_client_protocol::step smtp_client_protocol::on_tls(bool ok, const std::string& error) {
  if (!ok) {
    tls_error_ = error.empty() ? "TLS handshake failed" : error;
    // The connection is in no state for a QUIT. Every recipient waits: under
    // "opportunistic" the relay tries again at once in plain text.
    refuse_unproven("TLS with " + t_.domain + " failed: " + error, smtp_reply{0, "", {}});
    return {action::finish, ""};
  }
  facts_.tls = true;
  phase_ = phase::ehlo;  // RFC 3207 §4.2: what the server said before TLS counts no more
  return {action::send, "EHLO " + t_.helo + "\r\n"};
}

smtp_client_protocol::step smtp_client_protocol::refuse_unproven(const std::string& why, const smtp_reply& r) {
  outcome_ = "4.7.5 " + why;
  for (std::size_t i = 0; i < verdicts_.size(); ++i) {
    if (verdicts_[i] != rcpt_verdict::unanswered) continue;
    verdicts_[i] = rcpt_verdict::deferred;
    errors_[i] = outcome_;
  }
  return quit(r);
}

smtp_client_protocol::step smtp_client_protocol::start_transaction() {
  phase_ = phase::mail;
  std::string text = "MAIL FROM:<" + t_.mail_from + ">";
  if (facts_.size) text += " SIZE=" + std::to_string(t_.size);
  text += "\r\n";
  // RFC 2920: with PIPELINING, MAIL, every RCPT and DATA go in one write.
  if (facts_.pipelining) {
    for (const auto& rcpt : t_.rcpts) text += "RCPT TO:<" + rcpt + ">\r\n";
    text += "DATA\r\n";
  }
  return {action::send, std::move(text)};
}

smtp_client_protocol::step smtp_client_protocol::on_mail(const smtp_reply& r) {
  // A kept connection may meet the peer's idle timeout (421) or its end just
  // as MAIL goes out: that is the connection's failure, not the mail's.
  if (kept_ && (r.code == 0 || r.code == 421)) {
    lost_at_start_ = true;
    phase_ = phase::done;
    return {action::finish, ""};
  }
  if (r.code != 250 || t_.rcpts.empty()) return settle_rest(r, false), quit(r);
  phase_ = phase::rcpt;
  if (facts_.pipelining) return {action::send, ""};
  return {action::send, "RCPT TO:<" + t_.rcpts[0] + ">\r\n"};
}

smtp_client_protocol::step smtp_client_protocol::on_rcpt(const smtp_reply& r) {
  const std::size_t i = next_rcpt_++;
  // A reply decides for its own recipient only; one that ends the
  // conversation (none, or 421: the peer closes) leaves the rest for later.
  if (r.code == 0 || r.code == 421) return settle_rest(r, true), quit(r);
  if (positive(r)) {
    verdicts_[i] = rcpt_verdict::accepted;
  } else {
    verdicts_[i] = r.code >= 500 ? rcpt_verdict::refused : rcpt_verdict::deferred;
    errors_[i] = r.text;
  }
  if (next_rcpt_ < t_.rcpts.size()) {
    if (facts_.pipelining) return {action::send, ""};
    return {action::send, "RCPT TO:<" + t_.rcpts[next_rcpt_] + ">\r\n"};
  }
  phase_ = phase::data;
  if (facts_.pipelining) return {action::send, ""};  // DATA went with the rest
  if (!any_accepted()) return quit(r);
  return {action::send, "DATA\r\n"};
}

smtp_client_protocol::step smtp_client_protocol::on_data(const smtp_reply& r) {
  if (r.code == 354 && any_accepted()) {
    phase_ = phase::message;
    return {action::send_message, ""};
  }
  if (r.code == 354) {  // no recipient to send for: an empty message ends the data phase cleanly
    phase_ = phase::dot_only;
    return {action::send, ".\r\n"};
  }
  // A 5xx to DATA is the server's last word for the recipients it had
  // taken; anything else leaves them for the next attempt.
  outcome_ = r.code ? r.text : "4.4.2 DATA not answered";
  settle_rest(r.code ? r : smtp_reply{0, "DATA not answered", {}}, true);
  return quit(r);
}

smtp_client_protocol::step smtp_client_protocol::on_message(const smtp_reply& r) {
  phase_ = phase::done;
  outcome_ = r.code ? r.text : "connection lost while sending the message";
  if (positive(r)) {
    for (auto& v : verdicts_)
      if (v == rcpt_verdict::accepted) v = rcpt_verdict::delivered;
  } else {
    settle_rest(r.code ? r : smtp_reply{0, outcome_, {}}, true);
  }
  // A reply to the data ends the transaction either way: the connection is
  // ready for the next MAIL, except after a 421.
  reusable_ = r.code != 0 && r.code != 421;
  if (reusable_) return {action::finish, ""};
  return quit(r);
}

smtp_client_protocol::step smtp_client_protocol::quit(const smtp_reply& r) {
  phase_ = phase::done;
  if (r.code == 0 || r.code == 421) return {action::finish, ""};  // the peer is gone or going
  return {action::finish, "QUIT\r\n"};
}

void smtp_client_protocol::settle_rest(const smtp_reply& r, bool also_accepted) {
  for (std::size_t i = 0; i < verdicts_.size(); ++i) {
    auto& v = verdicts_[i];
    if (v != rcpt_verdict::unanswered && !(also_accepted && v == rcpt_verdict::accepted)) continue;
    v = r.code >= 500 ? rcpt_verdict::refused : rcpt_verdict::deferred;
    errors_[i] = r.code ? r.text : "4.4.2 " + t_.domain + ": " + r.text;
  }
}

bool smtp_client_protocol::any_accepted() const {
  return std::find(verdicts_.begin(), verdicts_.end(), rcpt_verdict::accepted) != verdicts_.end();
}

}  // namespace mailnet::node
