// build_mime (the client side) read back with parse_mail (the node side):
// RFC 2047 subjects, RFC 2231 file names, content types, clear errors.
#include <doctest/doctest.h>

#include <cctype>
#include <filesystem>
#include <random>
#include <fstream>
#include <string>
#include <unistd.h>

#include "common/address.hpp"
#include "launcher/mail_client.hpp"
#include "common/mail/mime_parse.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using mailnet::launcher::build_mime;
using mailnet::launcher::guess_content_type;
using mailnet::launcher::mail_error;
using mailnet::launcher::outgoing_mail;
using mailnet::node::parse_mail;

namespace {

struct temp_folder : mailnet::test::temp_dir {
  temp_folder() : temp_dir("mime") {}
};

std::string headers_of(const std::string& message) { return message.substr(0, message.find("\r\n\r\n")); }

outgoing_mail simple_mail() {
  outgoing_mail m;
  m.from = "vader@deathstar.com";
  m.to = {"obiwan@jaku.com"};
  m.subject = "hello";
  m.body = "text\n";
  return m;
}

}  // namespace

TEST_CASE("a UTF-8 subject goes out as RFC 2047 encoded words and comes back whole") {
  auto m = simple_mail();
  m.subject = "Оби-Ван, ты — моя последняя надежда ✓";
  const auto raw = build_mime(m);
  const auto headers = headers_of(raw);
  std::string folded = headers;
  for (auto& c : folded) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  CHECK(folded.find("=?utf-8?") != std::string::npos);
  for (unsigned char c : headers) CHECK_MESSAGE(c < 0x80, "raw 8-bit byte in the headers");
  CHECK(parse_mail(raw).subject == m.subject);
}

TEST_CASE("the body is text/plain; charset=utf-8, CRLF everywhere, and survives leading dots") {
  auto m = simple_mail();
  m.body = "Héllo there.\n.\n..and a dot line\nlast line without newline";
  const auto raw = build_mime(m);
  CHECK(headers_of(raw).find("charset=utf-8") != std::string::npos);
  CHECK(headers_of(raw).find("text/plain") != std::string::npos);
  for (std::size_t i = 0; i < raw.size(); ++i)
    if (raw[i] == '\n') REQUIRE_MESSAGE((i > 0 && raw[i - 1] == '\r'), "bare LF at byte " << i);
  auto parsed = parse_mail(raw);
  CHECK(parsed.text.find("Héllo there.") != std::string::npos);
  CHECK(parsed.text.find("..and a dot line") != std::string::npos);
  CHECK(parsed.attachments.empty());
  CHECK(parsed.from == "vader@deathstar.com");
  CHECK(parsed.to == "obiwan@jaku.com");
}

TEST_CASE("attachments are base64 with a content type and their file name, RFC 2231 when needed") {
  temp_folder dir;
  const std::string jpeg = std::string("\xFF\xD8\xFF\xE0", 4) + std::string(300, '\0') + "\xFF\xD9";
  const auto photo = dir.write("photo.bin", jpeg);  // the type comes from the bytes, not the name
  const auto notes = dir.write("résumé naïve – plans.txt", "line one\nline two\n");
  auto m = simple_mail();
  m.attachments = {photo, notes};
  const auto raw = build_mime(m);
  CHECK(raw.find("filename*") != std::string::npos);  // RFC 2231 for the non-ASCII name
  CHECK(raw.find("Content-Transfer-Encoding: base64") != std::string::npos);
  auto parsed = parse_mail(raw);
  REQUIRE(parsed.errors.empty());
  REQUIRE(parsed.attachments.size() == 2);
  CHECK(parsed.attachments[0].file_name == "photo.bin");
  CHECK(parsed.attachments[0].content_type == "image/jpeg");
  CHECK(parsed.attachments[0].data == jpeg);
  CHECK(parsed.attachments[1].file_name == "résumé naïve – plans.txt");
  CHECK(parsed.attachments[1].content_type == "text/plain");
  CHECK(parsed.attachments[1].data == "line one\nline two\n");
  CHECK(parsed.text == "text\n");
}

TEST_CASE("a long ASCII file name round-trips through parameter continuations") {
  temp_folder dir;
  const std::string name = std::string(120, 'x') + ".txt";
  auto m = simple_mail();
  m.attachments = {dir.write(name, "x")};
  auto parsed = parse_mail(build_mime(m));
  REQUIRE(parsed.attachments.size() == 1);
  CHECK(parsed.attachments[0].file_name == name);
}

TEST_CASE("bcc stays out of the headers; cc is in them") {
  auto m = simple_mail();
  m.cc = {"tarkin@deathstar.com"};
  m.bcc = {"secret@jaku.com"};
  const auto raw = build_mime(m);
  CHECK(raw.find("secret@jaku.com") == std::string::npos);
  CHECK(parse_mail(raw).cc == "tarkin@deathstar.com");
}

TEST_CASE("addresses as people write them: display names, angle brackets, lists") {
  using mailnet::launcher::parse_named_address;
  using mailnet::launcher::split_address_list;
  auto a = parse_named_address("  Darth Vader <Vader@DeathStar.com> ");
  REQUIRE(a);
  CHECK(a->name == "Darth Vader");
  CHECK(a->address == "Vader@deathstar.com");
  a = parse_named_address("\"Kenobi, Obi-Wan\" <obiwan@jaku.com>");
  REQUIRE(a);
  CHECK(a->name == "Kenobi, Obi-Wan");
  CHECK(parse_named_address("<rey@jaku.com>")->name.empty());
  CHECK(parse_named_address("rey@jaku.com")->address == "rey@jaku.com");
  CHECK_FALSE(parse_named_address("Rey <rey@jaku.com"));
  CHECK_FALSE(parse_named_address("Rey <>"));
  CHECK_FALSE(parse_named_address("Re\ny <rey@jaku.com>"));
  CHECK(split_address_list("\"Kenobi, Obi-Wan\" <obiwan@jaku.com>, tarkin@deathstar.com,") ==
        std::vector<std::string>{"\"Kenobi, Obi-Wan\" <obiwan@jaku.com>", " tarkin@deathstar.com"});

  auto m = simple_mail();
  m.from = "Darth Vader <vader@deathstar.com>";
  m.to = {"\"Kenobi, Obi-Wan\" <obiwan@jaku.com>, Grand Moff Tarkin <tarkin@deathstar.com>"};
  m.subject = "names";
  const auto raw = build_mime(m);
  std::string headers = headers_of(raw);
  for (std::size_t fold; (fold = headers.find("\r\n\t")) != std::string::npos;) headers.replace(fold, 3, " ");
  for (std::size_t fold; (fold = headers.find("\r\n ")) != std::string::npos;) headers.erase(fold, 2);
  CHECK(headers.find("From: Darth Vader <vader@deathstar.com>") != std::string::npos);
  CHECK(headers.find("\"Kenobi, Obi-Wan\" <obiwan@jaku.com>") != std::string::npos);
  CHECK(headers.find("Grand Moff Tarkin <tarkin@deathstar.com>") != std::string::npos);
  m.to = {"obiwan@jaku.com, not an address"};
  CHECK_THROWS_WITH_AS(build_mime(m), doctest::Contains("--to: not a mail address: ' not an address'"), mail_error);
}

TEST_CASE("any text as an address: a clean answer or none, and lists split losslessly") {
  using mailnet::launcher::parse_named_address;
  using mailnet::launcher::split_address_list;
  std::mt19937 rng(11);
  const std::string pieces[] = {"\"", "<", ">", ",", "@", " ", "\r\n", "rey", "jaku.com", "Darth Vader", "\\", "\xD0\xB6"};
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    for (int i = static_cast<int>(rng() % 12); i > 0; --i)
      text += rng() % 4 == 0 ? std::string(1, static_cast<char>(rng() % 256)) : pieces[rng() % std::size(pieces)];
    CAPTURE(text);
    if (auto a = parse_named_address(text)) {
      REQUIRE(mailnet::parse_mailbox(a->address));
      REQUIRE(a->name.find_first_of("\r\n<>\"") == std::string::npos);
    }
    auto items = split_address_list(text);
    std::string joined;
    for (std::size_t i = 0; i < items.size(); ++i) joined += (i ? "," : "") + items[i];
    REQUIRE(text.substr(0, joined.size()) == joined);  // only a trailing empty item may be left out
  }
}

TEST_CASE("bad input gets a specific error") {
  auto m = simple_mail();
  m.attachments = {"/nonexistent/mailnet/file.jpg"};
  CHECK_THROWS_WITH_AS(build_mime(m), "attachment /nonexistent/mailnet/file.jpg: no such file", mail_error);
  m = simple_mail();
  m.attachments = {fs::temp_directory_path()};
  CHECK_THROWS_WITH_AS(build_mime(m), doctest::Contains("not a regular file"), mail_error);
  m = simple_mail();
  m.body = "\xC3\x28";
  CHECK_THROWS_WITH_AS(build_mime(m), "body: not valid UTF-8 text", mail_error);
  m = simple_mail();
  m.subject = "two\r\nBcc: injected@x.com";
  CHECK_THROWS_WITH_AS(build_mime(m), doctest::Contains("subject"), mail_error);
  m = simple_mail();
  m.to = {"not an address"};
  CHECK_THROWS_WITH_AS(build_mime(m), doctest::Contains("--to: not a mail address"), mail_error);
}

TEST_CASE("content types come from the bytes first, then the name") {
  CHECK(guess_content_type("GIF89a....", "x.dat") == "image/gif");
  CHECK(guess_content_type("\x89PNG\r\n\x1A\n....", "x") == "image/png");
  CHECK(guess_content_type("%PDF-1.4", "x") == "application/pdf");
  CHECK(guess_content_type("whatever", "Picture.JPG") == "image/jpeg");
  CHECK(guess_content_type("plain words\n", "notes") == "text/plain");
  CHECK(guess_content_type(std::string("\x01\x02\x00", 3), "blob") == "application/octet-stream");
}
