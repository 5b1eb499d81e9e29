// The node's TLS contexts are made at first use, not at its start: the files
// are read then, and a part that cannot be made is told once and stays
// unavailable. (The STARTTLS answer, 454 4.7.0, is in tests/e2e/test_tls.py.)
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/topology.hpp"
#include "launcher/tls_ca.hpp"
#include "node/smtp_channel.hpp"
#include "temp_dir.hpp"

using namespace mailnet;

namespace {

topology one_domain() {
  return parse_topology(R"({"name": "t", "domains": [{"name": "jaku.com", "listen": "127.0.0.1:1025"}]})", "t.json");
}

}  // namespace

TEST_CASE("lazy_tls: nothing is read until first use; the files written after the node started are used") {
  test::temp_dir run("lazy_tls");
  std::vector<std::string> problems;
  auto tls = node::lazy_tls(launcher::tls_folder(run.path), "jaku.com",
                            [&](const std::string& p) { problems.push_back(p); });
  // The certificates come after the setup was made: a node that read them at
  // its start would have found nothing.
  launcher::prepare_network_tls(run.path, one_domain());
  CHECK(node::can_serve_tls(tls.get()));
  CHECK(node::can_verify_tls(tls.get()));
  CHECK(problems.empty());
}

TEST_CASE("lazy_tls: a missing certificate is told once, at the first use, and stays unavailable") {
  test::temp_dir run("lazy_tls_missing");
  launcher::prepare_network_tls(run.path, one_domain());
  std::filesystem::remove(launcher::tls_folder(run.path) / "node.jaku.com.pem");
  std::vector<std::string> problems;
  auto tls = node::lazy_tls(launcher::tls_folder(run.path), "jaku.com",
                            [&](const std::string& p) { problems.push_back(p); });
  CHECK(problems.empty());  // not at creation
  CHECK_FALSE(node::can_serve_tls(tls.get()));
  CHECK_FALSE(node::can_serve_tls(tls.get()));
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("no certificate for STARTTLS") != std::string::npos);
  CHECK(problems[0].find("node.jaku.com.pem") != std::string::npos);
  CHECK(node::can_verify_tls(tls.get()));  // the CA is there: relaying with verification still works
  CHECK(problems.size() == 1);
}
