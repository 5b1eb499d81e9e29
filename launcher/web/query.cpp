#include "launcher/web/query.hpp"

#include <algorithm>

namespace mailnet::launcher::web {

namespace {

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view s, bool plus_space) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0) return std::nullopt;
      c = static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else if (c == '+' && plus_space) {
      c = ' ';
    }
    if (c == '\0') return std::nullopt;
    out += c;
  }
  return out;
}

std::string_view query_of(std::string_view target) {
  const auto mark = target.find('?');
  return mark == std::string_view::npos ? std::string_view() : target.substr(mark + 1);
}

parsed_query query_params(std::string_view query, std::initializer_list<std::string_view> known,
                          std::size_t max_pairs) {
  parsed_query out;
  for (std::size_t i = 0; i < max_pairs && !query.empty(); ++i) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!key || !value) {
      out.error = "the query has a broken %-escape: " + std::string(pair);
      return out;
    }
    if (std::find(known.begin(), known.end(), *key) == known.end()) {
      std::string names;
      for (const auto k : known) names += (names.empty() ? "" : ", ") + std::string(k);
      out.error = "unknown query parameter '" + *key + "' (known: " + names + ")";
      return out;
    }
    out.params.push_back({std::move(*key), std::move(*value)});
  }
  if (!query.empty()) out.error = "the query has too many parameters";
  return out;
}

}  // namespace mailnet::launcher::web
