// The web API's transcript reading: only a bounded tail of smtp.log, cut at
// a line boundary, never through a link; sessions newest first and bounded;
// one session's lines in order with their direction.
#include <doctest/doctest.h>

#include <string>
#include <system_error>

#include "common/mail/durable_file.hpp"
#include "launcher/web/transcript.hpp"
#include "temp_dir.hpp"

using namespace mailnet;

namespace {

std::string line(int second, const std::string& session, const std::string& text) {
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "2026-12-02T10:00:%02d.000Z", second);
  return std::string(stamp) + " " + session + " " + text + "\n";
}

}  // namespace

TEST_CASE("read_file_tail keeps whole lines of the last bytes and refuses a link") {
  test::temp_dir dir("tail");
  const auto file = dir.write("log", "first line\nsecond line\nthird\n");
  bool cut = true;
  CHECK(node::read_file_tail(file, 1000, cut) == "first line\nsecond line\nthird\n");
  CHECK_FALSE(cut);
  CHECK(node::read_file_tail(file, 15, cut) == "third\n");  // "line\nthird\n" less its cut line
  CHECK(cut);
  std::filesystem::create_symlink(file, dir.path / "link");
  CHECK_THROWS_AS(node::read_file_tail(dir.path / "link", 1000, cut), std::system_error);
}

TEST_CASE("transcript sessions: newest first, bounded, client, helo and peer node") {
  test::temp_dir dir("transcript");
  std::string log;
  log += line(1, "S1", "connect from 127.0.0.1");
  log += line(1, "S1", "S: 220 jaku.com ESMTP mailnet ready");
  log += line(2, "S2", "connect from 127.0.0.2");
  log += line(2, "S2", "C: EHLO Deathstar.com");
  log += line(3, "S1", "C: HELO client.example");
  log += line(4, "S2", "S: 250 ok");
  log += line(4, "S2", "C: STARTTLS");
  log += line(4, "S2", "TLS started: TLSv1.3 TLS_AES_256_GCM_SHA384; the session starts over");
  log += line(5, "S3", "C: ehlo other");
  log += "not a transcript line\n";
  log += line(6, "S4", "C: partial");
  dir.write("smtp.log", log.substr(0, log.size() - 1));  // S4's line is still being written
  const auto doc = launcher::web::transcript_sessions(dir.path, "jaku.com", {"jaku.com", "deathstar.com"});
  REQUIRE(doc["count"] == 3);
  CHECK(doc["sessions"][0]["session"] == "S3");
  CHECK(doc["sessions"][1]["session"] == "S2");
  CHECK(doc["sessions"][1]["client"] == "127.0.0.2");
  CHECK(doc["sessions"][1]["from_node"] == "deathstar.com");
  CHECK(doc["sessions"][1]["lines"] == 5);
  CHECK(doc["sessions"][1]["tls"] == "TLSv1.3 TLS_AES_256_GCM_SHA384");
  CHECK(doc["sessions"][2]["tls"].is_null());
  CHECK(doc["sessions"][2]["helo"] == "client.example");
  CHECK(doc["sessions"][2]["from_node"].is_null());
  CHECK(doc["sessions"][2]["first"] == "2026-12-02T10:00:01.000Z");
  CHECK(doc["sessions"][2]["last"] == "2026-12-02T10:00:03.000Z");

  launcher::web::transcript_limits two;
  two.sessions = 2;
  CHECK(launcher::web::transcript_sessions(dir.path, "jaku.com", {}, two)["count"] == 2);

  const auto one = launcher::web::transcript_session(dir.path, "jaku.com", "S2");
  REQUIRE(one["lines"].size() == 5);
  CHECK(one["lines"][4]["direction"] == "note");
  CHECK(one["lines"][4]["tls_switch"] == true);
  CHECK_FALSE(one["lines"][3].contains("tls_switch"));
  CHECK(one["lines"][0]["direction"] == "note");
  CHECK(one["lines"][1]["direction"] == "client");
  CHECK(one["lines"][1]["text"] == "EHLO Deathstar.com");
  CHECK(one["lines"][2]["direction"] == "server");
  CHECK_THROWS_AS(launcher::web::transcript_session(dir.path, "jaku.com", "S9"), launcher::web::session_not_found);
}
