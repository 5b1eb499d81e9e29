#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/topology.hpp"
#include "node/smtp_client_protocol.hpp"
#include "node/trace_headers.hpp"

using namespace mailnet;
using namespace mailnet::node;
using action = smtp_client_protocol::action;

namespace {

smtp_reply reply(int code, std::string text) { return {code, std::to_string(code) + " " + text, {}}; }

smtp_client_protocol::transaction three_rcpts() {
  return {"jaku.com", "deathstar.com", "rey@jaku.com", 1234, {"a@deathstar.com", "b@deathstar.com", "c@deathstar.com"}};
}

// A pipelining peer already past EHLO: MAIL, the RCPTs and DATA go in one write.
smtp_client_protocol pipelined(const smtp_client_protocol::transaction& t) {
  return smtp_client_protocol(t, {true, true, true});
}

}  // namespace

TEST_CASE("client: a fresh connection greets, says EHLO, then pipelines the transaction") {
  smtp_client_protocol p(three_rcpts(), {});
  auto s = p.start();
  CHECK(s.what == action::send);
  CHECK(s.text.empty());  // the greeting comes first
  s = p.on_reply(reply(220, "hi"));
  CHECK(s.text == "EHLO jaku.com\r\n");
  s = p.on_reply({250, "250 SIZE 100", {"250-deathstar.com", "250-PIPELINING", "250 SIZE 100"}});
  CHECK(s.text ==
        "MAIL FROM:<rey@jaku.com> SIZE=1234\r\nRCPT TO:<a@deathstar.com>\r\nRCPT TO:<b@deathstar.com>\r\n"
        "RCPT TO:<c@deathstar.com>\r\nDATA\r\n");
}

TEST_CASE("client: each recipient keeps its own verdict") {
  auto p = pipelined(three_rcpts());
  p.start();
  CHECK(p.on_reply(reply(250, "ok")).what == action::send);
  p.on_reply(reply(250, "ok"));
  p.on_reply(reply(550, "5.1.1 no such user"));
  p.on_reply(reply(450, "4.2.1 busy"));
  CHECK(p.on_reply(reply(354, "go on")).what == action::send_message);
  auto s = p.on_reply(reply(250, "queued"));
  CHECK(s.what == action::finish);
  CHECK(p.reusable());
  CHECK(p.verdicts() == std::vector{rcpt_verdict::delivered, rcpt_verdict::refused, rcpt_verdict::deferred});
  CHECK(p.errors()[1] == "550 5.1.1 no such user");
  CHECK(p.errors()[2] == "450 4.2.1 busy");
}

TEST_CASE("client: a 421 in the middle keeps the replies already received") {
  auto p = pipelined(three_rcpts());
  p.start();
  p.on_reply(reply(250, "ok"));
  p.on_reply(reply(250, "ok"));
  p.on_reply(reply(550, "5.1.1 no such user"));
  auto s = p.on_reply(reply(421, "4.7.0 too many errors"));
  CHECK(s.what == action::finish);
  CHECK(s.text.empty());  // the peer is closing: no QUIT
  CHECK_FALSE(p.reusable());
  // The refusal stays; the accepted one and the cut-off one wait for a retry.
  CHECK(p.verdicts() == std::vector{rcpt_verdict::deferred, rcpt_verdict::refused, rcpt_verdict::deferred});
  CHECK(p.errors()[1] == "550 5.1.1 no such user");
  CHECK(p.errors()[2] == "421 4.7.0 too many errors");
}

TEST_CASE("client: a connection lost after some replies keeps them") {
  auto p = pipelined(three_rcpts());
  p.start();
  p.on_reply(reply(250, "ok"));
  p.on_reply(reply(550, "5.1.1 no such user"));
  p.on_reply({0, "connection lost", {}});
  CHECK(p.verdicts() == std::vector{rcpt_verdict::refused, rcpt_verdict::deferred, rcpt_verdict::deferred});
  CHECK(p.errors()[1] == "4.4.2 deathstar.com: connection lost");
}

TEST_CASE("client: without pipelining, one command per reply; no DATA when nobody was accepted") {
  auto t = three_rcpts();
  smtp_client_protocol p(t, {true, false, false});
  CHECK(p.start().text == "MAIL FROM:<rey@jaku.com>\r\n");  // no SIZE= unless offered
  CHECK(p.on_reply(reply(250, "ok")).text == "RCPT TO:<a@deathstar.com>\r\n");
  CHECK(p.on_reply(reply(550, "5.1.1 no")).text == "RCPT TO:<b@deathstar.com>\r\n");
  CHECK(p.on_reply(reply(550, "5.1.1 no")).text == "RCPT TO:<c@deathstar.com>\r\n");
  auto s = p.on_reply(reply(553, "5.1.3 no"));
  CHECK(s.what == action::finish);
  CHECK(s.text == "QUIT\r\n");
  CHECK(p.verdicts() == std::vector(3, rcpt_verdict::refused));
}

TEST_CASE("client: a kept connection that meets 421 at MAIL decides nothing") {
  auto p = pipelined(three_rcpts());
  p.start();
  p.on_reply(reply(421, "4.4.2 idle timeout"));
  CHECK(p.lost_at_start());
  CHECK(p.verdicts() == std::vector(3, rcpt_verdict::unanswered));
}

TEST_CASE("client: a refused MAIL or DATA decides for everyone it concerns") {
  auto p = pipelined(three_rcpts());
  p.start();
  CHECK(p.on_reply(reply(552, "5.3.4 too big")).text == "QUIT\r\n");
  CHECK(p.verdicts() == std::vector(3, rcpt_verdict::refused));

  auto q = pipelined(three_rcpts());
  q.start();
  q.on_reply(reply(250, "ok"));
  q.on_reply(reply(250, "ok"));
  q.on_reply(reply(550, "5.1.1 no"));
  q.on_reply(reply(250, "ok"));
  q.on_reply(reply(451, "4.3.0 try later"));
  CHECK(q.verdicts() == std::vector{rcpt_verdict::deferred, rcpt_verdict::refused, rcpt_verdict::deferred});
}

TEST_CASE("counted_size: CRLF line ends, without the trace lines of mailnet nodes") {
  const std::string body = "Subject: x\n\nhi\n";  // bare LFs count as CRLF
  CHECK(counted_size(body) == 18);
  trace_info info{"client.example", "127.0.0.1", "jaku.com", true, "Q1", "vader@deathstar.com", {}, {}};
  const std::string added = make_trace_headers(info, {}) + body;  // Received:, Message-ID:, Date:
  CHECK(added.size() > body.size() + 100);
  CHECK(counted_size(added) == 18);
  // Another MTA's Received: is counted, and so is what comes after it.
  CHECK(counted_size("Received: from x by y.example with ESMTP id 1\r\n" + added) > 100);
}

TEST_CASE("counted_size: the same at the second hop as at the first") {
  const std::string body = "From: <rey@jaku.com>\r\nSubject: x\r\n\r\nhi\r\n";
  trace_info first{"[127.0.0.1]", "127.0.0.1", "jaku.com", true, "Q1", "vader@deathstar.com", {}, {}};
  const std::string at_first = make_trace_headers(first, scan_headers(body)) + body;
  trace_info second{"jaku.com", "127.0.0.1", "deathstar.com", true, "Q2", "vader@deathstar.com", {}, {}};
  const std::string at_second = make_trace_headers(second, scan_headers(at_first)) + at_first;
  CHECK(counted_size(at_first) == body.size());
  CHECK(counted_size(at_second) == body.size());
}

TEST_CASE("Received: over TLS says ESMTPS, the version and the cipher, and is still a network trace line") {
  const std::string body = "Subject: x\r\n\r\nhi\r\n";
  trace_info info{"jaku.com", "127.0.0.1", "deathstar.com", true, "Q2", "vader@deathstar.com", {},
                  "TLSv1.3 TLS_AES_256_GCM_SHA384"};
  const std::string added = make_trace_headers(info, scan_headers(body));
  CHECK(added.find("Received: from jaku.com ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)"
                   "\r\n\tby deathstar.com (mailnet) with ESMTPS id Q2\r\n") == 0);
  CHECK(counted_size(added + body) == body.size());
}

TEST_CASE("scan_headers: the first Message-ID's value, trimmed, also when folded") {
  CHECK(scan_headers("Subject: x\r\nMessage-ID:  <a@b>  \r\nMessage-Id: <c@d>\r\n\r\n").message_id == "<a@b>");
  CHECK(scan_headers("message-id:\r\n\t<folded@b>\r\nSubject: x\r\n\r\n").message_id == "<folded@b>");
  CHECK(scan_headers("Message-ID: <lf@b>\nSubject: x\n\n").message_id == "<lf@b>");
  const auto none = scan_headers("Subject: x\r\n\r\nMessage-ID: <in-body@b>\r\n");
  CHECK_FALSE(none.has_message_id);
  CHECK(none.message_id.empty());
  CHECK(scan_headers("Message-ID: <" + std::string(2000, 'x') + ">\r\n\r\n").message_id.size() == 998);
}

namespace {

smtp_client_protocol::transaction with_tls(tls_want want) {
  auto t = three_rcpts();
  t.tls = want;
  return t;
}

const smtp_reply ehlo_with_starttls{250, "250 STARTTLS", {"250-deathstar.com", "250-PIPELINING", "250 STARTTLS"}};
const smtp_reply ehlo_without_starttls{250, "250 PIPELINING", {"250-deathstar.com", "250 PIPELINING"}};

}  // namespace

TEST_CASE("client TLS: STARTTLS when offered, the handshake, then EHLO again inside TLS") {
  smtp_client_protocol p(with_tls(tls_want::verify), {});
  p.start();
  p.on_reply(reply(220, "hi"));
  CHECK(p.on_reply(ehlo_with_starttls).text == "STARTTLS\r\n");
  CHECK(p.on_reply(reply(220, "2.0.0 go ahead")).what == action::start_tls);
  auto s = p.on_tls(true, "");
  CHECK(s.text == "EHLO jaku.com\r\n");
  CHECK(p.facts().tls);
  // Inside TLS the server's EHLO still lists STARTTLS (a confused one): no second STARTTLS.
  CHECK(p.on_reply(ehlo_with_starttls).text.rfind("MAIL FROM:<rey@jaku.com>", 0) == 0);
}

TEST_CASE("client TLS verify: a peer without STARTTLS, or whose certificate fails, gets no mail (4.7.5, retried)") {
  {
    smtp_client_protocol p(with_tls(tls_want::verify), {});
    p.start();
    p.on_reply(reply(220, "hi"));
    auto s = p.on_reply(ehlo_without_starttls);
    CHECK(s.what == action::finish);
    CHECK(s.text == "QUIT\r\n");
    CHECK(p.verdicts() == std::vector(3, rcpt_verdict::deferred));
    CHECK(p.errors()[0] == "4.7.5 deathstar.com does not offer STARTTLS");
    CHECK(p.outcome() == p.errors()[0]);
  }
  {
    smtp_client_protocol p(with_tls(tls_want::verify), {});
    p.start();
    p.on_reply(reply(220, "hi"));
    p.on_reply(ehlo_with_starttls);
    p.on_reply(reply(220, "go ahead"));
    auto s = p.on_tls(false, "certificate verification failed: self-signed certificate");
    CHECK(s.what == action::finish);
    CHECK(s.text.empty());
    CHECK(p.verdicts() == std::vector(3, rcpt_verdict::deferred));
    CHECK(p.errors()[2] ==
          "4.7.5 TLS with deathstar.com failed: certificate verification failed: self-signed certificate");
    CHECK(p.tls_failed());
    CHECK(p.tls_error() == "certificate verification failed: self-signed certificate");
  }
  {  // a refused STARTTLS: never a permanent failure
    smtp_client_protocol p(with_tls(tls_want::verify), {});
    p.start();
    p.on_reply(reply(220, "hi"));
    p.on_reply(ehlo_with_starttls);
    p.on_reply(reply(554, "5.7.0 no"));
    CHECK(p.verdicts() == std::vector(3, rcpt_verdict::deferred));
  }
}

TEST_CASE("client TLS opportunistic and off: plain text when STARTTLS is missing or refused") {
  smtp_client_protocol p(with_tls(tls_want::opportunistic), {});
  p.start();
  p.on_reply(reply(220, "hi"));
  CHECK(p.on_reply(ehlo_without_starttls).text.rfind("MAIL FROM:", 0) == 0);
  smtp_client_protocol q(with_tls(tls_want::opportunistic), {});
  q.start();
  q.on_reply(reply(220, "hi"));
  q.on_reply(ehlo_with_starttls);
  CHECK(q.on_reply(reply(454, "4.7.0 TLS not available")).text.rfind("MAIL FROM:", 0) == 0);
  CHECK_FALSE(q.tls_failed());  // a refusal is no failed handshake: the connection goes on in plain text
  // A handshake that fails leaves the connection unusable: nothing is sent on
  // it, the recipients wait, and tls_failed() tells the relay to come back in plain text.
  smtp_client_protocol f(with_tls(tls_want::opportunistic), {});
  f.start();
  f.on_reply(reply(220, "hi"));
  f.on_reply(ehlo_with_starttls);
  CHECK(f.on_reply(reply(220, "go ahead")).what == action::start_tls);
  auto s = f.on_tls(false, "TLS handshake failed: wrong version number");
  CHECK(s.what == action::finish);
  CHECK(s.text.empty());
  CHECK(f.tls_failed());
  CHECK(f.tls_error() == "TLS handshake failed: wrong version number");
  CHECK(f.verdicts() == std::vector(3, rcpt_verdict::deferred));
  smtp_client_protocol r(with_tls(tls_want::off), {});
  r.start();
  r.on_reply(reply(220, "hi"));
  CHECK(r.on_reply(ehlo_with_starttls).text.rfind("MAIL FROM:", 0) == 0);
}
