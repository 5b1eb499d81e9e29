// DKIM without a network: the keys `up` makes (launcher/dkim_keys.hpp), the
// node's signer (node/dkim_signer.hpp) and its reading of the author domain.
// Verification against the resolver is tests/e2e/test_dkim_signing.py's.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <string>

#include "common/private_files.hpp"
#include "common/topology.hpp"
#include "launcher/dkim_keys.hpp"
#include "node/auth_service.hpp"
#include "node/dkim_signer.hpp"
#include "temp_dir.hpp"

using namespace mailnet;

namespace {

topology three_domains() {
  return parse_topology(R"({"name": "t", "domains": [
    {"name": "jaku.com", "listen": "127.0.0.1:2025"},
    {"name": "deathstar.com", "listen": "127.0.0.1:2026"},
    {"name": "off.test", "listen": "127.0.0.1:2027", "dns": {"dkim": false}}]})",
                        "t.json");
}

// jaku.com alone, with its key made as `up` makes it in a fresh run folder.
struct jaku_with_key {
  test::temp_dir run;
  topology net = three_domains();
  explicit jaku_with_key(const char* name) : run(name) {
    make_private_folders(run.path, "jaku.com");
    net.domains.resize(1);
    launcher::prepare_dkim_keys(run.path, net);
  }
  node::dkim_signer signer() const {
    return node::dkim_signer("jaku.com", "mailnet",
                             read_private_file(launcher::dkim_key_file(run.path, "jaku.com"), 1 << 16));
  }
};

mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("dkim keys: made 0600 whatever the umask, kept when usable, made again when not") {
  test::temp_dir run("dkim_keys");
  for (const char* d : {"jaku.com", "deathstar.com", "off.test"}) make_private_folders(run.path, d);
  auto net = three_domains();
  const mode_t old_umask = ::umask(0);
  launcher::prepare_dkim_keys(run.path, net);
  ::umask(old_umask);
  const auto jaku_key = launcher::dkim_key_file(run.path, "jaku.com");
  CHECK(mode_of(jaku_key) == 0600);
  CHECK_FALSE(std::filesystem::exists(launcher::dkim_key_file(run.path, "off.test")));
  const auto first = net.domains[0].dns.dkim->public_key;
  CHECK(first.rfind("MIIBIjAN", 0) == 0);  // the SubjectPublicKeyInfo of an RSA-2048 key
  CHECK(first.size() == 392);
  CHECK(net.domains[1].dns.dkim->public_key != first);  // a key of its own

  auto again = three_domains();
  launcher::prepare_dkim_keys(run.path, again);
  CHECK(again.domains[0].dns.dkim->public_key == first);

  // A key too short to keep (or not a key at all) is replaced.
  write_private_file(jaku_key, "not a key\n");
  auto third = three_domains();
  launcher::prepare_dkim_keys(run.path, third);
  CHECK(third.domains[0].dns.dkim->public_key != first);
  CHECK(third.domains[0].dns.dkim->public_key.size() == 392);
}

TEST_CASE("dkim signer: a relaxed/relaxed rsa-sha256 signature of the listed fields, folded with CRLF") {
  const jaku_with_key jaku("dkim_sign");
  const node::dkim_signer signer = jaku.signer();
  const std::string message =
      "Received: from x\r\n\tby jaku.com (mailnet) with ESMTP id Q\r\n\tThu, 03 Dec 2026 05:00:00 +0000\r\n"
      "From: Rey <rey@jaku.com>\r\nTo: vader@deathstar.com\r\nSubject: folded\r\n\tsubject\r\n"
      "Message-ID: <m@jaku.com>\r\nDate: Thu, 03 Dec 2026 05:00:00 +0000\r\n\r\nbody\r\n";
  const auto r = signer.sign(message, "Q");
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  CHECK(r.header.rfind("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=jaku.com;", 0) == 0);
  CHECK(r.header.find(" s=mailnet;") != std::string::npos);
  CHECK(r.header.find("h=From:To:Subject:Message-ID:Date:from;") != std::string::npos);  // From oversigned; no Received
  CHECK(r.header.size() < 1000);
  CHECK(r.header.ends_with("\r\n"));
  for (std::size_t i = 0; i < r.header.size(); ++i)
    if (r.header[i] == '\n') CHECK(r.header[i - 1] == '\r');  // no bare LF
  for (std::size_t at = r.header.find("\r\n"); at + 2 < r.header.size(); at = r.header.find("\r\n", at + 2))
    CHECK((r.header[at + 2] == '\t' || r.header[at + 2] == ' '));  // folded, one field

  // A key that is not one is refused when the signer is made (the node logs
  // dkim_unavailable and sends unsigned), before libopendkim reads it.
  CHECK_THROWS_WITH_AS(node::dkim_signer("jaku.com", "mailnet",
                                         "-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n"),
                       doctest::Contains("not a PEM private key"), std::runtime_error);
  CHECK_THROWS_WITH_AS(node::dkim_signer("jaku.com", "mailnet", "no key at all"),
                       doctest::Contains("not a PEM private key"), std::runtime_error);
}

TEST_CASE("dkim signer: its signatures verify against the key `up` publishes, and fail for another message") {
  // libopendkim, verifying, with the key as the resolver would serve it.
  const jaku_with_key jaku("dkim_verify");
  const node::dkim_signer signer = jaku.signer();
  const std::string record = "v=DKIM1; k=rsa; p=" + jaku.net.domains[0].dns.dkim->public_key;
  node::auth_checker checker([&](const std::string& name, std::uint16_t type) {
    node::dns_reply r;
    r.kind = node::reply_kind::nxdomain;
    if (node::canonical_name(name) == "mailnet._domainkey.jaku.com" && type == node::dns_type::txt) {
      r.kind = node::reply_kind::answer;
      r.texts = {record};
    }
    return r;
  });
  for (int i = 0; i < 3; ++i) {  // the same signer again: the key is read anew by libopendkim each time
    const std::string message = "From: Rey <rey@jaku.com>\r\nTo: vader@deathstar.com\r\nSubject: plans " +
                                std::to_string(i) + "\r\nMessage-ID: <m" + std::to_string(i) +
                                "@jaku.com>\r\n\r\nThe plans are in the droid.\r\n";
    const auto r = signer.sign(message, "Q" + std::to_string(i));
    REQUIRE_MESSAGE(r.error.empty(), r.error);
    const std::string signed_message = r.header + message;
    const auto verdict = checker.check({"127.0.0.1", "jaku.com", "rey@jaku.com", signed_message});
    REQUIRE(verdict.dkim.size() == 1);
    CHECK_MESSAGE(verdict.dkim[0].result == "pass", verdict.dkim[0].detail);
    CHECK(verdict.dkim[0].domain == "jaku.com");
    std::string altered = signed_message;
    altered.replace(altered.find("droid"), 5, "drone");
    CHECK(checker.check({"127.0.0.1", "jaku.com", "rey@jaku.com", altered}).dkim.at(0).result == "fail");
  }
}

TEST_CASE("author domain: the one From address's domain, lower case") {
  using node::author_domain;
  CHECK(author_domain("From: rey@Jaku.COM\r\n\r\nx") == "jaku.com");
  CHECK(author_domain("Subject: s\r\nfrom: \"Rey <rey@evil.test>, x\" <rey@jaku.com>\r\n\r\n") == "jaku.com");
  CHECK(author_domain("From: Rey (of <rey@evil.test>) <rey@jaku.com.>\r\n\r\n") == "jaku.com");
  CHECK(author_domain("From:\r\n\t<rey@jaku.com>\r\n\r\n") == "jaku.com");  // folded
  CHECK(author_domain("From: a@jaku.com, b@jaku.com\r\n\r\n").empty());  // two authors
  CHECK(author_domain("From: a@jaku.com\r\nFrom: b@jaku.com\r\n\r\n").empty());  // two From fields
  CHECK(author_domain("Subject: no from\r\n\r\nFrom: a@jaku.com\r\n").empty());  // the body is not read
  CHECK(author_domain("From: nobody\r\n\r\n").empty());
}
