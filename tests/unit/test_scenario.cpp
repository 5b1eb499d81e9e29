#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/topology.hpp"
#include "launcher/graph.hpp"
#include "launcher/scenario.hpp"

using namespace mailnet;
using namespace mailnet::launcher;
using nlohmann::json;

namespace {

const char* base = R"({
  "name": "sw",
  "resolver": {"listen": "127.0.0.1:1053"},
  "domains": [
    {"name": "jaku.com", "listen": "127.0.0.1:1025", "users": ["rey", "Obiwan"]},
    {"name": "deathstar.com", "listen": "127.0.0.1:1030", "users": ["vader"]}
  ]
})";

std::vector<step> steps_of(const std::string& steps_json) {
  auto net = parse_topology(base, "sc.json");
  json doc = json::parse(base);
  doc["steps"] = json::parse(steps_json);
  return parse_steps(doc, "sc.json", net, "/nonexistent");
}

std::string error_of(const std::string& steps_json) {
  try {
    steps_of(steps_json);
    return "";
  } catch (const topology_error& e) {
    return e.what();
  }
}

}  // namespace

TEST_CASE("every step kind parses and describes itself") {
  auto steps = steps_of(R"([
    {"send": {"from": "vader@deathstar.com", "to": ["obiwan@jaku.com"], "cc": "rey@jaku.com", "subject": "Plans"}},
    {"kill": "deathstar.com"},
    {"restart": "resolver"},
    {"wait": "250ms"},
    {"wait": {"until": {"queue": "jaku.com", "count": 1}, "timeout": "5s"}},
    {"expect": {"mailbox": "jaku.com/OBIWAN", "count": 2}},
    {"expect": {"mailbox": "obiwan@jaku.com", "subject": "Plans", "within": "3s"}},
    {"expect": {"mailbox": "jaku.com/rey", "attachment": "plans.txt"}},
    {"expect": {"bounce": "deathstar.com/vader", "status": "5.1.2"}},
    {"expect": {"resolve": "deathstar.com", "answer": "127.0.0.1:1030"}}
  ])");
  REQUIRE(steps.size() == 10);
  CHECK(steps[0].describe() == "send vader@deathstar.com → obiwan@jaku.com, rey@jaku.com \"Plans\"");
  CHECK(steps[1].describe() == "kill deathstar.com");
  CHECK(steps[2].describe() == "restart resolver");
  CHECK(steps[3].describe() == "wait 250ms");
  CHECK(steps[4].describe() == "wait until jaku.com's queue holds 1 message(s) (at most 5s)");
  CHECK(steps[5].describe() == "expect obiwan@jaku.com holds 2 message(s)");  // user name as configured, lower-cased
  CHECK(std::get<expect_step>(steps[6].action).within == millis(3000));
  CHECK(steps[7].describe() == "expect rey@jaku.com has a message with attachment plans.txt");
  CHECK(steps[8].describe() == "expect vader@deathstar.com has a bounce with Status 5.1.2");
  CHECK(steps[9].describe() == "expect the resolver answers deathstar.com → 127.0.0.1:1030");
  CHECK(steps[9].path == "$.steps[9]");
}

TEST_CASE("bad steps are named by their JSON path") {
  CHECK(error_of(R"({"kill": "x"})") == "sc.json: $.steps: expected a list of steps, found object");
  CHECK(error_of(R"([{"explode": "jaku.com"}])").find("sc.json: $.steps[0].explode: unknown action") == 0);
  CHECK(error_of(R"([{"kill": "jaku.com", "stop": "jaku.com"}])").find("$.steps[0]: expected exactly one action") !=
        std::string::npos);
  CHECK(error_of(R"([{"kill": "genshinimpact.com"}])").find("$.steps[0].kill: expected \"resolver\" or a domain") !=
        std::string::npos);
  CHECK(error_of(R"([{"send": {"to": "rey@jaku.com"}}])") == "sc.json: $.steps[0].send.from: missing (expected the sender's address)");
  CHECK(error_of(R"([{"send": {"from": "vader@deathstar.com"}}])").find("$.steps[0].send.to: missing") != std::string::npos);
  CHECK(error_of(R"([{"send": {"from": "vader", "to": "rey@jaku.com"}}])").find("$.steps[0].send.from: expected a mail address") !=
        std::string::npos);
  CHECK(error_of(R"([{"send": {"from": "vader@deathstar.com", "to": "rey@jaku.com", "attach": ["missing.jpg"]}}])")
            .find("$.steps[0].send.attach[0]: no such file") != std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/luke", "count": 1}}])").find("$.steps[0].expect.mailbox: no user \"luke\"") !=
        std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey"}}])").find("needs count, subject or attachment") != std::string::npos);
  CHECK(error_of(R"([{"expect": {"bounce": "jaku.com/rey"}}])").find("$.steps[0].expect.status: missing") != std::string::npos);
  CHECK(error_of(R"([{"expect": {"queue": "resolver", "count": 0}}])").find("the resolver has no queue") != std::string::npos);
  CHECK(error_of(R"([{"wait": "soon"}])").find("$.steps[0].wait: expected a duration") != std::string::npos);
  CHECK(error_of(R"([{"wait": {"until": {"queue": "jaku.com", "count": 1}, "timeout": "x"}}])")
            .find("$.steps[0].wait.timeout") != std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey", "count": -3}}])").find("$.steps[0].expect.count") !=
        std::string::npos);
}

TEST_CASE("a mailbox expectation may name a folder and the Authentication-Results it wants") {
  auto steps = steps_of(R"([
    {"expect": {"mailbox": "jaku.com/rey/Junk", "count": 1}},
    {"expect": {"mailbox": "jaku.com/rey", "subject": "Plans", "auth": "SPF=pass  dkim=pass dmarc=pass"}}
  ])");
  REQUIRE(steps.size() == 2);
  const auto& junk = std::get<expect_step>(steps[0].action).what;
  CHECK(junk.box.folder == ".Junk");
  CHECK(steps[0].describe() == "expect rey@jaku.com (Junk) holds 1 message(s)");
  const auto& plans = std::get<expect_step>(steps[1].action).what;
  CHECK(plans.auth == std::vector<std::string>{"spf=pass", "dkim=pass", "dmarc=pass"});
  CHECK(steps[1].describe() == "expect rey@jaku.com has a message with subject \"Plans\" and spf=pass dkim=pass dmarc=pass");

  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey/../x", "count": 1}}])").find("$.steps[0].expect.mailbox") !=
        std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey/", "count": 1}}])").find("$.steps[0].expect.mailbox") !=
        std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey", "count": 1, "auth": "spf=pass"}}])")
            .find("$.steps[0].expect.auth: only a mailbox expectation with a subject") != std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey", "subject": "x", "auth": "spf pass"}}])")
            .find("$.steps[0].expect.auth: expected results such as") != std::string::npos);
  CHECK(error_of(R"([{"expect": {"mailbox": "jaku.com/rey", "subject": "x", "auth": " "}}])")
            .find("$.steps[0].expect.auth") != std::string::npos);
}

TEST_CASE("Authentication-Results are read from the receiving node's own header, comments and folding aside") {
  const std::string raw =
      "Authentication-Results: jaku.com; spf=fail (sender 127.0.0.1 not allowed;\r\n"
      "\tdkim=pass in a comment) smtp.mailfrom=vader@deathstar.com;\r\n"
      "  dkim=none; DMARC=fail header.from=deathstar.com\r\n"
      "Authentication-Results: deathstar.com; spf=pass smtp.mailfrom=vader@deathstar.com; dkim=pass; dmarc=pass\r\n"
      "Subject: hi\r\n"
      "\r\n"
      "Authentication-Results: jaku.com; spf=pass\r\n";  // in the body: not a header
  std::string found;
  CHECK(auth_results_hold(raw, "jaku.com", {"spf=fail", "dmarc=fail"}, found));
  CHECK(found == "spf=fail dkim=none dmarc=fail");
  CHECK_FALSE(auth_results_hold(raw, "jaku.com", {"dkim=pass"}, found));
  CHECK(auth_results_hold(raw, "DeathStar.com", {"spf=pass", "dkim=pass", "dmarc=pass"}, found));
  CHECK_FALSE(auth_results_hold(raw, "naboo.com", {"spf=pass"}, found));
  CHECK(found == "no Authentication-Results from naboo.com");
}

TEST_CASE("graph: DOT and Mermaid, with relay counts as edge labels") {
  auto net = parse_topology(base, "sc.json");
  std::vector<relay_count> counts{{"jaku.com", "deathstar.com", 3}};
  auto dot = render_graph(net, counts, graph_format::dot);
  CHECK(dot.find("digraph \"sw\" {") == 0);
  CHECK(dot.find("\"jaku.com\" [label=\"jaku.com\\n127.0.0.1:1025\\nrey, Obiwan\"];") != std::string::npos);
  CHECK(dot.find("\"jaku.com\" -> \"deathstar.com\" [label=\"3\"];") != std::string::npos);
  CHECK(dot.find("\"resolver\" [shape=ellipse") != std::string::npos);
  CHECK(dot.back() == '\n');
  auto mermaid = render_graph(net, counts, graph_format::mermaid);
  CHECK(mermaid.find("graph LR\n") == 0);
  CHECK(mermaid.find("n0 -->|3| n1") != std::string::npos);
  CHECK(mermaid.find("n1[\"deathstar.com<br/>127.0.0.1:1030<br/>vader\"]") != std::string::npos);
  auto plain = render_graph(net, {}, graph_format::dot);
  CHECK(plain.find(" -> \"deathstar.com\"") == std::string::npos);
}
