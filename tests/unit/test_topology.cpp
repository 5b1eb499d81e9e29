#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/topology.hpp"
#include "launcher/run_folder.hpp"

using namespace mailnet;

namespace {

const char* good = R"({
  "name": "starwars",
  "resolver": { "listen": "127.0.0.1:1053" },
  "defaults": { "retry": { "first": "2s", "max": "1m" }, "policy": { "require_known_users": false } },
  "domains": [
    { "name": "Jaku.com", "listen": "127.0.0.1:1025", "users": ["rey", "Finn"] },
    { "name": "deathstar.com", "listen": "[::1]:1030", "users": ["vader"],
      "policy": { "require_helo_domain_match": true, "sync": "files" }, "limits": { "recipients": 3, "relay_connections_per_destination": 5 } }
  ]
})";

// The error message for a document, or "" when it parses.
std::string error_of(const std::string& text) {
  try {
    parse_topology(text, "topo.json");
    return "";
  } catch (const topology_error& e) {
    return e.what();
  }
}

std::string with_domains(const std::string& domains) {
  return R"({"name": "t", "domains": )" + domains + "}";
}

}  // namespace

TEST_CASE("a good topology parses with defaults merged") {
  auto t = parse_topology(good, "topo.json");
  CHECK(t.name == "starwars");
  CHECK(t.resolver.listen == endpoint{"127.0.0.1", 1053});
  REQUIRE(t.domains.size() == 2);
  const auto& jaku = t.domains[0];
  CHECK(jaku.name == "jaku.com");  // lower-cased
  CHECK(jaku.listen == endpoint{"127.0.0.1", 1025});
  CHECK(jaku.retry.first == millis(2000));
  CHECK(jaku.retry.max == millis(60000));
  CHECK(jaku.retry.give_up_after == millis(600000));  // built-in default
  CHECK_FALSE(jaku.policy.require_known_users);       // from defaults
  CHECK(jaku.limits.recipients == 100);
  CHECK(jaku.limits.relay_connections_per_destination == 20);  // the default
  const auto& ds = t.domains[1];
  CHECK(ds.listen == endpoint{"::1", 1030});
  CHECK(ds.listen.to_string() == "[::1]:1030");
  CHECK(ds.policy.require_helo_domain_match);
  CHECK_FALSE(ds.policy.require_known_users);  // the domain's policy merges over defaults
  CHECK(ds.limits.recipients == 3);
  CHECK(ds.limits.relay_connections_per_destination == 5);
  CHECK_FALSE(ds.policy.sync_whole_filesystem);
  CHECK(jaku.policy.sync_whole_filesystem);  // the default

  CHECK(t.find_domain("JAKU.COM.") == &t.domains[0]);
  CHECK(t.find_domain("genshinimpact.com") == nullptr);
  CHECK(jaku.find_user("finn") == std::optional<std::string>("Finn"));
  CHECK_FALSE(jaku.find_user("vader"));
}

TEST_CASE("the resolved topology round-trips through to_json_text") {
  // The whole value, not a few fields: the resolved topology written out again
  // after a round trip is the same document, every default included.
  auto t = parse_topology(good, "topo.json");
  const auto text = to_json_text(t);
  auto again = parse_topology(text, "network.json");
  CHECK(again == t);  // every field of every struct (defaulted operator==)
  CHECK(to_json_text(again) == text);
}

TEST_CASE("policy.sync takes filesystem or files") {
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "policy": {"sync": "always"}}])")) ==
        "topo.json: $.domains[0].policy.sync: expected \"filesystem\" or \"files\", found \"always\"");
}

TEST_CASE("policy.dmarc takes report (the default), enforce or off, and names file and field when wrong") {
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "policy": {"dmarc": "strict"}}])")) ==
        "topo.json: $.domains[0].policy.dmarc: expected \"report\", \"enforce\" or \"off\", found \"strict\"");
  CHECK(error_of(R"({"name": "t", "defaults": {"policy": {"dmarc": true}},
                     "domains": [{"name": "a.com", "listen": "127.0.0.1:1"}]})")
            .find("topo.json: $.defaults.policy.dmarc: expected a string") == 0);
  auto t = parse_topology(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "policy": {"dmarc": "enforce"}},
                                           {"name": "b.com", "listen": "127.0.0.1:2"}])"), "topo.json");
  CHECK(t.domains[0].policy.dmarc == dmarc_policy::enforce);
  CHECK(t.domains[1].policy.dmarc == dmarc_policy::report);
  CHECK(parse_topology(to_json_text(t), "network.json") == t);
}

TEST_CASE("TLS fields: policy.tls, policy.tls_relay and the network's tls, each named when wrong") {
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "policy": {"tls": "always"}}])")) ==
        "topo.json: $.domains[0].policy.tls: expected \"optional\", \"required\" or \"off\", found \"always\"");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "policy": {"tls_relay": "trust"}}])")) ==
        "topo.json: $.domains[0].policy.tls_relay: expected \"verify\", \"opportunistic\" or \"off\", found \"trust\"");
  auto t = parse_topology(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1",
                                            "policy": {"tls": "required", "tls_relay": "opportunistic"}},
                                           {"name": "b.com", "listen": "127.0.0.1:2"}])"), "topo.json");
  CHECK(t.tls);
  CHECK(t.domains[0].policy.tls == tls_policy::required);
  CHECK(t.domains[0].policy.tls_relay == tls_relay_policy::opportunistic);
  CHECK(t.domains[1].policy.tls == tls_policy::optional);  // the defaults
  CHECK(t.domains[1].policy.tls_relay == tls_relay_policy::verify);
  CHECK(parse_topology(to_json_text(t), "network.json") == t);
  CHECK(error_of(R"({"name": "t", "tls": false, "domains": [{"name": "a.com", "listen": "127.0.0.1:1",
                                                              "policy": {"tls": "required"}}]})")
            .find("topo.json: $.domains[0].policy.tls: \"required\" needs the network's certificates") == 0);
  CHECK(error_of(R"({"name": "t", "tls": "yes", "domains": [{"name": "a.com", "listen": "127.0.0.1:1"}]})")
            .find("topo.json: $.tls: ") == 0);
}

TEST_CASE("bad JSON names the file and where it broke") {
  auto e = error_of(R"({"name": "t", "domains": [)");
  CHECK(e.find("topo.json: $: not valid JSON") == 0);
  CHECK(e.find("line") != std::string::npos);
  CHECK(error_of("").find("not valid JSON") != std::string::npos);
  CHECK(error_of("[]") == "topo.json: $: expected an object, found array");
  // A number too large for a double is a JSON error too, not a crash (fuzz_topology found it).
  CHECK(error_of(R"({"name": 7E7777, "domains": []})").find("topo.json: $: not valid JSON") == 0);
}

TEST_CASE("missing fields are named by their JSON path") {
  CHECK(error_of(R"({"domains": []})") == "topo.json: $.name: missing (expected the network's name)");
  CHECK(error_of(R"({"name": "t"})") == "topo.json: $.domains: missing (expected a list of domains)");
  CHECK(error_of(with_domains("[]")) == "topo.json: $.domains: expected at least one domain");
  CHECK(error_of(with_domains(R"([{"listen": "127.0.0.1:25"}])")) ==
        "topo.json: $.domains[0].name: missing (expected a domain name)");
  CHECK(error_of(with_domains(R"([{"name": "a.com"}])")) ==
        "topo.json: $.domains[0].listen: missing (expected \"host:port\")");
}

TEST_CASE("wrong types say what was expected and what was found") {
  CHECK(error_of(R"({"name": 5, "domains": []})") == "topo.json: $.name: expected a string, found number");
  CHECK(error_of(R"({"name": "t", "domains": {}})") == "topo.json: $.domains: expected a list of domains, found object");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "users": "rey"}])")) ==
        "topo.json: $.domains[0].users: expected a list of user names, found string");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "users": [1]}])")) ==
        "topo.json: $.domains[0].users[0]: expected a user name or an object such as {\"name\": \"finn\", "
        "\"password\": \"...\"}, found number");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": 25}])")).find("$.domains[0].listen: expected \"host:port\"") !=
        std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "policy": {"require_known_users": "yes"}}])")) ==
        "topo.json: $.domains[0].policy.require_known_users: expected true or false, found string");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "limits": {"recipients": -1}}])"))
            .find("$.domains[0].limits.recipients: expected a whole number") != std::string::npos);
  CHECK(error_of(with_domains(
                     R"([{"name": "a.com", "listen": "127.0.0.1:25", "limits": {"relay_connections_per_destination": 0}}])"))
            .find("$.domains[0].limits.relay_connections_per_destination: expected a whole number") !=
        std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "retry": {"first": "soon"}}])"))
            .find("$.domains[0].retry.first: expected a duration") != std::string::npos);
}

TEST_CASE("duplicates are refused, naming both places") {
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25"}, {"name": "A.com", "listen": "127.0.0.1:26"}])")) ==
        "topo.json: $.domains[1].name: duplicate domain \"a.com\" (also at $.domains[0].name)");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25"}, {"name": "b.com", "listen": "127.0.0.1:25"}])")) ==
        "topo.json: $.domains[1].listen: duplicate address 127.0.0.1:25 (also at $.domains[0].listen)");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "users": ["rey", "Rey"]}])")) ==
        "topo.json: $.domains[0].users[1]: duplicate user \"Rey\"");
}

TEST_CASE("values that would be unsafe or unreachable are refused") {
  // Only loopback: the simulation never listens beyond this machine.
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "10.0.0.1:25"}])")).find("loopback") != std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "0.0.0.0:25"}])")).find("loopback") != std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:70000"}])")).find("port") != std::string::npos);
  // Names that become folders.
  CHECK(error_of(R"({"name": "../x", "domains": [{"name": "a.com", "listen": "127.0.0.1:25"}]})").find("$.name") !=
        std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "../etc", "listen": "127.0.0.1:25"}])")).find("$.domains[0].name") !=
        std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "users": ["../root"]}])"))
            .find("$.domains[0].users[0]") != std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "users": ["a/b"]}])"))
            .find("$.domains[0].users[0]") != std::string::npos);
  // A typo is an error, not a silent default.
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "user": ["rey"]}])"))
            .find("$.domains[0].user: unknown field") != std::string::npos);
}

TEST_CASE("durations") {
  CHECK(parse_duration("250ms") == millis(250));
  CHECK(parse_duration("2s") == millis(2000));
  CHECK(parse_duration("5m") == millis(300000));
  CHECK(parse_duration("1h") == millis(3600000));
  CHECK(parse_duration("7") == millis(7000));
  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("s"));
  CHECK_FALSE(parse_duration("5 m"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration("99999999999999999999s"));
}

TEST_CASE("load_topology names an unreadable file") {
  try {
    load_topology("/nonexistent/topo.json");
    FAIL("expected an error");
  } catch (const topology_error& e) {
    CHECK(std::string(e.what()).find("/nonexistent/topo.json: cannot be read") == 0);
  }
}

// What `validate` passes, `up` must be able to run: each of these once
// passed and then broke `up` or `status`.
TEST_CASE("a domain named like a file or folder of the run folder is refused") {
  // Every name the launcher writes at the top of run/<name>/.
  const mailnet::launcher::run_folder folder("run/t");
  std::vector<std::string> names = {folder.topology_json().filename().string(),
                                    folder.network_json().filename().string(),
                                    folder.control_socket().filename().string(),
                                    folder.pid_file().filename().string(),
                                    folder.launcher_log().filename().string(),
                                    folder.scenario_marker().filename().string(),
                                    "network.json.tmp",  // network.json is written beside it, then renamed
                                    "resolver",
                                    "Launcher.PID",      // domain names are compared without regard to case
                                    "TOPOLOGY.json."};
  for (const auto& name : names) {
    CAPTURE(name);
    auto e = error_of(with_domains(R"([{"name": ")" + name + R"(", "listen": "127.0.0.1:25"}])"));
    CHECK(e.find("topo.json: $.domains[0].name: ") == 0);
    CHECK(e.find("run folder") != std::string::npos);
  }
  // Names that only look alike are fine.
  for (const std::string name : {"network-json.com", "resolver.com", "launcher.pid1", "sock.mailnet"}) {
    CAPTURE(name);
    CHECK(error_of(with_domains(R"([{"name": ")" + name + R"(", "listen": "127.0.0.1:25"}])")) == "");
  }
}

TEST_CASE("port 0 is refused: nobody could reach a node there") {
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:0"}])")) ==
        "topo.json: $.domains[0].listen: expected a port from 1 to 65535 in \"127.0.0.1:0\"");
  CHECK(error_of(R"({"name": "t", "resolver": {"listen": "[::1]:0"}, "domains": [{"name": "a.com", "listen": "127.0.0.1:25"}]})") ==
        "topo.json: $.resolver.listen: expected a port from 1 to 65535 in \"[::1]:0\"");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:00"}])")).find("from 1 to 65535") !=
        std::string::npos);
}

TEST_CASE("one address under two spellings is one address") {
  const std::vector<std::pair<std::string, std::string>> same = {
      {"[::1]:25", "[0:0:0:0:0:0:0:1]:25"},
      {"[::1]:25", "[0000:0000::0001]:25"},
      {"[::1]:25", "[::0:1]:25"},
      {"127.0.0.1:25", "localhost:25"},
      {"127.0.0.1:25", "127.0.0.1:025"},
  };
  for (const auto& [first, second] : same) {
    CAPTURE(second);
    auto e = error_of(with_domains(R"([{"name": "a.com", "listen": ")" + first + R"("}, {"name": "b.com", "listen": ")" +
                                   second + R"("}])"));
    CHECK(e.find("topo.json: $.domains[1].listen: duplicate address ") == 0);
    CHECK(e.find("(also at $.domains[0].listen)") != std::string::npos);
  }
  // Spellings the parser refuses never get that far.
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.000.000.001:25"}])")).find("loopback") !=
        std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "[::ffff:127.0.0.1]:25"}])")).find("loopback") !=
        std::string::npos);
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "[::]:25"}])")).find("loopback") != std::string::npos);
  // The stored form is the usual one, so status and the resolver show one spelling.
  auto t = parse_topology(with_domains(R"([{"name": "a.com", "listen": "[0:0:0:0:0:0:0:1]:25"}])"), "topo.json");
  CHECK(t.domains[0].listen == endpoint{"::1", 25});
  // Different loopback addresses may share a port.
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25"}, {"name": "b.com", "listen": "127.0.0.2:25"},
                                   {"name": "c.com", "listen": "[::1]:25"}])")) == "");
}

TEST_CASE("a domain on the resolver's address is refused") {
  // The resolver takes UDP and TCP on its port, so a node there could not start.
  CHECK(error_of(R"({"name": "t", "resolver": {"listen": "127.0.0.1:1053"},
                     "domains": [{"name": "a.com", "listen": "localhost:1053"}]})") ==
        "topo.json: $.domains[0].listen: 127.0.0.1:1053 is the resolver's address ($.resolver.listen: it takes UDP and "
        "TCP on that port)");
  CHECK(error_of(R"({"name": "t", "resolver": {"listen": "[::1]:1053"},
                     "domains": [{"name": "a.com", "listen": "[0::1]:1053"}]})")
            .find("$.domains[0].listen: [::1]:1053 is the resolver's address") != std::string::npos);
  // Without a resolver field the default address counts.
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:5353"}])")) ==
        "topo.json: $.domains[0].listen: 127.0.0.1:5353 is the resolver's address (the default of $.resolver.listen: "
        "it takes UDP and TCP on that port)");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.2:5353"}])")) == "");
}

TEST_CASE("resolver.ttl: whole seconds from 0 to 86400, 5 by default") {
  const std::string domains = R"(, "domains": [{"name": "a.com", "listen": "127.0.0.1:25"}]})";
  CHECK(parse_topology(R"({"name": "t")" + domains, "topo.json").resolver.ttl == 5);
  CHECK(parse_topology(R"({"name": "t", "resolver": {"ttl": 0})" + domains, "topo.json").resolver.ttl == 0);
  CHECK(parse_topology(R"({"name": "t", "resolver": {"ttl": 3600})" + domains, "topo.json").resolver.ttl == 3600);
  CHECK(error_of(R"({"name": "t", "resolver": {"ttl": "5s"})" + domains) ==
        "topo.json: $.resolver.ttl: expected a whole number from 0 to 86400, found string");
  CHECK(error_of(R"({"name": "t", "resolver": {"ttl": 86401})" + domains) ==
        "topo.json: $.resolver.ttl: expected a whole number from 0 to 86400, found 86401");
}

TEST_CASE("web: on at 127.0.0.1:8025 by default, a loopback address of its own, or off") {
  auto t = parse_topology(good, "topo.json");
  CHECK(t.web.enabled);
  CHECK(t.web.listen == endpoint{"127.0.0.1", 8025});
  CHECK(t.web.url() == "http://127.0.0.1:8025/");

  auto with_web = [](const std::string& web) {
    return R"({"name": "t", "web": )" + web + R"(, "domains": [{"name": "a.com", "listen": "127.0.0.1:25"}]})";
  };
  auto own = parse_topology(with_web(R"({"listen": "[::1]:9000"})"), "topo.json");
  CHECK(own.web.enabled);
  CHECK(own.web.url() == "http://[::1]:9000/");
  CHECK_FALSE(parse_topology(with_web("false"), "topo.json").web.enabled);
  CHECK(parse_topology(with_web("true"), "topo.json").web.enabled);

  CHECK(error_of(with_web(R"({"listen": "0.0.0.0:8025"})")) ==
        "topo.json: $.web.listen: expected \"host:port\" with a loopback host (127.0.0.0/8 or [::1]), found \"0.0.0.0:8025\"");
  CHECK(error_of(with_web(R"({"listen": "127.0.0.1:8025", "port": 1})")).find("$.web.port: unknown field") !=
        std::string::npos);
  CHECK(error_of(with_web(R"("127.0.0.1:8025")")).find("topo.json: $.web: expected false (no web server) or an object") == 0);
  // A domain on the web server's address (the default one too) is refused, unless the server is off.
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:8025"}])")) ==
        "topo.json: $.domains[0].listen: 127.0.0.1:8025 is the web server's address (the default of $.web.listen; "
        "choose another, or turn the web server off with \"web\": false)");
  CHECK(error_of(R"({"name": "t", "web": false, "domains": [{"name": "a.com", "listen": "127.0.0.1:8025"}]})") == "");
  CHECK(error_of(R"({"name": "t", "resolver": {"listen": "127.0.0.1:8025"}, "domains": [{"name": "a.com", "listen": "127.0.0.1:25"}]})")
            .find("$.resolver.listen: 127.0.0.1:8025 is both the resolver's address and the web server's") != std::string::npos);

  // Written out in full, and read back the same.
  for (const auto& web : {std::string("false"), std::string(R"({"listen": "127.0.0.2:8100"})")}) {
    auto first = parse_topology(with_web(web), "topo.json");
    CHECK(parse_topology(to_json_text(first), "again.json") == first);
  }
}

TEST_CASE("a node's part of the topology: its domain, the rules acting on it and the domains they name") {
  const auto net = parse_topology(R"({
    "name": "part", "resolver": { "listen": "127.0.0.1:1053" }, "web": { "listen": "127.0.0.1:1054" },
    "domains": [
      { "name": "a.test", "listen": "127.0.0.1:2001", "users": ["u"], "policy": { "sync": "files" } },
      { "name": "b.test", "listen": "127.0.0.1:2002" },
      { "name": "c.test", "listen": "127.0.0.1:2003" },
      { "name": "d.test", "listen": "127.0.0.1:2004" }
    ],
    "faults": { "seed": 7, "rules": [
      { "name": "from-c", "from": "c.test", "to": "a.test", "stage": "rcpt", "reply": "451 4.3.0 no" },
      { "name": "clients", "from": "clients", "to": "a.test", "stage": "mail", "reply": "451 4.3.0 no" },
      { "name": "other", "from": "a.test", "to": "b.test", "stage": "mail", "reply": "451 4.3.0 no" }
    ] }
  })", "t.json");
  const auto part = launcher::node_topology(net, "a.test");
  REQUIRE(part.domains.size() == 2);
  CHECK(part.domains[0] == net.domains[0]);  // its own, every setting kept
  CHECK(part.domains[1].name == "c.test");   // named by a rule acting on it
  REQUIRE(part.faults.rules.size() == 2);
  CHECK(part.faults.rules[0].name == "from-c");
  CHECK(part.faults.rules[1].name == "clients");
  CHECK(part.faults.seed == std::optional<std::uint64_t>(7));
  CHECK(part.resolver == net.resolver);
  CHECK(part.web == net.web);
  // What the node reads is a topology of its own, and the same once read back.
  CHECK(parse_topology(to_json_text(part), "part.json") == part);

  const auto lone = launcher::node_topology(net, "d.test");  // no rule for it
  REQUIRE(lone.domains.size() == 1);
  CHECK(lone.domains[0].name == "d.test");
  CHECK(lone.faults.rules.empty());
  CHECK(parse_topology(to_json_text(lone), "lone.json") == lone);

  // "tls": false reaches the node (it reads its certificate only at the first STARTTLS).
  auto no_tls = net;
  no_tls.tls = false;
  CHECK_FALSE(launcher::node_topology(no_tls, "a.test").tls);
  CHECK(launcher::node_topology(net, "a.test").tls);
}

TEST_CASE("a node's part of the topology keeps every network-level setting: \"tls\": false reaches the node") {
  const std::string text = R"({
    "name": "plain", "resolver": { "listen": "127.0.0.1:1053" }, "web": false, "tls": false,
    "domains": [ { "name": "a.test", "listen": "127.0.0.1:2001" }, { "name": "b.test", "listen": "127.0.0.1:2002" } ]
  })";
  const auto net = parse_topology(text, "t.json");
  REQUIRE_FALSE(net.tls);
  for (const char* domain : {"a.test", "b.test"}) {
    const auto part = launcher::node_topology(net, domain);
    CHECK_FALSE(part.tls);  // otherwise its relay wants verified TLS that no node offers
    // What the node reads from <run>/<domain>/topology.json.
    CHECK_FALSE(parse_topology(to_json_text(part), "part.json").tls);
    // Nothing network-level differs from the whole: only domains and rules are narrowed.
    auto whole = net;
    whole.domains = part.domains;
    whole.faults.rules = part.faults.rules;
    CHECK(part == whole);
  }
  auto with_tls = net;
  with_tls.tls = true;
  CHECK(launcher::node_topology(with_tls, "a.test").tls);
}

TEST_CASE("users with passwords and the submission listener: read, named when wrong, round trip") {
  auto t = parse_topology(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "submission": "127.0.0.1:2",
                                            "users": ["rey", {"name": "finn", "password": "pass word!"}, {"name": "poe"}]}])"),
                          "topo.json");
  const auto& d = t.domains[0];
  CHECK(d.users == std::vector<std::string>{"rey", "finn", "poe"});
  CHECK(d.passwords == std::map<std::string, std::string>{{"finn", "pass word!"}});
  REQUIRE(d.submission);
  CHECK(d.submission->to_string() == "127.0.0.1:2");
  CHECK(parse_topology(to_json_text(t), "network.json") == t);

  auto users = [](const std::string& list) {
    return error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "users": )" + list + "}]"));
  };
  CHECK(users(R"([{"name": "finn", "password": ""}])") ==
        "topo.json: $.domains[0].users[0].password: expected 1 to 128 printable ASCII characters other than ':' "
        "(the password is not shown here)");
  CHECK(users(R"(["rey", {"name": "finn", "password": "a:b"}])").find("$.domains[0].users[1].password: ") != std::string::npos);
  CHECK(users(R"([{"name": "finn", "password": 7}])") == "topo.json: $.domains[0].users[0].password: expected a string, found number");
  CHECK(users(R"([{"password": "x"}])") == "topo.json: $.domains[0].users[0].name: missing (expected the user's name)");
  CHECK(users(R"([{"name": "finn", "pasword": "x"}])").find("$.domains[0].users[0]") != std::string::npos);
  CHECK(users(R"(["finn", {"name": "FINN", "password": "x"}])") == "topo.json: $.domains[0].users[1]: duplicate user \"FINN\"");
  CHECK(users(R"([true])").find("topo.json: $.domains[0].users[0]: expected a user name or an object") == 0);

  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "submission": "127.0.0.1:1"}])")) ==
        "topo.json: $.domains[0].submission: duplicate address 127.0.0.1:1 (also at $.domains[0].listen)");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "submission": "127.0.0.1:3"},
                                  {"name": "b.com", "listen": "127.0.0.1:3"}])")) ==
        "topo.json: $.domains[1].listen: duplicate address 127.0.0.1:3 (also at $.domains[0].submission)");
  CHECK(error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:1", "submission": "10.0.0.1:3"}])"))
            .find("topo.json: $.domains[0].submission: ") == 0);
  CHECK(error_of(R"({"name": "t", "tls": false, "domains": [{"name": "a.com", "listen": "127.0.0.1:1",
                                                              "submission": "127.0.0.1:2"}]})")
            .find("topo.json: $.domains[0].submission: submission requires STARTTLS") == 0);
}

TEST_CASE("dns spf, dmarc and dkim: defaults for every domain, overrides, false, and defaults.dns") {
  auto t = parse_topology(R"({"name": "t", "defaults": {"dns": {"dmarc": "v=DMARC1; p=quarantine"}}, "domains": [
    {"name": "jaku.com", "listen": "127.0.1.1:25"},
    {"name": "six.test", "listen": "[::1]:2525"},
    {"name": "own.test", "listen": "127.0.0.1:2526",
     "dns": {"spf": "v=spf1 ?all", "dmarc": false, "dkim": {"selector": "Lesson1"}}},
    {"name": "none.test", "listen": "127.0.0.1:2527", "dns": {"spf": false, "dkim": false}}]})",
                          "topo.json");
  const auto& jaku = t.domains[0].dns;
  CHECK(jaku.spf == std::optional<std::string>("v=spf1 ip4:127.0.1.1 -all"));  // the node's own address
  CHECK(jaku.dmarc == std::optional<std::string>("v=DMARC1; p=quarantine"));   // from defaults.dns
  REQUIRE(jaku.dkim);
  CHECK(jaku.dkim->selector == "mailnet");
  CHECK(jaku.dkim->public_key.empty());  // `up` writes it in
  CHECK(t.domains[1].dns.spf == std::optional<std::string>("v=spf1 ip6:::1 -all"));
  const auto& own = t.domains[2].dns;
  CHECK(own.spf == std::optional<std::string>("v=spf1 ?all"));
  CHECK_FALSE(own.dmarc);
  CHECK(own.dkim->selector == "lesson1");  // DNS names are lower case
  CHECK_FALSE(t.domains[3].dns.spf);
  CHECK_FALSE(t.domains[3].dns.dkim);
  CHECK(t.domains[3].dns.dmarc == std::optional<std::string>("v=DMARC1; p=quarantine"));

  // Built-in defaults without a "defaults" block.
  auto plain = parse_topology(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25"}])"), "topo.json");
  CHECK(plain.domains[0].dns.dmarc == std::optional<std::string>("v=DMARC1; p=reject; adkim=r; aspf=r"));

  // The resolved form round-trips, a public key included.
  t.domains[0].dns.dkim->public_key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA+/=";
  const auto text = to_json_text(t);
  CHECK(text.find(R"("spf": false)") != std::string::npos);
  CHECK(text.find(R"("dkim": false)") != std::string::npos);
  auto again = parse_topology(text, "network.json");
  CHECK(again == t);
  CHECK(to_json_text(again) == text);
}

TEST_CASE("dns spf, dmarc and dkim: a mistake is named by file and field") {
  auto one = [](const std::string& dns) {
    return error_of(with_domains(R"([{"name": "a.com", "listen": "127.0.0.1:25", "dns": )" + dns + "}]"));
  };
  CHECK(one(R"({"spf": true})") ==
        "topo.json: $.domains[0].dns.spf: expected the record's text such as \"v=spf1 ip4:127.0.0.1 -all\", or false "
        "for none, found boolean");
  CHECK(one(R"({"dmarc": 5})").find("topo.json: $.domains[0].dns.dmarc: expected the record's text") == 0);
  CHECK(one(R"({"spf": "v=spf1\u0001"})") ==
        "topo.json: $.domains[0].dns.spf: control characters are not allowed in a TXT value");
  CHECK(one(R"({"dmarc": ")" + std::string(4001, 'x') + R"("})") ==
        "topo.json: $.domains[0].dns.dmarc: a TXT value of at most 4000 bytes, found 4001");
  CHECK(one(R"({"dkim": true})") ==
        "topo.json: $.domains[0].dns.dkim: expected false (no signing, no key) or an object such as "
        "{\"selector\": \"mailnet\"}, found boolean");
  CHECK(one(R"({"dkim": {"selector": "a b"}})").find("topo.json: $.domains[0].dns.dkim.selector: expected DNS labels") == 0);
  CHECK(one(R"({"dkim": {"selector": "s", "key": "x"}})").find("topo.json: $.domains[0].dns.dkim.key: unknown field") == 0);
  CHECK(one(R"({"dkim": {"public_key": "not base64!"}})").find("topo.json: $.domains[0].dns.dkim.public_key: expected base64") == 0);
  CHECK(one(R"({"dkm": false})").find("topo.json: $.domains[0].dns.dkm: unknown field") == 0);
  // An alias is alone at its name: not where the DMARC or DKIM record is, unless that is off.
  CHECK(one(R"({"records": [{"name": "_dmarc.a.com", "type": "CNAME", "value": "b.com"}]})") ==
        "topo.json: $.domains[0].dns.records[0].name: a CNAME cannot be at _dmarc.a.com, which has the domain's DMARC "
        "record (\"dmarc\": false removes it)");
  CHECK(one(R"({"records": [{"name": "mailnet._domainkey.a.com", "type": "CNAME", "value": "b.com"}]})")
            .find("topo.json: $.domains[0].dns.records[0].name: a CNAME cannot be at mailnet._domainkey.a.com") == 0);
  CHECK(one(R"({"dmarc": false, "records": [{"name": "_dmarc.a.com", "type": "CNAME", "value": "b.com"}]})") == "");
  // Records are per domain: not in defaults.
  CHECK(error_of(R"({"name": "t", "defaults": {"dns": {"records": []}}, "domains": [{"name": "a.com", "listen": "127.0.0.1:25"}]})")
            .find("topo.json: $.defaults.dns.records: unknown field") == 0);
  const std::string long_domain = std::string(60, 'a') + "." + std::string(60, 'b') + "." + std::string(60, 'c') + ".com";
  CHECK(error_of(with_domains(R"([{"name": ")" + long_domain + R"(", "listen": "127.0.0.1:25", "dns": {"dkim": {"selector": ")" +
                              std::string(60, 's') + R"("}}}])"))
            .find("$.domains[0].dns.dkim.selector: \"" + std::string(60, 's')) != std::string::npos);
}
