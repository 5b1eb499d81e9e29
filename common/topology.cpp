#include "common/topology.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <charconv>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/faults_json.hpp"
#include "common/json_reader.hpp"

namespace mailnet {

using json = nlohmann::json;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

struct domain_defaults {
  retry_policy retry;
  struct limits limits;
  struct timeouts timeouts;
  struct policy policy;
};

void read_retry(const json_reader& r, const json& j, const std::string& path, retry_policy& out) {
  r.expect_object(j, path);
  r.only_keys(j, path, {"first", "max", "give_up_after"});
  if (j.contains("first")) out.first = r.duration_at(j["first"], path + ".first");
  if (j.contains("max")) out.max = r.duration_at(j["max"], path + ".max");
  if (j.contains("give_up_after")) out.give_up_after = r.duration_at(j["give_up_after"], path + ".give_up_after");
  if (out.max < out.first) r.fail(path + ".max", "must not be shorter than first");
}

void read_limits(const json_reader& r, const json& j, const std::string& path, limits& out) {
  r.expect_object(j, path);
  r.only_keys(j, path, {"message_size", "recipients", "command_line", "text_line", "connections",
                        "errors", "received_headers", "relay_connections_per_destination"});
  if (j.contains("message_size")) out.message_size = r.count_at(j["message_size"], path + ".message_size", 1, 1ULL << 40);
  if (j.contains("recipients")) out.recipients = r.count_at(j["recipients"], path + ".recipients", 1, 100000);
  // RFC 5321 §4.5.3.1 asks for at least 512 (commands) and 1000 (text
  // lines), the defaults; smaller ones are allowed so that a test or a lesson
  // can show the limits with short input. 32 still holds a MAIL FROM.
  if (j.contains("command_line")) out.command_line = r.count_at(j["command_line"], path + ".command_line", 32, 1 << 20);
  if (j.contains("text_line")) out.text_line = r.count_at(j["text_line"], path + ".text_line", 32, 1 << 24);
  if (j.contains("connections")) out.connections = r.count_at(j["connections"], path + ".connections", 1, 1000000);
  if (j.contains("errors")) out.errors = r.count_at(j["errors"], path + ".errors", 1, 100000);
  if (j.contains("received_headers")) out.received_headers = r.count_at(j["received_headers"], path + ".received_headers", 1, 10000);
  if (j.contains("relay_connections_per_destination"))
    out.relay_connections_per_destination =
        r.count_at(j["relay_connections_per_destination"], path + ".relay_connections_per_destination", 1, 10000);
}

void read_timeouts(const json_reader& r, const json& j, const std::string& path, timeouts& out) {
  r.expect_object(j, path);
  r.only_keys(j, path, {"idle", "command", "data_block", "data", "greeting_pause", "relay_connect", "relay_reply"});
  if (j.contains("idle")) out.idle = r.duration_at(j["idle"], path + ".idle");
  if (j.contains("command")) out.command = r.duration_at(j["command"], path + ".command");
  if (j.contains("data_block")) out.data_block = r.duration_at(j["data_block"], path + ".data_block");
  if (j.contains("data")) out.data = r.duration_at(j["data"], path + ".data");
  if (j.contains("greeting_pause"))
    out.greeting_pause = r.duration_at(j["greeting_pause"], path + ".greeting_pause", true);
  if (j.contains("relay_connect")) out.relay_connect = r.duration_at(j["relay_connect"], path + ".relay_connect");
  if (j.contains("relay_reply")) out.relay_reply = r.duration_at(j["relay_reply"], path + ".relay_reply");
}

void read_policy(const json_reader& r, const json& j, const std::string& path, policy& out) {
  r.expect_object(j, path);
  r.only_keys(j, path, {"require_known_users", "mailbox_by_local_part", "require_helo_domain_match", "sync", "tls",
                        "tls_relay", "require_fcrdns", "dmarc"});
  if (j.contains("tls")) {
    auto v = r.string_at(j["tls"], path + ".tls");
    if (v == "optional") out.tls = tls_policy::optional;
    else if (v == "required") out.tls = tls_policy::required;
    else if (v == "off") out.tls = tls_policy::off;
    else r.fail(path + ".tls", "expected \"optional\", \"required\" or \"off\", found \"" + v + "\"");
  }
  if (j.contains("tls_relay")) {
    auto v = r.string_at(j["tls_relay"], path + ".tls_relay");
    if (v == "verify") out.tls_relay = tls_relay_policy::verify;
    else if (v == "opportunistic") out.tls_relay = tls_relay_policy::opportunistic;
    else if (v == "off") out.tls_relay = tls_relay_policy::off;
    else r.fail(path + ".tls_relay", "expected \"verify\", \"opportunistic\" or \"off\", found \"" + v + "\"");
  }
  if (j.contains("dmarc")) {
    auto v = r.string_at(j["dmarc"], path + ".dmarc");
    if (v == "report") out.dmarc = dmarc_policy::report;
    else if (v == "enforce") out.dmarc = dmarc_policy::enforce;
    else if (v == "off") out.dmarc = dmarc_policy::off;
    else r.fail(path + ".dmarc", "expected \"report\", \"enforce\" or \"off\", found \"" + v + "\"");
  }
  if (j.contains("require_fcrdns")) out.require_fcrdns = r.bool_at(j["require_fcrdns"], path + ".require_fcrdns");
  if (j.contains("sync")) {
    auto v = r.string_at(j["sync"], path + ".sync");
    if (v != "filesystem" && v != "files") r.fail(path + ".sync", "expected \"filesystem\" or \"files\", found \"" + v + "\"");
    out.sync_whole_filesystem = v == "filesystem";
  }
  if (j.contains("require_known_users")) out.require_known_users = r.bool_at(j["require_known_users"], path + ".require_known_users");
  if (j.contains("mailbox_by_local_part")) out.mailbox_by_local_part = r.bool_at(j["mailbox_by_local_part"], path + ".mailbox_by_local_part");
  if (j.contains("require_helo_domain_match")) out.require_helo_domain_match = r.bool_at(j["require_helo_domain_match"], path + ".require_helo_domain_match");
}

void read_settings(const json_reader& r, const json& j, const std::string& path, domain_defaults& out) {
  if (j.contains("retry")) read_retry(r, j["retry"], path + ".retry", out.retry);
  if (j.contains("limits")) read_limits(r, j["limits"], path + ".limits", out.limits);
  if (j.contains("timeouts")) read_timeouts(r, j["timeouts"], path + ".timeouts", out.timeouts);
  if (j.contains("policy")) read_policy(r, j["policy"], path + ".policy", out.policy);
}

// "@" is the domain itself; any other name must be the domain or under it
// (a domain's records stay in its own part of the network's DNS).
void read_dns(const json_reader& r, const json& j, const std::string& path, const std::string& domain,
              dns_settings& out) {
  r.expect_object(j, path);
  r.only_keys(j, path, {"records"});
  if (!j.contains("records")) return;
  const auto& list = j["records"];
  const std::string lpath = path + ".records";
  if (!list.is_array()) r.fail(lpath, "expected a list of records such as {\"name\": \"@\", \"type\": \"TXT\", \"value\": \"...\"}, found " + r.type_name(list));
  if (list.size() > 1000) r.fail(lpath, "at most 1000 records per domain");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string rp = lpath + "[" + std::to_string(i) + "]";
    const auto& rj = list[i];
    r.expect_object(rj, rp);
    r.only_keys(rj, rp, {"name", "type", "value"});
    for (const char* key : {"name", "type", "value"})
      if (!rj.contains(key)) r.fail(rp + "." + key, "missing");
    dns_record rec;
    rec.name = lower(r.string_at(rj["name"], rp + ".name"));
    if (rec.name == "@") rec.name = domain;
    if (rec.name.size() > 1 && rec.name.back() == '.') rec.name.pop_back();
    if (!is_valid_record_name(rec.name))
      r.fail(rp + ".name", "expected a DNS name such as \"_dmarc." + domain + "\" (or \"@\" for " + domain + "), found \"" + rec.name + "\"");
    if (rec.name != domain && !(rec.name.size() > domain.size() + 1 && rec.name.ends_with("." + domain)))
      r.fail(rp + ".name", "\"" + rec.name + "\" is not " + domain + " nor a name under it");
    rec.type = r.string_at(rj["type"], rp + ".type");
    std::transform(rec.type.begin(), rec.type.end(), rec.type.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    rec.value = r.string_at(rj["value"], rp + ".value");
    const std::string vp = rp + ".value";
    if (rec.type == "TXT") {
      if (rec.value.size() > 4000) r.fail(vp, "a TXT value of at most 4000 bytes, found " + std::to_string(rec.value.size()));
      for (unsigned char c : rec.value)
        if (c < 0x20 || c == 0x7F) r.fail(vp, "control characters are not allowed in a TXT value");
    } else if (rec.type == "A" || rec.type == "AAAA") {
      in_addr v4{};
      in6_addr v6{};
      const bool ok = rec.type == "A" ? inet_pton(AF_INET, rec.value.c_str(), &v4) == 1
                                      : inet_pton(AF_INET6, rec.value.c_str(), &v6) == 1;
      if (!ok || !is_loopback_host(rec.value))
        r.fail(vp, std::string("expected a loopback ") + (rec.type == "A" ? "IPv4 address (127.0.0.0/8)" : "IPv6 address (::1)") +
                       ", found \"" + rec.value + "\"");
      rec.value = canonical_host(rec.value);
    } else if (rec.type == "MX") {
      const auto space = rec.value.find(' ');
      std::uint64_t pref = 0;
      const char* first = rec.value.data();
      const char* last = first + (space == std::string::npos ? 0 : space);
      auto [ptr, ec] = std::from_chars(first, last, pref);
      std::string host = space == std::string::npos ? std::string() : lower(rec.value.substr(space + 1));
      if (!host.empty() && host.size() > 1 && host.back() == '.') host.pop_back();
      if (ec != std::errc() || ptr != last || pref > 65535 || !(host == "." || is_valid_record_name(host)))
        r.fail(vp, "expected \"preference host\" such as \"10 mx." + domain + "\", found \"" + rec.value + "\"");
      rec.value = std::to_string(pref) + " " + host;
    } else if (rec.type == "CNAME") {
      std::string target = lower(rec.value);
      if (target.size() > 1 && target.back() == '.') target.pop_back();
      if (!is_valid_record_name(target)) r.fail(vp, "expected a DNS name, found \"" + rec.value + "\"");
      // RFC 1034 §3.6.2: an alias has no other data; the resolver's own
      // records live at the domain and at mx.<domain>.
      if (rec.name == domain || rec.name == "mx." + domain || rec.name == "_smtp._tcp." + domain)
        r.fail(rp + ".name", "a CNAME cannot be at " + rec.name + ", which has the resolver's own records");
      rec.value = target;
    } else {
      r.fail(rp + ".type", "expected \"TXT\", \"A\", \"AAAA\", \"MX\" or \"CNAME\", found \"" + rec.type + "\"");
    }
    out.records.push_back(std::move(rec));
  }
  // An alias is alone at its name (RFC 1034 §3.6.2).
  for (std::size_t i = 0; i < out.records.size(); ++i) {
    if (out.records[i].type != "CNAME") continue;
    for (std::size_t k = 0; k < out.records.size(); ++k)
      if (k != i && out.records[k].name == out.records[i].name)
        r.fail(lpath + "[" + std::to_string(std::max(i, k)) + "].name",
               "\"" + out.records[i].name + "\" has a CNAME, and a name with a CNAME has no other records");
  }
}

}  // namespace

std::string reverse_dns_name(std::string_view address) {
  const std::string text(address);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    const auto* b = reinterpret_cast<const unsigned char*>(&v4.s_addr);
    return std::to_string(b[3]) + "." + std::to_string(b[2]) + "." + std::to_string(b[1]) + "." +
           std::to_string(b[0]) + ".in-addr.arpa.";
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (int i = 15; i >= 0; --i) {
      out += hex[v6.s6_addr[i] & 0x0F];
      out += '.';
      out += hex[v6.s6_addr[i] >> 4];
      out += '.';
    }
    return out + "ip6.arpa.";
  }
  return {};
}

bool is_valid_record_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t start = 0;
  for (;;) {
    auto dot = name.find('.', start);
    auto label = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63) return false;
    for (unsigned char c : label)
      if (!std::isalnum(c) && c != '-' && c != '_') return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// A user name becomes a Maildir folder name: keep to a conservative allow-list.
bool is_valid_user_name(std::string_view u) {
  if (u.empty() || u.size() > 64 || u.front() == '.' || u.back() == '.') return false;
  if (u.find("..") != std::string_view::npos) return false;
  return std::all_of(u.begin(), u.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
  });
}

namespace {

bool is_valid_network_name(std::string_view n) {
  if (n.empty() || n.size() > 64 || n.front() == '.') return false;
  return std::all_of(n.begin(), n.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

std::string endpoint::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<std::string> domain_config::find_user(std::string_view local_part) const {
  auto wanted = lower(local_part);
  for (const auto& u : users)
    if (lower(u) == wanted) return u;
  return std::nullopt;
}

const domain_config* topology::find_domain(std::string_view domain) const {
  auto wanted = lower(domain);
  if (!wanted.empty() && wanted.back() == '.') wanted.pop_back();
  for (const auto& d : domains)
    if (d.name == wanted) return &d;
  return nullptr;
}

std::optional<millis> parse_duration(std::string_view text) {
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr == text.data()) return std::nullopt;
  std::string_view unit(ptr, static_cast<std::size_t>(text.data() + text.size() - ptr));
  std::uint64_t scale = 0;
  if (unit == "ms") scale = 1;
  else if (unit == "s" || unit.empty()) scale = 1000;
  else if (unit == "m") scale = 60000;
  else if (unit == "h") scale = 3600000;
  else return std::nullopt;
  if (value > (1ULL << 40)) return std::nullopt;
  return millis(static_cast<millis::rep>(value * scale));
}

bool is_valid_domain_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t labels = 0;
  std::size_t start = 0;
  while (start <= name.size()) {
    auto dot = name.find('.', start);
    auto label = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (unsigned char c : label)
      if (!std::isalnum(c) && c != '-') return false;
    ++labels;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return labels >= 1;
}

std::string canonical_host(std::string_view host) {
  std::string h(host);
  char text[INET6_ADDRSTRLEN] = {};
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1 && inet_ntop(AF_INET, &v4, text, sizeof text)) return text;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1 && inet_ntop(AF_INET6, &v6, text, sizeof text)) return text;
  return h;
}

bool is_run_folder_entry(std::string_view name) {
  // What the launcher writes at the top of run/<name>/ (launcher/run_folder.hpp).
  static constexpr std::string_view files[] = {"topology.json", "network.json", "mailnet.sock", "launcher.pid",
                                               "launcher.log", "scenario-run.txt"};
  if (name == "resolver" || name == "tls" || name == "passwords") return true;
  for (auto f : files) {
    // Also "network.json.tmp" and the like: a file is often written beside
    // its final name, then renamed.
    if (name == f || (name.size() > f.size() && name.substr(0, f.size()) == f && name[f.size()] == '.')) return true;
  }
  return false;
}

bool is_valid_password(std::string_view p) {
  if (p.empty() || p.size() > 128) return false;
  return std::all_of(p.begin(), p.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f && c != ':'; });
}

bool is_loopback_host(std::string_view host) {
  std::string h(host);
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

topology parse_topology(std::string_view json_text, std::string_view file_name) {
  json_reader r(file_name);
  json doc;
  try {
    doc = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 7E777 (found by fuzzing)
    // nlohmann's message carries the line and column of the problem.
    std::string what = e.what();
    auto colon = what.find("parse error");
    throw topology_error(std::string(file_name) + ": $: not valid JSON: " +
                         (colon == std::string::npos ? what : what.substr(colon)));
  }
  r.expect_object(doc, "$");
  r.only_keys(doc, "$", {"name", "resolver", "web", "tls", "defaults", "domains", "steps", "description", "faults"});

  topology t;
  bool resolver_given = false;  // an explicit $.resolver.listen, for the error message
  if (!doc.contains("name")) r.fail("$.name", "missing (expected the network's name)");
  t.name = r.string_at(doc["name"], "$.name");
  if (!is_valid_network_name(t.name))
    r.fail("$.name", "expected letters, digits, '.', '_' or '-' (it names the run folder), found \"" + t.name + "\"");

  if (doc.contains("resolver")) {
    const auto& rj = doc["resolver"];
    r.expect_object(rj, "$.resolver");
    r.only_keys(rj, "$.resolver", {"listen", "timeout", "attempts", "restart", "ttl"});
    if (rj.contains("restart")) t.resolver.restart_on_failure = r.restart_at(rj["restart"], "$.resolver.restart");
    if (rj.contains("listen")) t.resolver.listen = r.endpoint_at(rj["listen"], "$.resolver.listen");
    resolver_given = rj.contains("listen");
    if (rj.contains("timeout")) t.resolver.query_timeout = r.duration_at(rj["timeout"], "$.resolver.timeout");
    if (rj.contains("ttl")) t.resolver.ttl = static_cast<std::uint32_t>(r.count_at(rj["ttl"], "$.resolver.ttl", 0, 86400));
    if (rj.contains("attempts")) t.resolver.query_attempts = static_cast<int>(r.count_at(rj["attempts"], "$.resolver.attempts", 1, 20));
  }

  if (doc.contains("web")) {
    const auto& wj = doc["web"];
    if (wj.is_boolean()) {
      t.web.enabled = wj.get<bool>();
    } else {
      if (!wj.is_object()) r.fail("$.web", "expected false (no web server) or an object such as {\"listen\": \"127.0.0.1:8025\"}, found " + r.type_name(wj));
      r.only_keys(wj, "$.web", {"listen"});
      if (wj.contains("listen")) t.web.listen = r.endpoint_at(wj["listen"], "$.web.listen");
    }
  }

  if (t.web.enabled && t.web.listen == t.resolver.listen)
    r.fail(doc.contains("web") ? "$.web.listen" : "$.resolver.listen",
           t.web.listen.to_string() + " is both the resolver's address and the web server's (" +
               (doc.contains("web") ? "" : "the default of ") + "$.web.listen): it takes TCP on that port");

  if (doc.contains("tls")) t.tls = r.bool_at(doc["tls"], "$.tls");

  domain_defaults defaults;
  if (doc.contains("defaults")) {
    const auto& dj = doc["defaults"];
    r.expect_object(dj, "$.defaults");
    r.only_keys(dj, "$.defaults", {"retry", "limits", "timeouts", "policy"});
    read_settings(r, dj, "$.defaults", defaults);
  }

  if (!doc.contains("domains")) r.fail("$.domains", "missing (expected a list of domains)");
  const auto& domains = doc["domains"];
  if (!domains.is_array()) r.fail("$.domains", "expected a list of domains, found " + r.type_name(domains));
  if (domains.empty()) r.fail("$.domains", "expected at least one domain");

  std::map<std::string, std::string> seen_names;      // name -> path
  std::map<std::string, std::string> seen_endpoints;  // host:port -> path
  for (std::size_t i = 0; i < domains.size(); ++i) {
    const std::string path = "$.domains[" + std::to_string(i) + "]";
    const auto& dj = domains[i];
    r.expect_object(dj, path);
    r.only_keys(dj, path, {"name", "listen", "submission", "users", "retry", "limits", "timeouts", "policy", "restart",
                           "dns"});
    domain_config d;
    if (!dj.contains("name")) r.fail(path + ".name", "missing (expected a domain name)");
    d.name = lower(r.string_at(dj["name"], path + ".name"));
    if (!d.name.empty() && d.name.back() == '.') d.name.pop_back();
    if (!is_valid_domain_name(d.name))
      r.fail(path + ".name", "expected a domain name such as \"jaku.com\", found \"" + d.name + "\"");
    if (d.name == "resolver")
      r.fail(path + ".name", "\"resolver\" is reserved: it names the resolver, and its folder in the run folder");
    if (is_run_folder_entry(d.name))
      r.fail(path + ".name", "\"" + d.name + "\" is the name of a file in the network's run folder; choose another");
    if (auto it = seen_names.find(d.name); it != seen_names.end())
      r.fail(path + ".name", "duplicate domain \"" + d.name + "\" (also at " + it->second + ")");
    seen_names[d.name] = path + ".name";

    if (!dj.contains("listen")) r.fail(path + ".listen", "missing (expected \"host:port\")");
    d.listen = r.endpoint_at(dj["listen"], path + ".listen");  // in one spelling per address
    const auto key = d.listen.to_string();
    if (auto it = seen_endpoints.find(key); it != seen_endpoints.end())
      r.fail(path + ".listen", "duplicate address " + key + " (also at " + it->second + ")");
    seen_endpoints[key] = path + ".listen";
    if (d.listen == t.resolver.listen)
      r.fail(path + ".listen", key + " is the resolver's address (" + (resolver_given ? "" : "the default of ") +
                                   "$.resolver.listen: it takes UDP and TCP on that port)");
    if (t.web.enabled && d.listen == t.web.listen)
      r.fail(path + ".listen", key + " is the web server's address (" + (doc.contains("web") ? "" : "the default of ") +
                                   "$.web.listen; choose another, or turn the web server off with \"web\": false)");

    // false: none (the default, as network.json writes it out)
    if (dj.contains("submission") && !(dj["submission"].is_boolean() && !dj["submission"].get<bool>())) {
      const std::string spath = path + ".submission";
      d.submission = r.endpoint_at(dj["submission"], spath);
      const auto skey = d.submission->to_string();
      if (auto it = seen_endpoints.find(skey); it != seen_endpoints.end())
        r.fail(spath, "duplicate address " + skey + " (also at " + it->second + ")");
      seen_endpoints[skey] = spath;
      if (*d.submission == t.resolver.listen)
        r.fail(spath, skey + " is the resolver's address (" + (resolver_given ? "" : "the default of ") +
                          "$.resolver.listen: it takes UDP and TCP on that port)");
      if (t.web.enabled && *d.submission == t.web.listen)
        r.fail(spath, skey + " is the web server's address (" + (doc.contains("web") ? "" : "the default of ") +
                          "$.web.listen; choose another, or turn the web server off with \"web\": false)");
      if (!t.tls)
        r.fail(spath, "submission requires STARTTLS before AUTH, and \"tls\": false at $.tls turns TLS off");
    }

    if (dj.contains("users")) {
      const auto& uj = dj["users"];
      if (!uj.is_array()) r.fail(path + ".users", "expected a list of user names, found " + r.type_name(uj));
      std::set<std::string> seen_users;
      for (std::size_t k = 0; k < uj.size(); ++k) {
        const std::string upath = path + ".users[" + std::to_string(k) + "]";
        std::string u;
        if (uj[k].is_object()) {
          // { "name": "finn", "password": "..." }
          r.only_keys(uj[k], upath, {"name", "password"});
          if (!uj[k].contains("name")) r.fail(upath + ".name", "missing (expected the user's name)");
          u = r.string_at(uj[k]["name"], upath + ".name");
          if (!is_valid_user_name(u))
            r.fail(upath + ".name", "expected a user name of letters, digits, '.', '_', '-' or '+', found \"" + u + "\"");
          if (uj[k].contains("password")) {
            auto pw = r.string_at(uj[k]["password"], upath + ".password");
            if (!is_valid_password(pw))
              r.fail(upath + ".password",
                     "expected 1 to 128 printable ASCII characters other than ':' (the password is not shown here)");
            d.passwords[u] = pw;
          }
        } else {
          if (!uj[k].is_string())
            r.fail(upath, "expected a user name or an object such as {\"name\": \"finn\", \"password\": \"...\"}, found " +
                              r.type_name(uj[k]));
          u = r.string_at(uj[k], upath);
          if (!is_valid_user_name(u))
            r.fail(upath, "expected a user name of letters, digits, '.', '_', '-' or '+', found \"" + u + "\"");
        }
        if (!seen_users.insert(lower(u)).second) r.fail(upath, "duplicate user \"" + u + "\"");
        d.users.push_back(u);
      }
    }

    if (dj.contains("dns")) read_dns(r, dj["dns"], path + ".dns", d.name, d.dns);
    if (dj.contains("restart")) d.restart_on_failure = r.restart_at(dj["restart"], path + ".restart");
    domain_defaults own = defaults;
    read_settings(r, dj, path, own);
    d.retry = own.retry;
    d.limits = own.limits;
    d.timeouts = own.timeouts;
    d.policy = own.policy;
    if (!t.tls && d.policy.tls == tls_policy::required)
      r.fail(path + ".policy.tls", "\"required\" needs the network's certificates, which \"tls\": false at $.tls turns off");
    t.domains.push_back(std::move(d));
  }

  // Faults: after the domains, which the rules name.
  if (doc.contains("faults")) {
    std::vector<std::string> names;
    for (const auto& d : t.domains) names.push_back(d.name);
    t.faults = read_faults(r, doc["faults"], names);
  }
  return t;
}

std::string_view to_string(tls_policy p) {
  switch (p) {
    case tls_policy::required: return "required";
    case tls_policy::off: return "off";
    default: return "optional";
  }
}

std::string_view to_string(tls_relay_policy p) {
  switch (p) {
    case tls_relay_policy::opportunistic: return "opportunistic";
    case tls_relay_policy::off: return "off";
    default: return "verify";
  }
}

std::string_view to_string(dmarc_policy p) {
  switch (p) {
    case dmarc_policy::enforce: return "enforce";
    case dmarc_policy::off: return "off";
    default: return "report";
  }
}

std::string read_topology_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw topology_error(file.string() + ": cannot be read (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

topology load_topology(const std::filesystem::path& file) {
  return parse_topology(read_topology_file(file), file.string());
}

std::string to_json_text(const topology& t) {
  auto ms = [](millis m) { return std::to_string(m.count()) + "ms"; };
  json doc;
  doc["name"] = t.name;
  doc["resolver"] = {{"listen", t.resolver.listen.to_string()},
                     {"timeout", ms(t.resolver.query_timeout)},
                     {"attempts", t.resolver.query_attempts},
                     {"ttl", t.resolver.ttl},
                     {"restart", t.resolver.restart_on_failure ? "on-failure" : "no"}};
  if (t.web.enabled) doc["web"] = {{"listen", t.web.listen.to_string()}};
  else doc["web"] = false;
  doc["tls"] = t.tls;
  doc["domains"] = json::array();
  for (const auto& d : t.domains) {
    json users = json::array();
    for (const auto& u : d.users) {
      if (auto it = d.passwords.find(u); it != d.passwords.end()) users.push_back({{"name", u}, {"password", it->second}});
      else users.push_back(u);
    }
    doc["domains"].push_back({
        {"name", d.name},
        {"listen", d.listen.to_string()},
        {"users", users},
        {"restart", d.restart_on_failure ? "on-failure" : "no"},
        {"retry", {{"first", ms(d.retry.first)}, {"max", ms(d.retry.max)}, {"give_up_after", ms(d.retry.give_up_after)}}},
        {"limits", {{"message_size", d.limits.message_size}, {"recipients", d.limits.recipients},
                    {"command_line", d.limits.command_line}, {"text_line", d.limits.text_line},
                    {"connections", d.limits.connections}, {"errors", d.limits.errors},
                    {"received_headers", d.limits.received_headers},
                    {"relay_connections_per_destination", d.limits.relay_connections_per_destination}}},
        {"timeouts", {{"idle", ms(d.timeouts.idle)}, {"command", ms(d.timeouts.command)}, {"data_block", ms(d.timeouts.data_block)},
                      {"data", ms(d.timeouts.data)}, {"greeting_pause", ms(d.timeouts.greeting_pause)},
                      {"relay_connect", ms(d.timeouts.relay_connect)}, {"relay_reply", ms(d.timeouts.relay_reply)}}},
        {"policy", {{"require_known_users", d.policy.require_known_users},
                    {"mailbox_by_local_part", d.policy.mailbox_by_local_part},
                    {"require_helo_domain_match", d.policy.require_helo_domain_match},
                    {"require_fcrdns", d.policy.require_fcrdns},
                    {"sync", d.policy.sync_whole_filesystem ? "filesystem" : "files"},
                    {"tls", to_string(d.policy.tls)},
                    {"tls_relay", to_string(d.policy.tls_relay)},
                    {"dmarc", to_string(d.policy.dmarc)}}},
    });
  }
  for (std::size_t i = 0; i < t.domains.size(); ++i) {
    const auto& d = t.domains[i];
    auto records = json::array();
    for (const auto& rec : d.dns.records) records.push_back({{"name", rec.name}, {"type", rec.type}, {"value", rec.value}});
    doc["domains"][i]["dns"] = {{"records", records}};
    doc["domains"][i]["submission"] = d.submission ? json(d.submission->to_string()) : json(false);
  }
  if (!t.faults.rules.empty() || t.faults.seed) doc["faults"] = faults_to_json(t.faults);
  return doc.dump(2) + "\n";
}

}  // namespace mailnet
