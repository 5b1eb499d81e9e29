// The node side of the wire: query bytes out, reply bytes in, checked
// against replies from the resolver's own zone and against doctored ones.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/topology.hpp"
#include "common/dns/dns_message.hpp"
#include "resolver/zone.hpp"

using namespace mailnet;
using namespace mailnet::node;
using bytes = std::vector<std::uint8_t>;

namespace {

const resolver::zone& test_zone() {
  static const resolver::zone z(parse_topology(R"({"name":"t","domains":[
    {"name":"jaku.com","listen":"127.0.0.1:1025","users":["rey"]},
    {"name":"deathstar.com","listen":"[::1]:1030","users":["vader"]}]})",
                                               "test.json"));
  return z;
}

// The resolver's reply to the node's query.
bytes reply_to(std::uint16_t id, const std::string& name, std::uint16_t type) {
  auto reply = resolver::answer_query(test_zone(), make_query(id, name, type));
  REQUIRE(reply.has_value());
  return *reply;
}

}  // namespace

TEST_CASE("dns message: make_query writes one question, RD clear, the given id") {
  const auto q = make_query(0x1234, "_smtp._tcp.jaku.com", dns_type::srv);
  REQUIRE(q.size() == 12 + 21 + 4);
  CHECK(q[0] == 0x12);
  CHECK(q[1] == 0x34);
  CHECK(q[2] == 0x00);  // QR=0, QUERY, RD=0
  CHECK(q[5] == 1);     // QDCOUNT
  CHECK(q[7] == 0);
  CHECK(q[9] == 0);
  CHECK(q[11] == 0);
  CHECK(q[12] == 5);  // "_smtp"
  CHECK(q[q.size() - 3] == 33);  // SRV
  CHECK(q[q.size() - 1] == 1);   // IN
  CHECK(make_query(1, "jaku.com.", dns_type::mx) == make_query(1, "jaku.com", dns_type::mx));
}

TEST_CASE("dns message: only plain host names are asked about") {
  for (const char* good : {"jaku.com", "jaku.com.", "_smtp._tcp.a-b.c0m", "x"}) {
    CAPTURE(good);
    CHECK(is_queryable_name(good));
  }
  const std::string label64(64, 'a');
  const std::string name254 = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
                              std::string(62, 'd');
  CHECK(name254.size() == 254);
  for (const std::string& bad : std::vector<std::string>{"", ".", "a..b", ".a", "a b.com", "a\\.b", "jaku.com..", "[127.0.0.1]", "a/b",
                                std::string("a\0b", 3), label64 + ".com", name254}) {
    CAPTURE(bad);
    CHECK_FALSE(is_queryable_name(bad));
    CHECK_THROWS_AS(make_query(1, bad, dns_type::a), std::invalid_argument);
  }
}

TEST_CASE("dns message: SRV answer with glue") {
  const auto r = parse_response(reply_to(7, "_smtp._tcp.jaku.com", dns_type::srv), 7, "_smtp._tcp.jaku.com",
                                dns_type::srv);
  REQUIRE(r);
  CHECK(r->kind == reply_kind::answer);
  REQUIRE(r->srv.size() == 1);
  CHECK(r->srv[0].priority == 0);
  CHECK(r->srv[0].weight == 0);
  CHECK(r->srv[0].port == 1025);
  CHECK(r->srv[0].target == "mx.jaku.com");
  REQUIRE(r->addresses.size() == 1);
  CHECK(r->addresses[0].owner == "mx.jaku.com");
  CHECK(r->addresses[0].address == "127.0.0.1");
  CHECK(r->ttl == 60);
}

TEST_CASE("dns message: MX, A and AAAA answers") {
  auto mx = parse_response(reply_to(8, "Jaku.COM", dns_type::mx), 8, "jaku.com", dns_type::mx);
  REQUIRE(mx);
  CHECK(mx->kind == reply_kind::answer);
  REQUIRE(mx->mx.size() == 1);
  CHECK(mx->mx[0].preference == 10);
  CHECK(mx->mx[0].exchange == "mx.jaku.com");

  auto a = parse_response(reply_to(9, "mx.jaku.com", dns_type::a), 9, "mx.jaku.com", dns_type::a);
  REQUIRE(a);
  REQUIRE(a->addresses.size() == 1);
  CHECK(a->addresses[0].address == "127.0.0.1");

  auto aaaa = parse_response(reply_to(10, "mx.deathstar.com", dns_type::aaaa), 10, "mx.deathstar.com", dns_type::aaaa);
  REQUIRE(aaaa);
  REQUIRE(aaaa->addresses.size() == 1);
  CHECK(aaaa->addresses[0].address == "::1");
}

TEST_CASE("dns message: NXDOMAIN and NODATA carry the negative TTL from the SOA") {
  auto nx = parse_response(reply_to(11, "genshinimpact.com", dns_type::mx), 11, "genshinimpact.com", dns_type::mx);
  REQUIRE(nx);
  CHECK(nx->kind == reply_kind::nxdomain);
  CHECK(nx->ttl == 60);

  auto nodata = parse_response(reply_to(12, "jaku.com", dns_type::a), 12, "jaku.com", dns_type::a);
  REQUIRE(nodata);
  CHECK(nodata->kind == reply_kind::nodata);
  CHECK(nodata->ttl == 60);
  CHECK(nodata->detail.find("no A records") != std::string::npos);
}

TEST_CASE("dns message: datagrams that are not our reply are ignored") {
  const auto good = reply_to(13, "jaku.com", dns_type::mx);
  CHECK_FALSE(parse_response(good, 14, "jaku.com", dns_type::mx));          // another id
  CHECK_FALSE(parse_response(good, 13, "deathstar.com", dns_type::mx));     // another name
  CHECK_FALSE(parse_response(good, 13, "jaku.com", dns_type::srv));         // another type
  CHECK_FALSE(parse_response(make_query(13, "jaku.com", dns_type::mx), 13, "jaku.com", dns_type::mx));  // a query
  CHECK_FALSE(parse_response(bytes(good.begin(), good.begin() + 11), 13, "jaku.com", dns_type::mx));
  CHECK_FALSE(parse_response(bytes{}, 13, "jaku.com", dns_type::mx));
}

TEST_CASE("dns message: error rcodes, truncation and garbage with our id are failures") {
  const auto good = reply_to(15, "jaku.com", dns_type::mx);
  for (int rcode : {2, 4, 5, 1, 9}) {
    CAPTURE(rcode);
    auto doctored = good;
    doctored[3] = static_cast<std::uint8_t>((doctored[3] & 0xF0) | rcode);
    auto r = parse_response(doctored, 15, "jaku.com", dns_type::mx);
    REQUIRE(r);
    CHECK(r->kind == reply_kind::failure);
  }
  auto truncated_flag = good;
  truncated_flag[2] |= 0x02;
  auto tc = parse_response(truncated_flag, 15, "jaku.com", dns_type::mx);
  REQUIRE(tc);
  CHECK(tc->kind == reply_kind::failure);
  CHECK(tc->detail.find("truncated") != std::string::npos);

  auto cut = parse_response(bytes(good.begin(), good.end() - 3), 15, "jaku.com", dns_type::mx);
  REQUIRE(cut);
  CHECK(cut->kind == reply_kind::failure);
  CHECK(cut->detail.find("malformed") != std::string::npos);
}

TEST_CASE("dns message: glue for names that are not targets is not believed") {
  // The SRV reply with its glue renamed: the additional A now belongs to mx.jakv.com.
  auto reply = reply_to(16, "_smtp._tcp.jaku.com", dns_type::srv);
  bool renamed = false;
  for (std::size_t i = reply.size() - 1; i > 12 && !renamed; --i) {
    // The last "jaku" on the wire is the glue owner (the answer's target is
    // compressed against it or before it).
    if (reply[i - 3] == 'j' && reply[i - 2] == 'a' && reply[i - 1] == 'k' && reply[i] == 'u') {
      reply[i] = 'v';
      renamed = true;
    }
  }
  REQUIRE(renamed);
  auto r = parse_response(reply, 16, "_smtp._tcp.jaku.com", dns_type::srv);
  REQUIRE(r);
  REQUIRE(r->kind == reply_kind::answer);
  for (const auto& a : r->addresses) CHECK(a.owner == r->srv.at(0).target);
}
