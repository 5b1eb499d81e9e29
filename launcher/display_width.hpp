// How many terminal columns text takes, for tables that line up with CJK
// subjects and emoji: wcwidth(3) semantics from a table of our own, so that
// the answer does not depend on the locales installed (a C.UTF-8 or
// en_US.UTF-8 locale may be missing where tests run).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::launcher {

// Columns of one code point: 0 for combining marks, zero-width characters
// and variation selectors; 2 for East Asian Wide and Fullwidth characters
// (Unicode 15: Hangul, CJK, kana, fullwidth forms) and emoji presentation
// pictographs; 1 for the rest. Control characters count 1: what is printed
// went through terminal_safe, which shows them as visible escapes.
int code_point_width(char32_t c);

// Columns of UTF-8 text; a byte that does not start a well-formed sequence counts 1.
std::size_t display_width(std::string_view utf8);

// text cut to at most `columns` columns (never inside a character), then
// padded with spaces to exactly `columns`.
std::string fit_columns(std::string_view utf8, std::size_t columns);

// Rows of cells (already made terminal safe) as lines of aligned columns:
// each column as wide as its widest cell, at most caps[i] columns when
// caps[i] > 0 (longer cells are cut), two spaces between columns, the last
// column not padded.
std::string format_table(const std::vector<std::vector<std::string>>& rows, const std::vector<std::size_t>& caps = {});

}  // namespace mailnet::launcher
