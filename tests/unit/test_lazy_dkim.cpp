// The node's DKIM signer is made at the first message to sign, not at its
// start (node/lazy_dkim.hpp): the key is read then, and a key that cannot be
// used is told once, naming the file and why, and stays unavailable. (The
// node's log lines and the unsigned mail are tests/e2e/test_dkim_signing.py's.)
#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/private_files.hpp"
#include "common/topology.hpp"
#include "launcher/dkim_keys.hpp"
#include "node/dkim_signer.hpp"
#include "node/lazy_dkim.hpp"
#include "temp_dir.hpp"

using namespace mailnet;

namespace {

topology one_domain() {
  return parse_topology(R"({"name": "t", "domains": [{"name": "jaku.com", "listen": "127.0.0.1:2025"}]})", "t.json");
}

const std::string message =
    "From: Rey <rey@jaku.com>\r\nTo: vader@deathstar.com\r\nSubject: lazy\r\n"
    "Date: Thu, 03 Dec 2026 09:00:00 +0000\r\n\r\nbody\r\n";

}  // namespace

TEST_CASE("lazy_dkim: nothing is read until the first signature; a key written after it was made is used") {
  test::temp_dir run("lazy_dkim");
  make_private_folders(run.path, "jaku.com");
  const auto key_file = launcher::dkim_key_file(run.path, "jaku.com");
  std::vector<std::string> problems;
  node::lazy_dkim lazy("jaku.com", "mailnet", key_file, [&](const std::string& p) { problems.push_back(p); });
  // The key comes after the holder was made: a node that read it at its
  // start would have found no file.
  auto net = one_domain();
  launcher::prepare_dkim_keys(run.path, net);
  const node::dkim_signer* signer = lazy.signer();
  REQUIRE_MESSAGE(signer != nullptr, lazy.problem());
  CHECK(lazy.signer() == signer);  // made once
  const auto r = signer->sign(message, "Q");
  CHECK_MESSAGE(r.header.rfind("DKIM-Signature: v=1; a=rsa-sha256;", 0) == 0, r.error);
  CHECK(problems.empty());
  CHECK(lazy.problem().empty());
}

TEST_CASE("lazy_dkim: a broken key is told once, at the first use, naming the file; it stays unavailable") {
  test::temp_dir run("lazy_dkim_broken");
  make_private_folders(run.path, "jaku.com");
  const auto key_file = launcher::dkim_key_file(run.path, "jaku.com");
  write_private_file(key_file, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
  std::mutex mutex;
  std::vector<std::string> problems;
  node::lazy_dkim lazy("jaku.com", "mailnet", key_file, [&](const std::string& p) {
    std::lock_guard lock(mutex);
    problems.push_back(p);
  });
  CHECK(problems.empty());  // nothing read yet
  // The disk pool's threads may all reach the first message at once.
  std::vector<int> none(4, 0);  // 1: that thread got no signer
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < none.size(); ++i) threads.emplace_back([&, i] { none[i] = lazy.signer() == nullptr; });
  }
  CHECK(none == std::vector<int>(4, 1));
  REQUIRE(problems.size() == 1);
  CHECK(problems[0] == lazy.problem());
  CHECK(problems[0].find("cannot use " + key_file.string() + ": ") == 0);
  CHECK(problems[0].find("not a PEM private key") != std::string::npos);

  // A good key later is not taken up: the node decided at its first use, as
  // it does for its TLS files; a restart reads the key again.
  auto net = one_domain();
  launcher::prepare_dkim_keys(run.path, net);  // replaces the unusable key
  CHECK(lazy.signer() == nullptr);
  CHECK(problems.size() == 1);

  // A missing file says so, with its name.
  node::lazy_dkim missing("jaku.com", "mailnet", run.path / "jaku.com" / "gone.key", nullptr);
  CHECK(missing.signer() == nullptr);
  CHECK(missing.problem().find("gone.key") != std::string::npos);
}
