// terminal_safe: every character a terminal would act on is shown escaped,
// and every printable character of any script is kept.
#include <doctest/doctest.h>

#include <string>

#include "common/terminal_text.hpp"

using namespace mailnet;

namespace {

// The UTF-8 form of one code point.
std::string utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// No byte a terminal interprets: C0 but tab and LF, DEL, raw C1 bytes, and
// no C1 or bidi character in UTF-8 either.
bool is_inert(const std::string& s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F) return false;
  for (char32_t cp : {0x80u, 0x9Bu, 0x9Du, 0x9Fu, 0x202Eu, 0x2066u, 0x200Fu})
    if (s.find(utf8(cp)) != std::string::npos) return false;
  return true;
}

}  // namespace

TEST_CASE("terminal_safe keeps printable ASCII, tab, and text of other scripts") {
  CHECK(terminal_safe("Hello, Finn! ~{}[]\\") == "Hello, Finn! ~{}[]\\");
  CHECK(terminal_safe("a\tb") == "a\tb");
  const std::string cjk = "死星の設計図 ✓ 🚀 Ωμέγα עברית العربية";
  CHECK(terminal_safe(cjk) == cjk);
  CHECK(terminal_safe("") == "");
}

TEST_CASE("terminal_safe escapes every C0 control but tab, and DEL") {
  for (int c = 0; c < 0x20; ++c) {
    if (c == '\t') continue;
    const std::string in = "x" + std::string(1, static_cast<char>(c)) + "y";
    const std::string out = terminal_safe(in);
    CAPTURE(c);
    CHECK(is_inert(out));
    CHECK(out.front() == 'x');
    CHECK(out.back() == 'y');
    CHECK(out.size() > 3);
  }
  CHECK(terminal_safe("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07");
  CHECK(terminal_safe("\x1b[2K") == "\\x1b[2K");
  CHECK(terminal_safe(std::string(1, '\0')) == "\\x00");
  CHECK(terminal_safe("\x7f") == "\\x7f");
  CHECK(terminal_safe("a\nb\rc") == "a\\nb\\rc");
}

TEST_CASE("terminal_safe escapes C1 controls, in UTF-8 and as raw bytes") {
  for (char32_t cp = 0x80; cp <= 0x9F; ++cp) {
    CAPTURE(static_cast<unsigned>(cp));
    const std::string out = terminal_safe(utf8(cp));
    CHECK(out.starts_with("\\u00"));
    CHECK(is_inert(out));
    const std::string raw(1, static_cast<char>(cp));
    CHECK(terminal_safe(raw).starts_with("\\x"));
  }
  CHECK(terminal_safe(utf8(0x9B) + "2K") == "\\u009b2K");
  CHECK(terminal_safe("\x9b" "2K") == "\\x9b2K");
  CHECK(terminal_safe(utf8(0xA0) + utf8(0xE9)) == utf8(0xA0) + utf8(0xE9));  // Latin-1 letters stay
}

TEST_CASE("terminal_safe escapes bidi overrides, isolates, marks and line separators") {
  for (char32_t cp : {0x061Cu, 0x200Eu, 0x200Fu, 0x202Au, 0x202Bu, 0x202Cu, 0x202Du, 0x202Eu, 0x2066u, 0x2067u,
                      0x2068u, 0x2069u, 0x2028u, 0x2029u}) {
    CAPTURE(static_cast<unsigned>(cp));
    const std::string out = terminal_safe("txt" + utf8(cp) + "gpj.exe");
    CHECK(out.find(utf8(cp)) == std::string::npos);
    CHECK(out.find("\\u") == 3);
  }
  CHECK(terminal_safe(utf8(0x202E) + "abc") == "\\u202eabc");
  CHECK(terminal_safe(utf8(0x200D)) == utf8(0x200D));  // the zero-width joiner of emoji stays
}

TEST_CASE("terminal_safe escapes each byte of invalid UTF-8") {
  CHECK(terminal_safe("\xff\xfe") == "\\xff\\xfe");
  CHECK(terminal_safe("a\xc3") == "a\\xc3");                   // cut short
  CHECK(terminal_safe("\xc0\xaf") == "\\xc0\\xaf");            // overlong '/'
  CHECK(terminal_safe("\xe0\x80\xaf") == "\\xe0\\x80\\xaf");   // overlong, three bytes
  CHECK(terminal_safe("\xed\xa0\x80") == "\\xed\\xa0\\x80");   // a surrogate
  CHECK(terminal_safe("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  CHECK(terminal_safe("\xc2\x1b") == "\\xc2\\x1b");            // a lead byte before ESC
  CHECK(terminal_safe("\xe2\x80") == "\\xe2\\x80");
  CHECK(terminal_safe(utf8(0x10FFFF)) == utf8(0x10FFFF));
}

TEST_CASE("terminal_safe with newlines::keep keeps line ends but not a lone CR") {
  CHECK(terminal_safe("one\ntwo\r\nthree", newlines::keep) == "one\ntwo\nthree");
  CHECK(terminal_safe("over\rwrite", newlines::keep) == "over\\rwrite");
  CHECK(terminal_safe("end\r", newlines::keep) == "end\\r");
  CHECK(terminal_safe("\x1b[2J\n", newlines::keep) == "\\x1b[2J\n");
}
