#include <doctest/doctest.h>

#include <string>

#include "common/topology.hpp"
#include "launcher/imap_config.hpp"

using namespace mailnet;

namespace {

std::string error_of(const std::string& text) {
  try {
    parse_topology(text, "topo.json");
    return "";
  } catch (const topology_error& e) {
    return e.what();
  }
}

std::string with_access(const std::string& fields) {
  return R"({"name": "t", "resolver": {"listen": "127.0.0.1:1053"}, "web": {"listen": "127.0.0.1:1080"},)" + fields +
         R"(, "domains": [{"name": "jaku.com", "listen": "127.0.0.1:1025", "users": ["Rey", {"name": "finn", "password": "a b"}]}]})";
}

}  // namespace

TEST_CASE("imap and pop3: read, round trip, errors naming the field") {
  const auto t = parse_topology(with_access(R"("imap": {"listen": "127.0.0.1:1143", "restart": "on-failure"},
                                               "pop3": {"listen": "[::1]:1110"})"),
                                "topo.json");
  REQUIRE(t.mail_access.imap);
  CHECK(t.mail_access.imap->to_string() == "127.0.0.1:1143");
  CHECK(t.mail_access.pop3->to_string() == "[::1]:1110");
  CHECK(t.mail_access.restart_on_failure);
  CHECK(parse_topology(to_json_text(t), "network.json") == t);
  const auto none = parse_topology(with_access(R"("imap": false)"), "topo.json");
  CHECK_FALSE(none.mail_access.enabled());
  CHECK(parse_topology(to_json_text(none), "network.json") == none);

  CHECK(error_of(with_access(R"("imap": {"listen": "192.168.1.1:1143"})")).starts_with("topo.json: $.imap.listen: "));
  CHECK(error_of(with_access(R"("imap": {"listen": "127.0.0.1:1025"})")) ==
        "topo.json: $.domains[0].listen: duplicate address 127.0.0.1:1025 (also at $.imap.listen)");
  CHECK(error_of(with_access(R"("pop3": {"listen": "127.0.0.1:1053"})")).starts_with(
      "topo.json: $.pop3.listen: 127.0.0.1:1053 is the resolver's address"));
  CHECK(error_of(with_access(R"("pop3": {"listen": "127.0.0.1:1080"})")).starts_with(
      "topo.json: $.pop3.listen: 127.0.0.1:1080 is the web server's address"));
  CHECK(error_of(with_access(R"("imap": {"listen": "127.0.0.1:1143", "tls": true})")).starts_with("topo.json: $.imap"));
  CHECK(error_of(with_access(R"("imap": {})")).starts_with("topo.json: $.imap.listen: missing"));
}

TEST_CASE("Dovecot's configuration: listeners, TLS, Maildirs, users by lower-case login") {
  auto t = parse_topology(with_access(R"("imap": {"listen": "127.0.0.1:1143"})"), "topo.json");
  launcher::dovecot_identity who{"dovecot", "dovecot", 103, 107, true};
  const auto conf = launcher::dovecot_config_text("/r/t", t, who);
  CHECK(conf.find("protocols = imap\n") != std::string::npos);
  CHECK(conf.find("    address = 127.0.0.1\n    port = 1143\n") != std::string::npos);
  CHECK(conf.find("service pop3-login {\n  chroot =\n  inet_listener pop3 {\n    address = 127.0.0.1\n    port = 0\n") !=
        std::string::npos);
  CHECK(conf.find("ssl_cert = </r/t/tls/imap.pem\n") != std::string::npos);
  CHECK(conf.find("mail_location = maildir:/r/t/%d/mail/%{userdb:box}:INDEX=/r/t/imap/index/%d/%n") != std::string::npos);
  CHECK(conf.find("mail_uid = dovecot\n") != std::string::npos);
  CHECK(conf.find("first_valid_uid = 103\n") != std::string::npos);
  t.tls = false;
  CHECK(launcher::dovecot_config_text("/r/t", t, who).find("ssl = no\n") != std::string::npos);

  const std::vector<password_entry> pw{{"Rey", "jaku.com", "x1"}, {"finn", "jaku.com", "a b"}, {"x", "gone.com", "y"}};
  const auto users = launcher::dovecot_users_text("/r/t", pw, t);
  CHECK(users.find("\nrey@jaku.com:{PLAIN}x1::::::userdb_box=Rey\n") != std::string::npos);
  CHECK(users.find("\nfinn@jaku.com:{PLAIN}a b::::::userdb_box=finn\n") != std::string::npos);
  CHECK(users.find("gone.com") == std::string::npos);

  CHECK(launcher::dovecot_path_problem("/tmp/mailnet-e2e-ab_c/run").empty());
  CHECK(launcher::dovecot_path_problem("/home/a b/run").find("' '") != std::string::npos);
  CHECK(launcher::dovecot_path_problem("/home/a%d/run").find("'%'") != std::string::npos);
  CHECK(launcher::dovecot_path_problem("/" + std::string(80, 'a')).find("too long") != std::string::npos);
}
