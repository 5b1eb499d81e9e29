#include <doctest/doctest.h>

#include "common/mail/mime_parse.hpp"
#include "launcher/web/messages.hpp"
#include "launcher/web/web_messages.hpp"

using namespace mailnet::launcher::web;

TEST_CASE("a message's id is its Maildir name without the flags") {
  CHECK(message_id_of("1795318974.M004475P812Q3.mailnet") == "1795318974.M004475P812Q3.mailnet");
  CHECK(message_id_of("1795318974.M004475P812Q3.mailnet:2,S") == "1795318974.M004475P812Q3.mailnet");
}

TEST_CASE("an attachment's name in Content-Disposition cannot break out of its quotes") {
  CHECK(safe_file_name("plans.pdf", 0) == "plans.pdf");
  CHECK(safe_file_name("a\"b\r\nSet-Cookie: x;.txt", 1) == "a_b__Set-Cookie__x_.txt");
  CHECK(safe_file_name("../../etc/passwd", 2) == "_.._etc_passwd");
  CHECK(safe_file_name("..", 3) == "attachment-3");
  CHECK(safe_file_name("", 4) == "attachment-4");
  CHECK(safe_file_name(std::string(300, 'x'), 5).size() == 100);
}

TEST_CASE("an attachment's content type is type/subtype of token characters, or octet-stream") {
  CHECK(safe_content_type("Image/PNG") == "image/png");
  CHECK(safe_content_type("text/html") == "text/html");
  CHECK(safe_content_type("text/plain; charset=utf-8") == "application/octet-stream");
  CHECK(safe_content_type("text/plain\r\nX-Evil: 1") == "application/octet-stream");
  CHECK(safe_content_type("noslash") == "application/octet-stream");
  CHECK(safe_content_type("/x") == "application/octet-stream");
  CHECK(safe_content_type("") == "application/octet-stream");
}

TEST_CASE("percent-decoding of the path and query") {
  CHECK(percent_decode("a%3Ab+c", true) == "a:b c");
  CHECK(percent_decode("a%3ab+c", false) == "a:b+c");
  CHECK_FALSE(percent_decode("%zz", true));
  CHECK_FALSE(percent_decode("%4", true));
  CHECK_FALSE(percent_decode("a%00b", true));
}

TEST_CASE("parse_mail keeps the first text/html body apart from the text") {
  const auto m = mailnet::node::parse_mail(
      "From: a@b.c\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=X\r\n\r\n"
      "--X\r\nContent-Type: text/plain\r\n\r\nplain\r\n--X\r\nContent-Type: text/html\r\n\r\n<p>rich</p>\r\n--X--\r\n");
  CHECK(m.text == "plain");
  CHECK(m.html == "<p>rich</p>");
  CHECK(m.attachments.empty());
}

#include "launcher/web/trace.hpp"

TEST_CASE("a node.log line read back as an event, escapes undone") {
  log_event e;
  REQUIRE(parse_log_event(R"(2026-11-22T03:01:02.345Z id=Q1 event=deferred attempts=2 error="451 4.4.1 \"x\" \\ a\x0ab")", e));
  CHECK(e.time == "2026-11-22T03:01:02.345Z");
  CHECK(e.value("id") == "Q1");
  CHECK(e.value("event") == "deferred");
  CHECK(e.value("error") == "451 4.4.1 \"x\" \\ a\nb");
  CHECK(e.fields.size() == 4);
  CHECK_FALSE(parse_log_event("2026-11-22T03:01:02.345Z id=S1 S: 250 ok", e));
  CHECK_FALSE(parse_log_event("not a line", e));
  CHECK_FALSE(parse_log_event(R"(2026-11-22T03:01:02.345Z id=Q1 event=x error="no end)", e));
}

TEST_CASE("the queue ids of the mailnet nodes a message went through, from its Received fields") {
  const std::string crlf =
      "Received: from jaku.com ([127.0.0.1])\r\n\tby deathstar.com (mailnet) with ESMTP id QB2\r\n\tfor <v@d>; date\r\n"
      "Received: from x ([127.0.0.1])\r\n\tby Jaku.com (mailnet) with SMTP id QA1\r\n\tdate\r\n"
      "Subject: s\r\n\r\nbody\r\n\tby evil.com (mailnet) with ESMTP id QX\r\n";
  using ids = std::vector<std::pair<std::string, std::string>>;
  CHECK(received_queue_ids(crlf) == ids{{"deathstar.com", "QB2"}, {"jaku.com", "QA1"}});
  std::string lf = crlf;
  std::erase(lf, '\r');
  CHECK(received_queue_ids(lf) == ids{{"deathstar.com", "QB2"}, {"jaku.com", "QA1"}});
  CHECK(received_queue_ids("Subject: none\n\nbody\n").empty());
}

TEST_CASE("unread in Maildir terms: in new/, or in cur/ without the S flag") {
  CHECK(is_unread("/r/a.com/mail/u/new/1795318974.M1P2Q3.mailnet"));
  CHECK(is_unread("/r/a.com/mail/u/cur/1795318974.M1P2Q3.mailnet:2,"));
  CHECK(is_unread("/r/a.com/mail/u/cur/1795318974.M1P2Q3.mailnet:2,FR"));
  CHECK(is_unread("/r/a.com/mail/u/cur/1795318974.M1P2Q3.mailnet"));
  CHECK_FALSE(is_unread("/r/a.com/mail/u/cur/1795318974.M1P2Q3.mailnet:2,S"));
  CHECK_FALSE(is_unread("/r/a.com/mail/u/cur/1795318974.M1P2Q3.mailnet:2,FRS"));
}

TEST_CASE("a bounce: From MAILER-DAEMON, or a top-level multipart/report") {
  using json = nlohmann::json;
  const json plain = json::array({json::array({"Content-Type", "text/plain"})});
  CHECK(is_bounce("Mail Delivery System <MAILER-DAEMON@jaku.com>", plain));
  CHECK(is_bounce("mailer-daemon@jaku.com", json::array()));
  CHECK(is_bounce("postmaster@jaku.com",
                  json::array({json::array({"content-type", "Multipart/Report; report-type=delivery-status"})})));
  CHECK_FALSE(is_bounce("rey@jaku.com", plain));
  CHECK_FALSE(is_bounce("rey@jaku.com", json::array({json::array({"Subject", "multipart/report"})})));
}

TEST_CASE("a mail's HTML page may run nothing and fetch nothing") {
  const std::string policy = mail_html_policy;
  CHECK(policy.starts_with("sandbox; "));
  CHECK(policy.find("default-src 'none'") != std::string::npos);
  CHECK(policy.find("img-src data:") != std::string::npos);
  CHECK(policy.find("frame-ancestors 'self'") != std::string::npos);
  CHECK(policy.find("script") == std::string::npos);
  CHECK(policy.find("allow-") == std::string::npos);
}
