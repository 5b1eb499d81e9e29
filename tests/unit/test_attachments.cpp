// Attachment extraction on delivery: safe names, no overwrite, nested parts,
// and malformed MIME that fails softly.
#include <doctest/doctest.h>

#include <filesystem>
#include <random>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

#include "node/attachments.hpp"
#include "common/mail/mime_comments.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using mailnet::node::extract_attachments;
using mailnet::node::is_valid_base64;
using mailnet::node::mime_limits;
using mailnet::node::parse_mail;
using mailnet::node::sanitize_file_name;

namespace {

struct temp_root : mailnet::test::temp_dir {
  temp_root() : temp_dir("att") {}
};

using mailnet::test::read_file;

std::string part(const std::string& name, const std::string& base64, const std::string& type = "application/octet-stream") {
  return "Content-Type: " + type + "\r\nContent-Disposition: attachment; filename=\"" + name +
         "\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64 + "\r\n";
}

std::string multipart(const std::string& boundary, const std::vector<std::string>& parts, bool close = true,
                      const std::string& subtype = "mixed") {
  std::string m = "Content-Type: multipart/" + subtype + "; boundary=\"" + boundary + "\"\r\n\r\n";
  for (const auto& p : parts) m += "--" + boundary + "\r\n" + p;
  if (close) m += "--" + boundary + "--\r\n";
  return m;
}

std::string message(const std::string& body_entity) {
  return "From: a@jaku.com\r\nTo: b@deathstar.com\r\nSubject: test\r\nMIME-Version: 1.0\r\n" + body_entity;
}

const std::string text_part = "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n";

}  // namespace

TEST_CASE("file names are sanitised by an allow-list") {
  CHECK(sanitize_file_name("photo.jpg") == "photo.jpg");
  CHECK(sanitize_file_name("../../etc/passwd") == "etc_passwd");
  CHECK(sanitize_file_name("/abs/path.txt") == "abs_path.txt");
  CHECK(sanitize_file_name(".hidden") == "hidden");
  CHECK(sanitize_file_name("..") == "attachment");
  CHECK(sanitize_file_name("") == "attachment");
  CHECK(sanitize_file_name("-rf") == "rf");
  CHECK(sanitize_file_name("a b\tc\r\nd") == "a b_c_d");
  CHECK(sanitize_file_name("  my plans .txt  ") == "my plans .txt");
  CHECK(sanitize_file_name(std::string("nul\0byte", 8)) == "nul_byte");
  // Other scripts stay readable; what could hide or reorder text does not.
  CHECK(sanitize_file_name("résumé.pdf") == "résumé.pdf");
  CHECK(sanitize_file_name("плани.txt") == "плани.txt");
  CHECK(sanitize_file_name("日本.jpg") == "日本.jpg");
  CHECK(sanitize_file_name("\xF0\x9F\x9A\x80 launch.gif") == "\xF0\x9F\x9A\x80 launch.gif");  // an emoji
  CHECK(sanitize_file_name("invoice\xE2\x80\xAE" "fdp.exe") == "invoice_fdp.exe");                // U+202E
  CHECK(sanitize_file_name("a\xE2\x80\x8B" "b") == "a_b");                                           // U+200B
  CHECK(sanitize_file_name("\xC2\x85x") == "x");  // C1 NEL
  CHECK(sanitize_file_name("bad\xC3(utf8\xC0\xAF.txt") == "bad_utf8_.txt");  // malformed, overlong
  CHECK(sanitize_file_name(std::string(99, 'a') + " " + std::string(10, 'b')) == std::string(99, 'a'));  // cut at a space
  CHECK(sanitize_file_name("plans\xC2\xA0") == "plans_");      // no-break space: no name ends looking blank
  CHECK(sanitize_file_name("a\xE3\x80\x80" "b") == "a_b");       // ideographic space
  CHECK(sanitize_file_name("\xFF\xBB\x89x") == "x");   // 0xF5-0xFF lead no sequence (the random test found it)
  CHECK(sanitize_file_name("\xED\xA0\x80x") == "x");                                              // a surrogate
  const auto cyrillic = sanitize_file_name(std::string(300, 'a') + "\xD0\xB6\xD0\xB6\xD0\xB6" + std::string(200, 'b'));
  CHECK(cyrillic.size() <= mailnet::node::max_file_name);
  const auto wide = sanitize_file_name(std::string(99, 'a') + "\xD0\xB6\xD0\xB6");  // 103 bytes: cut between characters
  CHECK(wide == std::string(99, 'a'));
  const auto long_name = sanitize_file_name(std::string(500, 'a') + ".jpeg");
  CHECK(long_name.size() == mailnet::node::max_file_name);
  CHECK(long_name.ends_with(".jpeg"));
  for (const char* tricky : {"a/b", "a\\b", "..\\..\\x", "%2e%2e%2fx", "C:\\x"}) {
    auto s = sanitize_file_name(tricky);
    CHECK(s.find('/') == std::string::npos);
    CHECK(s.front() != '.');
  }
}

TEST_CASE("base64 validation") {
  CHECK(is_valid_base64("aGVsbG8=\r\n"));
  CHECK(is_valid_base64("aGVs\r\nbG8h"));
  CHECK(is_valid_base64(""));
  CHECK(mailnet::node::decode_base64("aGVsbG8") == "hello");    // padding left out
  CHECK(mailnet::node::decode_base64("aGVsbA") == "hell");
  CHECK(mailnet::node::decode_base64("aGVs\r\nbG8h") == "hello!");
  CHECK(mailnet::node::decode_base64("aGVsbA==") == "hell");
  CHECK_FALSE(is_valid_base64("aGVsb"));        // one symbol cannot make a byte
  CHECK_FALSE(is_valid_base64("aGVsbA="));      // padding that does not fill the group
  CHECK_FALSE(is_valid_base64("="));
  CHECK_FALSE(is_valid_base64("aGV*bG8h"));     // outside the alphabet
  CHECK_FALSE(is_valid_base64("aG==bG8h"));     // data after padding
  CHECK_FALSE(is_valid_base64("a==="));         // three padding symbols
}

namespace {

// Well-formed UTF-8, checked the plain way.
bool valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

std::string base64_of(const std::string& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += i + 1 < bytes.size() ? alphabet[v >> 6 & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[v & 63] : '=';
  }
  return out;
}

}  // namespace

TEST_CASE("any name at all: the sanitised one is safe, bounded, UTF-8, and stable") {
  std::mt19937 rng(20261201);
  const std::string pieces[] = {"/", "\\", "..", ".", "-", " ", "\0", "\r\n", "\xE2\x80\xAE", "\xD0\xB6", "\xF0\x9F\x9A\x80",
                                std::string(90, 'x'), "\xC2\xA0",
                                "\xC0\xAF", "\xED\xA0\x80", "\xEF\xBB\xBF", "a", "Z9", ".txt", "%2e"};
  for (int round = 0; round < 20000; ++round) {
    std::string name;
    const int parts = static_cast<int>(rng() % 40);
    for (int i = 0; i < parts; ++i) {
      if (rng() % 3 == 0) name += static_cast<char>(rng() % 256);
      else name += pieces[rng() % std::size(pieces)];
    }
    const auto s = sanitize_file_name(name);
    CAPTURE(name);
    REQUIRE_FALSE(s.empty());
    REQUIRE(s.size() <= mailnet::node::max_file_name);
    REQUIRE(s.find_first_of(std::string("/\\\0\r\n", 5)) == std::string::npos);
    REQUIRE(s.front() != '.');
    REQUIRE(s.front() != '-');
    REQUIRE(s.front() != ' ');
    REQUIRE(s.back() != ' ');
    REQUIRE(valid_utf8(s));
    REQUIRE(s.find("\xE2\x80\xAE") == std::string::npos);  // no direction override survives
    REQUIRE(sanitize_file_name(s) == s);
  }
}

TEST_CASE("base64 decodes what an encoder wrote, with or without padding, across line breaks") {
  std::mt19937 rng(7);
  for (int round = 0; round < 3000; ++round) {
    std::string bytes(rng() % 200, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng() % 256);
    std::string text = base64_of(bytes);
    if (rng() % 2) text.erase(text.find_last_not_of('=') + 1);  // as some clients send it
    for (std::size_t at = 76; at < text.size(); at += 78) text.insert(at, "\r\n");
    CAPTURE(round);
    auto decoded = mailnet::node::decode_base64(text);
    REQUIRE(decoded);
    REQUIRE(*decoded == bytes);
  }
}

TEST_CASE("attachments are saved decoded; two with one name do not overwrite each other") {
  temp_root root;
  auto msg = message(multipart("b1", {text_part, part("same.txt", "Zmlyc3Q="), part("same.txt", "c2Vjb25k"),
                                      part("../../escape.txt", "ZXZpbA==")}));
  auto r = extract_attachments(msg, root.path, "1700000000.M1P2Q3.mailnet");
  CHECK(r.error.empty());
  REQUIRE(r.saved.size() == 3);
  const auto dir = root.path / "1700000000.M1P2Q3.mailnet";
  CHECK(read_file(dir / "same.txt") == "first");
  CHECK(read_file(dir / "same-1.txt") == "second");
  CHECK(read_file(dir / "escape.txt") == "evil");
  CHECK(!fs::exists(root.path / "escape.txt"));
  // Nothing else in the folder (no temporary files left behind).
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 3);

  // The same message again into the same folder: new names, old files kept.
  auto again = extract_attachments(msg, root.path, "1700000000.M1P2Q3.mailnet");
  CHECK(again.saved.size() == 3);
  CHECK(read_file(dir / "same.txt") == "first");
  CHECK(fs::exists(dir / "same-3.txt"));
}

TEST_CASE("a message name that could leave the root is refused") {
  temp_root root;
  auto msg = message(multipart("b1", {part("a.txt", "YQ==")}));
  for (const char* bad : {"../x", "a/b", ".hidden", ""}) {
    auto r = extract_attachments(msg, root.path / "attachments", bad);
    CHECK(r.saved.empty());
    CHECK(r.error.find("message name not allowed") != std::string::npos);
  }
  CHECK(!fs::exists(root.path / "attachments"));
}

TEST_CASE("nested multiparts and forwarded messages are walked") {
  temp_root root;
  auto alternative = multipart("alt", {text_part, "Content-Type: text/html\r\n\r\n<p>hello</p>\r\n"}, true, "alternative");
  auto inner_message = message(multipart("in", {text_part, part("inner.gif", "R0lGODlh")}));
  auto forwarded = "Content-Type: message/rfc822\r\n\r\n" + inner_message;
  auto msg = message(multipart("out", {alternative, part("outer.bin", "AAEC"), forwarded}));
  auto parsed = parse_mail(msg);
  CHECK(parsed.text == "hello");  // the CRLF before a boundary belongs to the boundary
  auto r = extract_attachments(msg, root.path, "m1");
  CHECK(r.error.empty());
  REQUIRE(r.saved.size() == 2);
  CHECK(read_file(root.path / "m1" / "outer.bin") == std::string("\x00\x01\x02", 3));
  CHECK(read_file(root.path / "m1" / "inner.gif") == "GIF89a");
}

TEST_CASE("bad base64 in one attachment is reported; the others are saved") {
  temp_root root;
  auto msg = message(multipart("b1", {text_part, part("bad.bin", "not*base64!"), part("good.txt", "Z29vZA==")}));
  auto r = extract_attachments(msg, root.path, "m1");
  CHECK(r.error.find("'bad.bin': invalid base64") != std::string::npos);
  REQUIRE(r.saved.size() == 1);
  CHECK(read_file(root.path / "m1" / "good.txt") == "good");
  CHECK(!fs::exists(root.path / "m1" / "bad.bin"));
}

TEST_CASE("an unterminated boundary keeps the parts it holds and reports the cut") {
  temp_root root;
  auto msg = message(multipart("b1", {text_part, part("first.txt", "Zmlyc3Q="), part("cut.txt", "Y3V0")}, false));
  auto r = extract_attachments(msg, root.path, "m1");
  CHECK(r.error.find("truncated message") != std::string::npos);
  REQUIRE(r.saved.size() == 2);
  CHECK(read_file(root.path / "m1" / "first.txt") == "first");
  CHECK(read_file(root.path / "m1" / "cut.txt") == "cut");
  // Cut inside an attachment's base64: that one is reported, not saved.
  auto torn = message(multipart("b2", {text_part, part("whole.txt", "d2hvbGU="), part("torn.bin", "dG9y")}, false));
  torn.resize(torn.size() - 5);  // "G9y" and the CRLF gone: one symbol left
  r = extract_attachments(torn, root.path, "m2");
  CHECK(r.error.find("'torn.bin': invalid base64") != std::string::npos);
  REQUIRE(r.saved.size() == 1);
  CHECK(read_file(root.path / "m2" / "whole.txt") == "whole");
}

TEST_CASE("deep nesting is bounded, never a crash") {
  temp_root root;
  for (int depth : {40, 2000}) {
    std::string entity = part("deep.txt", "ZGVlcA==");
    for (int i = 0; i < depth; ++i) entity = multipart("n" + std::to_string(i), {entity});
    auto r = extract_attachments(message(entity), root.path, "m" + std::to_string(depth));
    CHECK(r.saved.empty());
    CHECK(r.error.find("nesting") != std::string::npos);
  }
  // Within the limit the same shape is fine.
  std::string entity = part("ok.txt", "b2s=");
  for (int i = 0; i < 5; ++i) entity = multipart("n" + std::to_string(i), {entity});
  CHECK(extract_attachments(message(entity), root.path, "shallow").saved.size() == 1);
}

TEST_CASE("the total of decoded bytes is bounded") {
  temp_root root;
  mime_limits limits;
  limits.max_total_bytes = 10;
  auto msg = message(multipart("b1", {part("a.txt", "YWFhYWFh"), part("b.txt", "YmJiYmJi")}));  // 6 bytes each
  auto r = extract_attachments(msg, root.path, "m1", limits);
  CHECK(r.saved.size() == 1);
  CHECK(r.error.find("exceed 10 bytes") != std::string::npos);
}

TEST_CASE("a message without MIME structure has no attachments and no error") {
  temp_root root;
  auto r = extract_attachments("From: a@b.c\r\nSubject: plain\r\n\r\njust text\r\n", root.path, "m1");
  CHECK(r.saved.empty());
  CHECK(r.error.empty());
  CHECK(!fs::exists(root.path / "m1"));
}

// RFC 2045 §5.1: comments may stand anywhere between the tokens of a
// Content-Type; the type means the same without them.
TEST_CASE("comments in a content type, its subtype or its parameters change nothing") {
  const std::string attachment = part("a.bin", "AAEC");
  const std::vector<std::string> types = {
      "multipart(x)/mixed; boundary=\"b1\"",
      "multipart/mixed (comment); boundary=\"b1\"",
      "(c) multipart/mixed; boundary=b1",
      "multipart/(c)mixed; boundary=b1",
      "multipart/mixed; boundary=b1 (c)",
      "multipart/mixed; boundary=b1(c)",
      "multipart/mixed; boundary=(c)b1",
      "multipart/mixed; (c) boundary=(c) \"b1\" (d)",
      "multipart/mixed;\r\n boundary=b1\r\n (a comment on a folded line)",
      "multipart(a(nested)b)/mixed; boundary=b1 (x(y)z)",
      "multipart/mixed; boundary=b1 (a \\) quoted pair)",
      "multipart/mixed; boundary=b1; charset=us-ascii (Plain text)",
  };
  for (std::size_t i = 0; i < types.size(); ++i) {
    CAPTURE(types[i]);
    temp_root root;
    auto msg = message("Content-Type: " + types[i] + "\r\n\r\n--b1\r\n" + text_part + "--b1\r\n" + attachment + "--b1--\r\n");
    auto r = extract_attachments(msg, root.path, "m1");
    CHECK(r.error.empty());
    REQUIRE(r.saved.size() == 1);
    CHECK(read_file(root.path / "m1" / "a.bin") == std::string("\x00\x01\x02", 3));
    CHECK(parse_mail(msg).text == "hello");
  }
}

// A comment never closed ends with its field: the next header line stays a
// header of its own (here the encoding, so the bytes come out decoded).
TEST_CASE("a comment never closed does not swallow the next header line") {
  temp_root root;
  const std::string unclosed_part =
      "Content-Type: application/octet-stream\r\n"
      "Content-Disposition: attachment; filename=u.bin (never closed\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n";
  auto msg = message("Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n" + text_part + "--b1\r\n" +
                     unclosed_part + "--b1--\r\n");
  auto r = extract_attachments(msg, root.path, "m1");
  CHECK(r.error.empty());
  REQUIRE(r.saved.size() == 1);
  CHECK(read_file(root.path / "m1" / "u.bin") == std::string("\x00\x01\x02", 3));
}

TEST_CASE("comments in a part's headers and in a nested multipart's boundary change nothing") {
  temp_root root;
  const std::string commented_part =
      "Content-Type: application/octet-stream (bytes); name=\"ignored.bin\"\r\n"
      "Content-Disposition: attachment (c); filename=report.pdf (the report)\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n";
  auto inner = "Content-Type: multipart/mixed; boundary=in (inner)\r\n\r\n--in\r\n" + part("inner.txt", "aW4=") + "--in--\r\n";
  auto msg = message("Content-Type: multipart/mixed; boundary=out (outer)\r\n\r\n--out\r\n" + commented_part + "--out\r\n" +
                     inner + "--out--\r\n");
  auto r = extract_attachments(msg, root.path, "m1");
  CHECK(r.error.empty());
  REQUIRE(r.saved.size() == 2);
  CHECK(read_file(root.path / "m1" / "report.pdf") == "%PDF");
  CHECK(read_file(root.path / "m1" / "inner.txt") == "in");
  // A parenthesis inside a quoted boundary is part of the boundary, not a comment.
  auto quoted = message("Content-Type: multipart/mixed; boundary=\"b(1)\"\r\n\r\n--b(1)\r\n" + part("q.txt", "cQ==") + "--b(1)--\r\n");
  auto q = extract_attachments(quoted, root.path, "m2");
  CHECK(q.error.empty());
  CHECK(q.saved.size() == 1);
}

TEST_CASE("a message that is a message/rfc822 gets the enclosed message's attachments") {
  auto enclosed = message(multipart("in", {text_part, part("inner.gif", "R0lGODlh")}));
  for (const std::string type : {"message/rfc822", "message(forwarded)/rfc822 (c)", "Message/RFC822"}) {
    CAPTURE(type);
    temp_root root;
    auto msg = message("Content-Type: " + type + "\r\n\r\n" + enclosed);
    auto r = extract_attachments(msg, root.path, "m1");
    CHECK(r.error.empty());
    REQUIRE(r.saved.size() == 1);
    CHECK(read_file(root.path / "m1" / "inner.gif") == "GIF89a");
  }
  // Enclosed twice, inside a multipart, with comments at every level.
  temp_root root;
  auto twice = "Content-Type: message/rfc822 (c)\r\n\r\n" +
               message("Content-Type: multipart(x)/mixed; boundary=b2 (c)\r\n\r\n--b2\r\n" + text_part + "--b2--\r\n");
  twice.replace(twice.find(text_part), text_part.size(), part("deep.txt", "ZGVlcA=="));
  auto msg = message(multipart("out", {text_part, twice}));
  auto r = extract_attachments(msg, root.path, "m2");
  CHECK(r.error.empty());
  REQUIRE(r.saved.size() == 1);
  CHECK(read_file(root.path / "m2" / "deep.txt") == "deep");
}

TEST_CASE("a message with parts but nothing to save says why") {
  temp_root root;
  auto alternative = message(multipart("alt", {text_part, "Content-Type: text/html\r\n\r\n<p>hello</p>\r\n"}, true, "alternative"));
  auto r = extract_attachments(alternative, root.path, "m1");
  CHECK(r.saved.empty());
  CHECK(r.error.empty());
  CHECK(r.reason.find("no part is named or marked as an attachment") != std::string::npos);
  CHECK(r.reason.find("text/plain, text/html") != std::string::npos);
  // An enclosed message of plain text.
  auto forwarded = message("Content-Type: message/rfc822\r\n\r\n" + message(text_part));
  r = extract_attachments(forwarded, root.path, "m2");
  CHECK(r.saved.empty());
  CHECK(r.reason.find("text/plain") != std::string::npos);
  // A multipart without a single part.
  auto empty = message("Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1--\r\n");
  r = extract_attachments(empty, root.path, "m3");
  CHECK(r.saved.empty());
  CHECK((!r.error.empty() || !r.reason.empty()));
}

TEST_CASE("the node parses for attachments whatever type may carry them") {
  using mailnet::node::may_carry_attachments;
  for (const std::string type : {"multipart/mixed; boundary=b1", "multipart(x)/mixed; boundary=b1", "(c) multipart/mixed",
                                 "Multipart/Related", "message/rfc822", "message(fwd)/rfc822", "\r\n multipart/mixed",
                                 "application/pdf; name=\"a.pdf\""}) {
    CAPTURE(type);
    CHECK(may_carry_attachments("From: a@b.c\r\nContent-Type: " + type + "\r\n\r\nbody\r\n"));
  }
  CHECK(may_carry_attachments("From: a@b.c\r\nContent-Disposition: attachment\r\n\r\nbody\r\n"));
  CHECK_FALSE(may_carry_attachments("From: a@b.c\r\nMessage-ID: <1@b.c>\r\nSubject: multipart\r\n\r\nContent-Type: multipart/mixed\r\n"));
  CHECK_FALSE(may_carry_attachments("From: a@b.c\r\nContent-Type: text/plain (message)\r\n\r\nbody\r\n"));
  CHECK_FALSE(may_carry_attachments("From: a@b.c\r\n\r\n"));
}
