#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "launcher/web/web_api.hpp"

using namespace mailnet::launcher::web;
using json = nlohmann::json;

namespace {

json sample_status() {
  return json::parse(R"({"name": "n", "dir": "/r", "launcher_pid": 7, "web": "http://127.0.0.1:9/",
    "nodes": [{"name": "resolver", "state": "ready", "pid": 8, "listen": "127.0.0.1:53", "restarts": 0},
              {"name": "a.com", "state": "killed", "pid": 0, "listen": "127.0.0.1:25", "restarts": 2,
               "received": 5, "delivered": 4, "relayed": 1, "queued": 3, "bounced": 0},
              {"name": "we\"ird\\x\ny", "state": "ready", "pid": 9, "listen": "127.0.0.1:26", "restarts": 0,
               "received": 0, "delivered": 0, "relayed": 0, "queued": 0, "bounced": 0}]})");
}

}  // namespace

TEST_CASE("the network document sets the resolver apart from the domains") {
  const json doc = network_document(sample_status(), 12.7);
  CHECK(doc["name"] == "n");
  CHECK(doc["folder"] == "/r");
  CHECK(doc["uptime_s"] == 12);
  CHECK(doc["web"] == "http://127.0.0.1:9/");
  CHECK(doc["resolver"]["pid"] == 8);
  REQUIRE(doc["nodes"].size() == 2);
  CHECK(doc["nodes"][0]["name"] == "a.com");
  CHECK(doc["nodes"][0]["queued"] == 3);
}

TEST_CASE("Prometheus text: one sample per node and family, labels escaped") {
  const std::string text = prometheus_text(sample_status(), 1.5);
  CHECK(text.find("# TYPE mailnet_received_total counter\n") != std::string::npos);
  CHECK(text.find("mailnet_received_total{domain=\"a.com\"} 5\n") != std::string::npos);
  CHECK(text.find("mailnet_queued_messages{domain=\"a.com\"} 3\n") != std::string::npos);
  CHECK(text.find("mailnet_node_up{node=\"a.com\"} 0\n") != std::string::npos);
  CHECK(text.find("mailnet_node_up{node=\"resolver\"} 1\n") != std::string::npos);
  CHECK(text.find("mailnet_node_restarts_total{node=\"a.com\"} 2\n") != std::string::npos);
  CHECK(text.find("mailnet_received_total{domain=\"resolver\"}") == std::string::npos);  // the resolver holds no mail
  // A backslash, a quote and a newline in a label value are escaped (the exposition format's rules).
  CHECK(text.find("mailnet_node_up{node=\"we\\\"ird\\\\x\\ny\"} 1\n") != std::string::npos);
  CHECK(text.find("mailnet_web_uptime_seconds 1.500\n") != std::string::npos);
}
