#include <doctest/doctest.h>

#include <random>
#include <string>

#include "common/mail/spool.hpp"

using namespace mailnet::node;

namespace {

queued_message sample(const std::string& text) {
  queued_message m;
  m.id = "18C0FFEE0001";
  m.mail_from = "\"" + text + "\"@jaku.com";
  m.rcpts.push_back({"\"" + text + "\"@c.test", "c.test", {}, "pending", "451 4.3.0 " + text});
  m.rcpts.push_back({"x" + text + "@c.test", "c.test", "box" + text, "failed", text});
  m.created_ms = 1700000000000;
  m.attempts = 3;
  m.next_try_ms = 1700000001000;
  m.last_error = text;
  m.message = "Subject: " + text + "\r\n\r\nbody\r\n";
  return m;
}

}  // namespace

TEST_CASE("a queue file gives back every byte of every field") {
  SUBCASE("each byte value alone, and after a valid UTF-8 letter") {
    for (int b = 0; b < 256; ++b) {
      for (const std::string& text : {std::string(1, static_cast<char>(b)), "\xc3\xa9" + std::string(1, static_cast<char>(b))}) {
        auto m = sample(text);
        auto back = decode_queue_file(encode_queue_file(m));
        REQUIRE_MESSAGE(back.has_value(), "byte " << b);
        CHECK_MESSAGE(*back == m, "byte " << b);
      }
    }
  }
  SUBCASE("the address seen rewritten, overlong forms, surrogates and random bytes") {
    std::vector<std::string> texts = {"\xff\xfe", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
                                      "\xef\xbf\xbd", "{\"base64\":\"AA==\"}", std::string("\0\x01", 2)};
    std::mt19937 rng(16);
    for (int i = 0; i < 2000; ++i) {
      std::string t(rng() % 12, '\0');
      for (auto& c : t) c = static_cast<char>(rng() % 256);
      texts.push_back(t);
    }
    for (const auto& t : texts) {
      auto m = sample(t);
      auto back = decode_queue_file(encode_queue_file(m));
      REQUIRE(back.has_value());
      CHECK(*back == m);  // the whole value: operator== covers every field
    }
  }
}

TEST_CASE("queue files written before byte-exact fields still load") {
  const std::string head =
      R"({"id":"ID1","from":"rey@jaku.com","rcpts":[{"address":"vader@deathstar.com","domain":"deathstar.com",)"
      R"("mailbox":"","state":"pending","last_error":""}],"created_ms":5,"attempts":1,"next_try_ms":6,)"
      R"("last_error":"\u00e9 later","size":4})";
  auto m = decode_queue_file("MAILNET-QUEUE 1 " + std::to_string(head.size()) + "\n" + head + "body");
  REQUIRE(m.has_value());
  CHECK(m->mail_from == "rey@jaku.com");
  CHECK(m->rcpts.at(0).address == "vader@deathstar.com");
  CHECK(m->last_error == "\xc3\xa9 later");
  CHECK(m->message == "body");
}
