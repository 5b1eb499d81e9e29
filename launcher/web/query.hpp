// A request's query without any HTTP library: the one loop that splits and
// decodes it, shared by the routes that read one (messages, a transcript, the
// event stream's filter); each route then checks the values it takes.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailnet::launcher::web {

// "%41b+c" -> "Ab c" (with plus_space); nullopt for a broken escape or a NUL.
std::optional<std::string> percent_decode(std::string_view s, bool plus_space);

// What follows the '?' of a request target ("" without one).
std::string_view query_of(std::string_view target);

struct query_param {
  std::string key, value;  // %-escapes undone, '+' a space
};

// The pairs read before the first problem, in order, and that problem: a
// caller checks their values in that order and only then answers with the
// problem, so the first fault in the query is the one reported.
struct parsed_query {
  std::vector<query_param> params;
  std::string error;  // empty when the whole query was read
};

inline constexpr std::size_t no_pair_limit = std::numeric_limits<std::size_t>::max();

// "a=1&&b=%41" -> {a,1}, {b,A}. Empty pairs are skipped (but counted against
// max_pairs); a key without '=' has an empty value; a key may come again (the
// caller decides whether that is allowed). Problems: a broken %-escape, a key
// not in known (the error names the known ones), or pairs beyond max_pairs.
parsed_query query_params(std::string_view query, std::initializer_list<std::string_view> known,
                          std::size_t max_pairs);

}  // namespace mailnet::launcher::web
