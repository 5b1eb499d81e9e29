#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/address.hpp"
#include "node/smtp_protocol.hpp"

using namespace mailnet;
using namespace mailnet::node;

namespace {

domain_config jaku() {
  domain_config d;
  d.name = "jaku.com";
  d.listen = {"127.0.0.1", 2525};
  d.users = {"rey", "Finn"};
  return d;
}

// The reply code of a step ("" → 0).
int code_of(const step& s) { return s.reply.size() >= 3 ? std::stoi(s.reply.substr(0, 3)) : 0; }

// Plays lines and returns the code of the last reply.
int play(smtp_protocol& p, const std::vector<std::string>& lines) {
  int code = 0;
  for (const auto& l : lines) code = code_of(p.on_line(l));
  return code;
}

}  // namespace

TEST_CASE("a whole conversation") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  CHECK(p.greeting() == "220 jaku.com ESMTP mailnet ready\r\n");
  auto ehlo = p.on_line("EHLO client.example");
  CHECK(ehlo.reply ==
        "250-jaku.com greets client.example\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n");
  CHECK(p.on_line("MAIL FROM:<vader@deathstar.com> SIZE=100 BODY=8BITMIME").reply == "250 2.1.0 Ok\r\n");
  CHECK(p.on_line("RCPT TO:<rey@jaku.com>").reply == "250 2.1.5 Ok\r\n");
  CHECK(p.on_line("rcpt to:<FINN@Jaku.Com>").reply == "250 2.1.5 Ok\r\n");
  auto data = p.on_line("DATA");
  CHECK(code_of(data) == 354);
  CHECK(data.next == next_step::read_data);
  REQUIRE(p.transaction().rcpts.size() == 2);
  CHECK(p.transaction().rcpts[1].mailbox == "finn");
  CHECK(p.transaction().rcpts[1].address == "FINN@jaku.com");
  CHECK(p.transaction().mail_from == "vader@deathstar.com");
  CHECK(p.on_data_end({}).next == next_step::commit);
  CHECK(p.on_commit(true, "ABC").reply == "250 2.0.0 Ok: queued as ABC\r\n");
  // A second message on the same connection.
  CHECK(play(p, {"MAIL FROM:<>", "RCPT TO:<rey@jaku.com>", "DATA"}) == 354);
  CHECK(p.transaction().mail_from.empty());
  CHECK(code_of(p.on_commit(false, "disk full")) == 451);
  CHECK(p.on_line("QUIT").next == next_step::close);
}

TEST_CASE("every verb, case-insensitive, with enhanced status codes") {
  auto cfg = jaku();
  // The table has more than the default 20 bad commands: without this the 20th
  // closes the session (tested on its own) and the rest would get no reply.
  cfg.limits.errors = 100;
  smtp_protocol p(cfg, "127.0.0.1");
  struct row {
    const char* line;
    const char* reply_prefix;
  };
  const std::vector<row> table = {
      {"NOOP", "250 2.0.0"},
      {"noop", "250 2.0.0"},
      {"HELP", "214-2.0.0"},
      {"VRFY rey", "252 2.5.0"},
      {"VRFY", "501 5.5.4"},
      {"EXPN list", "502 5.5.1"},
      {"STARTTLS", "502 5.5.1"},
      {"FOO", "500 5.5.1"},
      {"", "500 5.5.1"},
      {"MAIL FROM:<a@jaku.com>", "503 5.5.1"},  // before HELO
      {"RCPT TO:<rey@jaku.com>", "503 5.5.1"},
      {"DATA", "503 5.5.1"},
      {"HELO", "501 5.5.4"},
      {"HELO bad..name", "501 5.5.4"},
      {"helo client.example", "250 jaku.com"},
      {"RCPT TO:<rey@jaku.com>", "503 5.5.1"},  // before MAIL
      {"MAIL TO:<a@jaku.com>", "501 5.5.4"},
      {"MAIL FROM:rey@jaku.com", "501 5.1.7"},
      {"MAIL FROM:<rey@jaku.com> FOO=1", "555 5.5.4"},
      {"MAIL FROM:<rey@jaku.com> BODY=BINARYMIME", "501 5.5.4"},
      {"MAIL FROM:<rey@jaku.com> SIZE=99999999999999999999999", "501 5.5.4"},
      {"MAIL FROM:<rey@jaku.com> SIZE=-1", "501 5.5.4"},
      {"MAIL FROM:<rey@jaku.com> SIZE=10485761", "552 5.3.4"},
      {"MAIL FROM:<rey@[127.0.0.1]>", "553 5.1.7"},
      {"MAIL FROM:<rey@jaku.com>", "250 2.1.0"},
      {"MAIL FROM:<rey@jaku.com>", "503 5.5.1"},  // nested MAIL
      {"DATA", "503 5.5.1"},                     // no RCPT yet
      {"RCPT TO:<>", "501 5.1.3"},
      {"RCPT TO:<nobody@jaku.com>", "550 5.1.1"},
      {"RCPT TO:<rey@jaku.com> NOTIFY=NEVER", "555 5.5.4"},
      {"RCPT TO:<../etc@jaku.com>", "501 5.1.3"},
      {"RCPT TO:<\"rey\"@jaku.com>", "553 5.1.3"},
      {"RCPT TO:<nobody>", "550 5.1.1"},  // qualified with jaku.com, and not a user here
      {"RCPT TO:<rey>", "250 2.1.5"},         // a bare local part means this domain
      {"DATA extra", "501 5.5.4"},
      {"RSET", "250 2.0.0"},
      {"RCPT TO:<rey@jaku.com>", "503 5.5.1"},  // RSET ended the transaction
      {"QUIT", "221 2.0.0"},
  };
  for (const auto& t : table) {
    CAPTURE(t.line);
    auto s = p.on_line(t.line);
    CHECK(s.reply.substr(0, std::string(t.reply_prefix).size()) == t.reply_prefix);
  }
}

TEST_CASE("control bytes in commands and addresses get 501, never truncation") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  play(p, {"EHLO c.example", "MAIL FROM:<rey@jaku.com>"});
  CHECK(p.on_line(std::string("RCPT TO:<rey@jaku.com\0evil>", 27)).reply.substr(0, 9) == "501 5.5.2");
  CHECK(p.on_line("RCPT TO:<rey@jaku.com\r>").reply.substr(0, 9) == "501 5.5.2");
  CHECK(p.on_line("RCPT TO:<rey\n@jaku.com>").reply.substr(0, 9) == "501 5.5.2");
  CHECK(p.on_line(std::string("NOOP\0", 5)).reply.substr(0, 9) == "501 5.5.2");
  CHECK(p.transaction().rcpts.empty());
}

TEST_CASE("relay only for our own senders; address tricks change nothing") {
  auto cfg = jaku();
  smtp_protocol outsider(cfg, "127.0.0.1");
  play(outsider, {"EHLO c.example", "MAIL FROM:<vader@deathstar.com>"});
  for (const char* rcpt : {"RCPT TO:<tarkin@deathstar.com>", "RCPT TO:<tarkin%deathstar.com@jaku.com>",
                           "RCPT TO:<deathstar.com!tarkin@jaku.com>", "RCPT TO:<@jaku.com:tarkin@deathstar.com>",
                           "RCPT TO:<\"tarkin@deathstar.com\"@jaku.com>"}) {
    CAPTURE(rcpt);
    auto s = outsider.on_line(rcpt);
    CHECK(s.reply.substr(0, 9) == "554 5.7.1");
    CHECK(s.reply.find("Relay access denied") != std::string::npos);
    CHECK(outsider.transaction().rcpts.empty());
  }

  smtp_protocol insider(cfg, "127.0.0.1");
  play(insider, {"EHLO c.example", "MAIL FROM:<rey@jaku.com>"});
  // postmaster is always taken (RFC 5321 §4.5.1), with or without the domain.
  for (const char* rcpt : {"RCPT TO:<postmaster@jaku.com>", "RCPT TO:<PostMaster>"}) {
    CAPTURE(rcpt);
    CHECK(code_of(outsider.on_line(rcpt)) == 250);
    CHECK(outsider.transaction().rcpts.back().mailbox == "postmaster");
  }
  // For our own senders such a local part is simply no mailbox here.
  CHECK(code_of(insider.on_line("RCPT TO:<tarkin%deathstar.com@jaku.com>")) == 550);
  CHECK(code_of(insider.on_line("RCPT TO:<vader@deathstar.com>")) == 250);
  REQUIRE(insider.transaction().rcpts.size() == 1);
  CHECK_FALSE(insider.transaction().rcpts[0].is_local());
  CHECK(insider.transaction().rcpts[0].domain == "deathstar.com");
  // A source route is ignored: the final mailbox decides.
  CHECK(code_of(insider.on_line("RCPT TO:<@relay.example:rey@jaku.com>")) == 250);
  CHECK(insider.transaction().rcpts[1].mailbox == "rey");
}

TEST_CASE("recipient limit keeps the earlier ones") {
  auto cfg = jaku();
  cfg.limits.recipients = 2;
  smtp_protocol p(cfg, "127.0.0.1");
  CHECK(play(p, {"EHLO c.example", "MAIL FROM:<rey@jaku.com>", "RCPT TO:<rey@jaku.com>", "RCPT TO:<finn@jaku.com>"}) ==
        250);
  CHECK(p.on_line("RCPT TO:<rey@jaku.com>").reply.substr(0, 9) == "452 4.5.3");
  CHECK(p.transaction().rcpts.size() == 2);
  // A long list is no protocol error: many 452s never reach the error limit.
  cfg.limits.errors = 3;
  for (int i = 0; i < 10; ++i) CHECK(p.on_line("RCPT TO:<rey@jaku.com>").next == next_step::read_command);
  CHECK(code_of(p.on_line("DATA")) == 354);
}

TEST_CASE("too many errors end the session with 421") {
  auto cfg = jaku();
  cfg.limits.errors = 3;
  smtp_protocol p(cfg, "127.0.0.1");
  CHECK(p.on_line("BAD").next == next_step::read_command);
  CHECK(p.on_line_too_long().reply.substr(0, 9) == "500 5.5.2");
  auto last = p.on_line("WORSE");
  CHECK(last.next == next_step::close);
  CHECK(last.reply.find("421 4.7.0") != std::string::npos);
}

TEST_CASE("data outcomes: size, long lines, loops") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  auto start = [&] { play(p, {"EHLO c.example", "MAIL FROM:<rey@jaku.com>", "RCPT TO:<rey@jaku.com>", "DATA"}); };
  start();
  CHECK(p.on_data_end({true, false, 0}).reply.substr(0, 9) == "552 5.3.4");
  CHECK(p.transaction().rcpts.empty());  // nothing stored, transaction over
  start();
  CHECK(p.on_data_end({false, true, 0}).reply.substr(0, 9) == "500 5.5.2");
  start();
  CHECK(p.on_data_end({false, false, 51}).reply.substr(0, 9) == "554 5.4.6");
  start();
  CHECK(p.on_data_end({false, false, 50}).next == next_step::commit);
  CHECK(p.early_data().next == next_step::close);
}

TEST_CASE("policies from classic teaching servers") {
  SUBCASE("mailbox_by_local_part: every recipient is local, by local part") {
    auto cfg = jaku();
    cfg.users = {"johndoe"};
    cfg.policy.mailbox_by_local_part = true;
    smtp_protocol p(cfg, "127.0.0.1");
    play(p, {"EHLO c.example", "MAIL FROM:<x@anywhere.example>"});
    for (const char* rcpt : {"RCPT TO:<johndoe>", "RCPT TO:<JohnDoe@example>", "RCPT TO:<johndoe@example.example>"}) {
      CAPTURE(rcpt);
      CHECK(code_of(p.on_line(rcpt)) == 250);
      CHECK(p.transaction().rcpts.back().mailbox == "johndoe");
    }
    CHECK(code_of(p.on_line("RCPT TO:<jane@example.example>")) == 550);
  }
  SUBCASE("require_known_users off: safe local parts become mailboxes") {
    auto cfg = jaku();
    cfg.policy.require_known_users = false;
    smtp_protocol p(cfg, "127.0.0.1");
    play(p, {"EHLO c.example", "MAIL FROM:<x@jaku.com>"});
    CHECK(code_of(p.on_line("RCPT TO:<New.User@jaku.com>")) == 250);
    CHECK(p.transaction().rcpts.back().mailbox == "new.user");
    CHECK(code_of(p.on_line("RCPT TO:<a/b@jaku.com>")) == 553);
    CHECK(code_of(p.on_line("RCPT TO:<a%b@jaku.com>")) == 553);
  }
  SUBCASE("require_helo_domain_match") {
    auto cfg = jaku();
    cfg.policy.require_helo_domain_match = true;
    smtp_protocol p(cfg, "127.0.0.1");
    play(p, {"HELO jaku.com"});
    auto s = p.on_line("MAIL FROM:<rey@deathstar.com>");
    CHECK(s.reply.substr(0, 9) == "550 5.7.1");
    CHECK(s.reply.find("does not match") != std::string::npos);
    CHECK(code_of(p.on_line("MAIL FROM:<rey@JAKU.com>")) == 250);
    // The root's trailing dot names the same domain; '_' in a host name is taken.
    play(p, {"RSET", "EHLO Jaku.Com."});
    CHECK(code_of(p.on_line("MAIL FROM:<rey@jaku.com>")) == 250);
    CHECK(code_of(p.on_line("EHLO build_host.jaku.com")) == 250);
    CHECK(code_of(p.on_line("EHLO bad..name")) == 501);
  }
}

TEST_CASE("address parsing") {
  auto ok = parse_path("<rey@Jaku.COM> SIZE=1");
  CHECK(ok.error == address_error::none);
  CHECK(ok.box.local == "rey");
  CHECK(ok.box.domain == "jaku.com");
  CHECK(ok.rest == " SIZE=1");
  CHECK(parse_path("<>").null_path);
  CHECK(parse_path("<\"a b\"@x.com>").box.quoted);
  CHECK(parse_path("<\"a b\"@x.com>").box.to_string() == "\"a b\"@x.com");
  CHECK(parse_path("<\"a>b\"@x.com>").box.local == "a>b");
  CHECK(parse_path("rey@x.com").error == address_error::missing_brackets);
  CHECK(parse_path("<rey@x.com").error == address_error::missing_brackets);
  CHECK(parse_path("<rey@@x.com>").error == address_error::bad_syntax);
  CHECK(parse_path("<.rey@x.com>").error == address_error::bad_syntax);
  CHECK(parse_path("<r..ey@x.com>").error == address_error::bad_syntax);
  CHECK(parse_path("<rey@x..com>").error == address_error::bad_syntax);
  CHECK(parse_path("<rey@-x.com>").error == address_error::bad_syntax);
  CHECK(parse_path("<rey@x_y.com>").error == address_error::bad_syntax);
  CHECK(parse_path("<" + std::string(65, 'a') + "@x.com>").error == address_error::too_long);
  CHECK(parse_path("<a@" + std::string(250, 'b') + ".com>").error == address_error::too_long);
  CHECK(parse_path(std::string("<a\0b@x.com>", 11)).error == address_error::control_bytes);
  CHECK(parse_path("<a@[127.0.0.1]>").error == address_error::address_literal);
  CHECK(parse_mailbox("vader@deathstar.com")->domain == "deathstar.com");
  CHECK_FALSE(parse_mailbox("vader"));
}

TEST_CASE("non-ASCII addresses without SMTPUTF8 get 553 5.6.7 and change nothing") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  auto ehlo = p.on_line("EHLO client.example");
  CHECK(ehlo.reply.find("SMTPUTF8") == std::string::npos);  // not offered, so never assumed
  const std::vector<std::string> senders = {"MAIL FROM:<\"\xff\xfe\"@deathstar.com>", "MAIL FROM:<v\xc3\xa9@jaku.com>",
                                            "MAIL FROM:<rey@j\xc3\xa4ku.com>", "MAIL FROM:<\x80@jaku.com> BODY=8BITMIME",
                                            "MAIL FROM:<rey@jaku.com> SMTPUTF8"};
  for (const auto& line : senders) {
    auto s = p.on_line(line);
    CHECK_MESSAGE(s.reply.substr(0, 10) == (line.ends_with("SMTPUTF8") ? "555 5.5.4 " : "553 5.6.7 "), line);
  }
  CHECK(p.on_line("MAIL FROM:<rey@jaku.com>").reply == "250 2.1.0 Ok\r\n");
  for (std::string line : {"RCPT TO:<\"\xff\xfe\"@c.test>", "RCPT TO:<fi\xc3\xb1n@jaku.com>", "RCPT TO:<finn@jak\xfe.com>",
                           "RCPT TO:<\xe2\x80\xae@jaku.com>"}) {
    auto s = p.on_line(line);
    CHECK_MESSAGE(s.reply.substr(0, 10) == "553 5.6.7 ", line);
    CHECK(s.reply.find("SMTPUTF8") != std::string::npos);
  }
  CHECK(p.transaction().rcpts.empty());
  CHECK(p.on_line("RCPT TO:<finn@jaku.com>").reply == "250 2.1.5 Ok\r\n");
}

TEST_CASE("a closed session stays closed: later calls answer nothing") {
  auto config = jaku();
  smtp_protocol p(config, "127.0.0.1");
  REQUIRE(p.on_line("QUIT").next == next_step::close);
  for (const step& s : {p.on_line("NOOP"), p.on_line("EHLO again.example"), p.on_line_too_long(),
                        p.on_data_end({}), p.on_commit(true, "QUEUEID")}) {
    CHECK(s.reply.empty());
    CHECK(s.next == next_step::close);
  }
}

TEST_CASE("STARTTLS: offered in EHLO, 220, then the session starts over; twice is 503") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  p.offer_tls(true);
  CHECK(code_of(p.on_line("STARTTLS")) == 503);  // before EHLO
  auto ehlo = p.on_line("EHLO client.example");
  CHECK(ehlo.reply.find("250-STARTTLS\r\n") != std::string::npos);
  CHECK(p.on_line("STARTTLS now").reply.rfind("501 5.5.4", 0) == 0);
  CHECK(code_of(p.on_line("MAIL FROM:<a@jaku.com>")) == 250);
  CHECK(code_of(p.on_line("STARTTLS")) == 503);  // inside a transaction
  CHECK(code_of(p.on_line("RSET")) == 250);
  auto s = p.on_line("starttls");
  CHECK(s.reply == "220 2.0.0 Ready to start TLS\r\n");
  CHECK(s.next == next_step::start_tls);
  p.on_tls_started("TLSv1.3 TLS_AES_256_GCM_SHA384");
  CHECK(p.tls_active());
  CHECK(p.transaction().helo.empty());
  CHECK(code_of(p.on_line("MAIL FROM:<a@jaku.com>")) == 503);  // EHLO again first (RFC 3207 §4.2)
  ehlo = p.on_line("EHLO client.example");
  CHECK(ehlo.reply.find("STARTTLS") == std::string::npos);
  CHECK(p.on_line("STARTTLS").reply == "503 5.5.1 TLS already active\r\n");
  CHECK(p.transaction().tls == "TLSv1.3 TLS_AES_256_GCM_SHA384");
}

TEST_CASE("STARTTLS: policy.tls required refuses MAIL in plain text with 530 5.7.0; not offered: 502") {
  auto cfg = jaku();
  cfg.policy.tls = tls_policy::required;
  smtp_protocol p(cfg, "127.0.0.1");
  p.offer_tls(true);
  p.on_line("EHLO client.example");
  CHECK(p.on_line("MAIL FROM:<a@jaku.com>").reply == "530 5.7.0 Must issue a STARTTLS command first\r\n");
  CHECK(p.on_line("STARTTLS").next == next_step::start_tls);
  p.on_tls_started("TLSv1.3 TLS_AES_128_GCM_SHA256");
  p.on_line("EHLO client.example");
  CHECK(code_of(p.on_line("MAIL FROM:<a@jaku.com>")) == 250);

  auto plain = jaku();
  smtp_protocol q(plain, "127.0.0.1");  // no certificate, or policy.tls "off"
  CHECK(q.on_line("EHLO client.example").reply.find("STARTTLS") == std::string::npos);
  CHECK(q.on_line("STARTTLS").reply.rfind("502 5.5.1", 0) == 0);
}

namespace {

// base64 of "\0user\0password" and the like, for AUTH lines.
std::string b64(const std::string& data) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < data.size(); i += 3) {
    unsigned v = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) v |= static_cast<unsigned char>(data[i + 1]) << 8;
    if (i + 2 < data.size()) v |= static_cast<unsigned char>(data[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < data.size() ? alphabet[(v >> 6) & 63] : '=';
    out += i + 2 < data.size() ? alphabet[v & 63] : '=';
  }
  return out;
}

const std::vector<password_entry> jaku_passwords{{"rey", "jaku.com", "r3y pass"}, {"Finn", "jaku.com", "f1nn"},
                                                  {"vader", "deathstar.com", "dark"}};

// A submission session past STARTTLS and EHLO.
smtp_protocol submission_session(const domain_config& cfg) {
  smtp_protocol p(cfg, "127.0.0.1");
  p.offer_tls(true);
  p.serve_submission(&jaku_passwords);
  p.on_line("EHLO client.example");
  p.on_line("STARTTLS");
  p.on_tls_started("TLSv1.3 TLS_AES_256_GCM_SHA384");
  p.on_line("EHLO client.example");
  return p;
}

}  // namespace

TEST_CASE("AUTH on port 25: not offered, 502 as before, in TLS too") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  p.offer_tls(true);
  CHECK(p.on_line("EHLO client.example").reply.find("AUTH") == std::string::npos);
  CHECK(p.on_line("AUTH PLAIN " + b64(std::string("\0rey\0r3y pass", 13))).reply == "502 5.5.1 Command not implemented\r\n");
  p.on_line("STARTTLS");
  p.on_tls_started("TLSv1.3 x");
  CHECK(p.on_line("EHLO client.example").reply.find("AUTH") == std::string::npos);
  CHECK(code_of(p.on_line("AUTH LOGIN")) == 502);
  CHECK(code_of(p.on_line("MAIL FROM:<vader@deathstar.com>")) == 250);  // no AUTH needed there
}

TEST_CASE("submission: AUTH only inside TLS (538), MAIL only after AUTH (530)") {
  auto cfg = jaku();
  smtp_protocol p(cfg, "127.0.0.1");
  p.offer_tls(true);
  p.serve_submission(&jaku_passwords);
  auto ehlo = p.on_line("EHLO client.example");
  CHECK(ehlo.reply.find("STARTTLS") != std::string::npos);
  CHECK(ehlo.reply.find("AUTH") == std::string::npos);
  CHECK(p.on_line("AUTH PLAIN " + b64(std::string("\0rey\0r3y pass", 13))).reply ==
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
  CHECK(p.on_line("MAIL FROM:<rey@jaku.com>").reply == "530 5.7.0 Must issue a STARTTLS command first\r\n");
  p.on_line("STARTTLS");
  p.on_tls_started("TLSv1.3 x");
  CHECK(code_of(p.on_line("AUTH PLAIN")) == 503);  // EHLO first, after TLS
  CHECK(p.on_line("EHLO client.example").reply.find("250-AUTH PLAIN LOGIN\r\n") != std::string::npos);
  CHECK(p.on_line("MAIL FROM:<rey@jaku.com>").reply == "530 5.7.0 Authentication required\r\n");
}

TEST_CASE("submission: AUTH PLAIN and LOGIN, right and wrong, in every form") {
  auto cfg = jaku();
  {
    auto p = submission_session(cfg);
    auto s = p.on_line("AUTH PLAIN " + b64(std::string("\0rey@jaku.com\0r3y pass", 22)));
    CHECK(s.reply == "235 2.7.0 Authentication successful\r\n");
    CHECK(s.auth == step::auth_result::succeeded);
    CHECK(p.transaction().auth_user == "rey@jaku.com");
    CHECK(code_of(p.on_line("AUTH PLAIN")) == 503);  // once
  }
  {
    auto p = submission_session(cfg);
    CHECK(p.on_line("auth plain").reply == "334 \r\n");  // the response on its own line
    CHECK(p.awaiting_auth_response());
    auto s = p.on_line(b64(std::string("finn\0finn\0f1nn", 14)));  // authzid = authcid; case of the user ignored
    CHECK(code_of(s) == 235);
    CHECK(p.transaction().auth_user == "Finn@jaku.com");
  }
  {
    auto p = submission_session(cfg);
    CHECK(p.on_line("AUTH LOGIN").reply == "334 VXNlcm5hbWU6\r\n");
    CHECK(p.on_line(b64("rey")).reply == "334 UGFzc3dvcmQ6\r\n");
    CHECK(code_of(p.on_line(b64("r3y pass"))) == 235);
  }
  {
    auto p = submission_session(cfg);
    CHECK(p.on_line("AUTH LOGIN " + b64("rey@jaku.com")).reply == "334 UGFzc3dvcmQ6\r\n");
    auto s = p.on_line(b64("r3y pas"));
    CHECK(s.reply == "535 5.7.8 Authentication credentials invalid\r\n");
    CHECK(s.auth == step::auth_result::failed);
    CHECK(s.login == "rey@jaku.com");
    CHECK(p.auth_failures() == 1);
    CHECK(p.transaction().auth_user.empty());
  }
  auto fails = [&](const std::string& plain_response) {
    auto p = submission_session(cfg);
    return code_of(p.on_line("AUTH PLAIN " + plain_response));
  };
  CHECK(fails(b64(std::string("\0vader@deathstar.com\0dark", 25))) == 535);  // another domain's user
  CHECK(fails(b64(std::string("finn\0rey\0r3y pass", 17))) == 535);          // acting as another
  CHECK(fails(b64(std::string("\0nobody\0x", 9))) == 535);
  CHECK(fails(b64(std::string("\0rey\0", 5))) == 535);
  CHECK(fails("%%%") == 501);                                          // not base64
  CHECK(fails(b64("no nul at all")) == 501);
  CHECK(fails(b64(std::string("\0rey\0r3y pass\0", 14))) == 501);     // a third NUL
  {
    auto p = submission_session(cfg);
    p.on_line("AUTH LOGIN");
    CHECK(p.on_line("*").reply == "501 5.0.0 Authentication cancelled\r\n");
    CHECK_FALSE(p.awaiting_auth_response());
    CHECK(code_of(p.on_line("AUTH CRAM-MD5")) == 504);
    CHECK(code_of(p.on_line("NOOP")) == 250);
  }
}

TEST_CASE("submission: the sender is the authenticated user or postmaster (553 5.7.1); relay is allowed") {
  auto cfg = jaku();
  auto p = submission_session(cfg);
  REQUIRE(code_of(p.on_line("AUTH PLAIN " + b64(std::string("\0rey\0r3y pass", 13)))) == 235);
  CHECK(p.on_line("MAIL FROM:<finn@jaku.com>").reply.rfind("553 5.7.1 Sender address <finn@jaku.com> is not owned by rey@jaku.com", 0) == 0);
  CHECK(code_of(p.on_line("MAIL FROM:<rey@deathstar.com>")) == 553);
  CHECK(code_of(p.on_line("MAIL FROM:<>")) == 553);
  CHECK(code_of(p.on_line("MAIL FROM:<\"rey\"@jaku.com>")) == 553);
  CHECK(code_of(p.on_line("MAIL FROM:<Postmaster@JAKU.com>")) == 250);
  CHECK(code_of(p.on_line("RSET")) == 250);
  CHECK(code_of(p.on_line("MAIL FROM:<REY@jaku.com>")) == 250);
  CHECK(code_of(p.on_line("RCPT TO:<vader@deathstar.com>")) == 250);  // relayed for the user
  CHECK(code_of(p.on_line("AUTH PLAIN")) == 503);                     // not inside a transaction
}
