// Reading a JSON document field by field, with errors that name the file,
// the JSON path and what was expected: "topo.json: $.domains[1].listen: …".
// Shared by the topology and the scenario steps.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/topology.hpp"

namespace mailnet {

// Throws topology_error naming the file and the JSON path.
class json_reader {
 public:
  explicit json_reader(std::string_view file) : file_(file) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw topology_error(file_ + ": " + path + ": " + what);
  }

  std::string type_name(const nlohmann::json& j) const {
    return j.is_null() ? "null" : std::string(j.type_name());
  }

  void expect_object(const nlohmann::json& j, const std::string& path) const {
    if (!j.is_object()) fail(path, "expected an object, found " + type_name(j));
  }

  // Unknown keys are errors: a typo must not silently fall back to a default.
  void only_keys(const nlohmann::json& j, const std::string& path,
                 std::initializer_list<std::string_view> allowed) const {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
        std::string list;
        for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        fail(path + "." + it.key(), "unknown field (expected one of: " + list + ")");
      }
    }
  }

  std::string string_at(const nlohmann::json& j, const std::string& path) const {
    if (!j.is_string()) fail(path, "expected a string, found " + type_name(j));
    return j.get<std::string>();
  }

  bool bool_at(const nlohmann::json& j, const std::string& path) const {
    if (!j.is_boolean()) fail(path, "expected true or false, found " + type_name(j));
    return j.get<bool>();
  }

  std::uint64_t count_at(const nlohmann::json& j, const std::string& path, std::uint64_t min,
                         std::uint64_t max) const {
    if (!j.is_number_integer() || (j.is_number_integer() && !j.is_number_unsigned() && j.get<std::int64_t>() < 0))
      fail(path, "expected a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", found " + type_name(j));
    auto v = j.get<std::uint64_t>();
    if (v < min || v > max)
      fail(path, "expected a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", found " + std::to_string(v));
    return v;
  }

  millis duration_at(const nlohmann::json& j, const std::string& path, bool allow_zero = false) const {
    std::optional<millis> d;
    if (j.is_number_unsigned()) d = millis(j.get<std::uint64_t>() * 1000);
    else if (j.is_string()) d = parse_duration(j.get<std::string>());
    if (!d || d->count() < (allow_zero ? 0 : 1) || d->count() > 366LL * 24 * 3600 * 1000)
      fail(path, "expected a duration such as \"500ms\", \"2s\", \"5m\" or a number of seconds");
    return *d;
  }

  bool restart_at(const nlohmann::json& j, const std::string& path) const {
    auto v = string_at(j, path);
    if (v != "no" && v != "on-failure") fail(path, "expected \"no\" or \"on-failure\", found \"" + v + "\"");
    return v == "on-failure";
  }

  endpoint endpoint_at(const nlohmann::json& j, const std::string& path) const {
    const std::string expected = "expected \"host:port\" with a loopback host (127.0.0.0/8 or [::1])";
    if (!j.is_string()) fail(path, expected + ", found " + type_name(j));
    std::string s = j.get<std::string>();
    std::string host, port;
    if (!s.empty() && s.front() == '[') {
      auto close = s.find(']');
      if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
        fail(path, expected + ", found \"" + s + "\"");
      host = s.substr(1, close - 1);
      port = s.substr(close + 2);
    } else {
      auto colon = s.rfind(':');
      if (colon == std::string::npos) fail(path, expected + ", found \"" + s + "\"");
      host = s.substr(0, colon);
      port = s.substr(colon + 1);
    }
    if (host == "localhost") host = "127.0.0.1";
    if (!is_loopback_host(host)) fail(path, expected + ", found \"" + s + "\"");
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    // Port 0 would bind a random port that no other node could learn.
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || value == 0 || value > 65535)
      fail(path, "expected a port from 1 to 65535 in \"" + s + "\"");
    // One spelling per address ("[0:0:0:0:0:0:0:1]" is "[::1]"), so that
    // comparing two endpoints compares the addresses.
    return endpoint{canonical_host(host), static_cast<std::uint16_t>(value)};
  }

 private:
  std::string file_;
};

}  // namespace mailnet
