#include <doctest/doctest.h>

#include "launcher/web/query.hpp"

using namespace mailnet::launcher::web;

namespace {

std::string keys_and_values(const parsed_query& p) {
  std::string out;
  for (const auto& [k, v] : p.params) out += k + "=" + v + ";";
  return out;
}

}  // namespace

TEST_CASE("query_of: what follows the '?'") {
  CHECK(query_of("/api/v1/messages?domain=a") == "domain=a");
  CHECK(query_of("/api/v1/messages?") == "");
  CHECK(query_of("/api/v1/messages") == "");
  CHECK(query_of("/x?a=1?b") == "a=1?b");
}

TEST_CASE("query_params: known keys decoded in order, empty pairs skipped, a key again kept") {
  const auto p = query_params("a=1&&b=%41+c&a&b=", {"a", "b"}, 16);
  CHECK(p.error.empty());
  CHECK(keys_and_values(p) == "a=1;b=A c;a=;b=;");
  CHECK(query_params("", {"a"}, 16).params.empty());
  CHECK(query_params("", {"a"}, 16).error.empty());
  CHECK(query_params("&&&", {"a"}, 16).error.empty());
}

TEST_CASE("query_params: the first problem, with the pairs read before it") {
  const auto unknown = query_params("a=1&zz=2&%zz", {"a", "b"}, 16);
  CHECK(unknown.error == "unknown query parameter 'zz' (known: a, b)");
  CHECK(keys_and_values(unknown) == "a=1;");

  const auto broken = query_params("a=%4&zz=2", {"a"}, 16);
  CHECK(broken.error == "the query has a broken %-escape: a=%4");
  CHECK(broken.params.empty());
  CHECK(query_params("%61=1", {"a"}, 16).error.empty());  // the key is decoded before it is looked up
  CHECK(query_params("a%00=1", {"a"}, 16).error == "the query has a broken %-escape: a%00=1");
  CHECK(query_params("a=x%00", {"a"}, 16).error == "the query has a broken %-escape: a=x%00");
}

TEST_CASE("query_params: more pairs than max_pairs (empty ones counted) are refused") {
  std::string sixteen;
  for (int i = 0; i < 16; ++i) sixteen += "a=1&";
  CHECK(query_params(sixteen, {"a"}, 16).error.empty());  // the last '&' leaves nothing
  CHECK(query_params(sixteen + "a=1", {"a"}, 16).error == "the query has too many parameters");
  CHECK(query_params(sixteen + "&", {"a"}, 16).error == "the query has too many parameters");
  CHECK(query_params(std::string(20, '&') + "a=1", {"a"}, 16).error == "the query has too many parameters");
  CHECK(query_params(sixteen + sixteen, {"a"}, no_pair_limit).params.size() == 32);
}
