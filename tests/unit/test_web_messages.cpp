#include <doctest/doctest.h>

#include <chrono>
#include <fstream>

#include "common/mail/mime_parse.hpp"
#include "launcher/web/messages.hpp"
#include "launcher/web/web_messages.hpp"
#include "temp_dir.hpp"

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

namespace {

namespace fs = std::filesystem;

nlohmann::json listing(message_store& store, const std::string& domain = "", const std::string& user = "") {
  message_query q;
  q.domain = domain;
  q.user = user;
  const auto r = store.list(q);
  REQUIRE(r.status == 200);
  const auto doc = nlohmann::json::parse(r.body);
  // Written byte for byte as the JSON library writes the document.
  CHECK(doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n" == r.body);
  return doc;
}

void put(const fs::path& file, const std::string& subject) {
  std::ofstream(file, std::ios::binary) << "From: a@client.example\r\nTo: luke@jaku.com\r\nSubject: " << subject
                                        << "\r\n\r\nbody\r\n";
}

}  // namespace

TEST_CASE("the message index follows the Maildirs: new, replaced, linked and removed files, each read once") {
  mailnet::test::temp_dir run("web_index");
  const auto luke = run.path / "jaku.com" / "mail" / "luke", leia = run.path / "jaku.com" / "mail" / "leia";
  for (const auto& u : {luke, leia})
    for (const char* sub : {"new", "cur", "tmp"}) fs::create_directories(u / sub);
  put(luke / "new" / "100.M1P1Q1.x", "first");
  message_store store(run.path);
  store.refresh();  // what the web server does as it starts
  CHECK(store.indexed() == 1);

  // A file linked in right after a listing (the folder's mtime may not have
  // moved on this clock's tick) is listed at the next one.
  put(luke / "new" / "101.M1P1Q2.x", "second");
  auto doc = listing(store);
  REQUIRE(doc["total"] == 2);
  CHECK(doc["messages"][0]["subject"] == "second");
  CHECK(doc["messages"][1]["subject"] == "first");

  // A file is read once: bytes written over it in place (never done to a
  // Maildir file) are not read again; a new file under its name is.
  put(luke / "new" / "100.M1P1Q1.x", "written over");
  CHECK(listing(store)["messages"][1]["subject"] == "first");
  put(luke / "tmp" / "t", "replaced");
  fs::rename(luke / "tmp" / "t", luke / "new" / "100.M1P1Q1.x");
  CHECK(listing(store)["messages"][1]["subject"] == "replaced");

  // One message linked into two users' Maildirs: listed for each.
  fs::create_hard_link(luke / "new" / "101.M1P1Q2.x", leia / "cur" / "101.M1P1Q2.x:2,S");
  doc = listing(store);
  REQUIRE(doc["total"] == 3);
  CHECK(doc["messages"][0]["user"] == "leia");
  CHECK(doc["messages"][0]["subject"] == "second");
  // Unread is each link's own: leia's is seen (cur/, S), luke's is in new/.
  CHECK(doc["messages"][0]["unread"] == false);
  CHECK(doc["messages"][1]["user"] == "luke");
  CHECK(doc["messages"][1]["unread"] == true);
  CHECK(listing(store, "JAKU.com", "LEIA")["total"] == 1);

  // Removed behind its back: gone from the list.
  fs::remove(luke / "new" / "101.M1P1Q2.x");
  doc = listing(store);
  REQUIRE(doc["total"] == 2);
  CHECK(doc["messages"][0]["user"] == "leia");
  CHECK(store.indexed() == 2);

  // A folder unchanged (its mtime as it was, more than a second old when
  // last read) is not read again: only a change of it makes a new listing
  // read it. Here a file is put in and the mtime set back by hand.
  const auto old = fs::file_time_type::clock::now() - std::chrono::seconds(10);
  fs::last_write_time(luke / "new", old);
  CHECK(listing(store)["total"] == 2);  // read once more, now settled
  put(luke / "new" / "102.M1P1Q3.x", "hidden");
  fs::last_write_time(luke / "new", old);
  CHECK(listing(store)["total"] == 2);
  put(luke / "new" / "103.M1P1Q4.x", "third");  // moves the mtime: both are found
  doc = listing(store);
  CHECK(doc["total"] == 4);
  CHECK(doc["messages"][0]["subject"] == "third");

  // Listed as the JSON library writes it (listing() checks): an attachment,
  // quotes, a tab, bytes that are not UTF-8.
  std::ofstream(leia / "new" / "104.M1P1Q5.x", std::ios::binary)
      << "From: \"Leia \\\"O\\\"\" <leia@jaku.com>\r\nSubject: tab\there \xff\xfe end\r\nMIME-Version: 1.0\r\n"
         "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
         "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a b.bin\"\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--b--\r\n";
  doc = listing(store);
  REQUIRE(doc["total"] == 5);
  CHECK(doc["messages"][0]["attachments"] == nlohmann::json::array({"a b.bin"}));

  // A domain removed: nothing of it is left.
  fs::remove_all(run.path / "jaku.com");
  CHECK(listing(store)["total"] == 0);
  CHECK(store.indexed() == 0);
}

TEST_CASE("the Junk folder (<user>/.Junk, the DMARC quarantine) is listed with folder Junk, and filtered by folder") {
  mailnet::test::temp_dir run("web_junk");
  const auto luke = run.path / "jaku.com" / "mail" / "luke";
  for (const auto& m : {luke, luke / ".Junk"})
    for (const char* sub : {"new", "cur", "tmp"}) fs::create_directories(m / sub);
  put(luke / "new" / "100.M1P1Q1.x", "genuine");
  put(luke / ".Junk" / "new" / "101.M1P1Q2.x", "forged");
  message_store store(run.path);
  auto doc = listing(store);
  REQUIRE(doc["total"] == 2);
  CHECK(doc["messages"][0]["subject"] == "forged");
  CHECK(doc["messages"][0]["folder"] == "Junk");
  CHECK(doc["messages"][0]["user"] == "luke");
  CHECK(doc["messages"][1]["folder"] == "INBOX");
  CHECK(listing(store, "jaku.com", "luke")["total"] == 2);

  message_query q;
  q.folder = "Junk";
  doc = nlohmann::json::parse(store.list(q).body);
  REQUIRE(doc["total"] == 1);
  CHECK(doc["messages"][0]["subject"] == "forged");
  q.folder = "INBOX";
  q.user = "luke";
  doc = nlohmann::json::parse(store.list(q).body);
  REQUIRE(doc["total"] == 1);
  CHECK(doc["messages"][0]["subject"] == "genuine");

  // One message's detail names its folder; the mailbox counts hold the Junk folder too.
  const auto detail = nlohmann::json::parse(store.detail("101.M1P1Q2.x").body);
  REQUIRE(detail["mailboxes"].size() == 1);
  CHECK(detail["mailboxes"][0]["user"] == "luke");
  CHECK(detail["mailboxes"][0]["folder"] == "Junk");
  const auto boxes = nlohmann::json::parse(store.mailboxes().body);
  const auto& user = boxes["domains"][0]["users"][0];
  CHECK(user["total"] == 2);

  // Removed from the Junk folder by its id, gone from the list.
  const auto removed = nlohmann::json::parse(store.remove("101.M1P1Q2.x", "", "luke").body);
  CHECK(removed["removed"][0]["user"] == "luke");
  CHECK(listing(store)["total"] == 1);
  CHECK_FALSE(fs::exists(luke / ".Junk" / "new" / "101.M1P1Q2.x"));
}
