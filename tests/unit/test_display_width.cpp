// display_width and format_table: tables line up by terminal columns, with
// CJK and emoji two columns wide and combining marks none.
#include <doctest/doctest.h>

#include <string>

#include "launcher/display_width.hpp"

using namespace mailnet::launcher;

TEST_CASE("display width counts terminal columns, not bytes or code points") {
  CHECK(display_width("plain") == 5);
  CHECK(display_width("日本語") == 6);
  CHECK(display_width("한국어") == 6);
  CHECK(display_width("🚀 go") == 5);
  CHECK(display_width("Ｆｕｌｌ") == 8);              // fullwidth forms
  CHECK(display_width("e\xcc\x81te\xcc\x81") == 3);  // été, each é as e + U+0301
  CHECK(display_width("Étoile ✓ — plans") == 16);    // narrow symbols stay one column
  CHECK(display_width("\\x1b[2J") == 7);             // escapes as terminal_safe shows them
  CHECK(display_width("\xff\xfe") == 2);             // bytes that are not UTF-8: one each
}

TEST_CASE("fit_columns cuts at a character and pads to the width") {
  CHECK(fit_columns("abc", 5) == "abc  ");
  CHECK(fit_columns("日本語", 5) == "日本 ");  // the third would need columns 5 and 6
  CHECK(fit_columns("日本語", 6) == "日本語");
  CHECK(fit_columns("🚀🚀", 3) == "🚀 ");
}

TEST_CASE("format_table sizes each column to its widest cell") {
  const auto text = format_table({{"NODE", "STATE"}, {"tatooine.example", "ready"}, {"日本.example", "killed"}});
  CHECK(text ==
        "NODE              STATE\n"
        "tatooine.example  ready\n"
        "日本.example      killed\n");
  // A cap cuts long cells; the last column is never padded.
  CHECK(format_table({{"A", "B"}, {"abcdef", "x"}}, {3}) == "A    B\nabc  x\n");
}
