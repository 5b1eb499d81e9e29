// The resolver's answers, bytes in and bytes out, with no socket: every kind
// of good question, checked by decoding the reply with ldns.
#include <doctest/doctest.h>
// ldns/common.h defines bool, true and false as macros unless stdbool.h came
// first, and those macros break every standard header included after it.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/topology.hpp"
#include "common/dns/dns_message.hpp"
#include "common/dns/zone_records.hpp"
#include "resolver/zone.hpp"

using namespace mailnet;
using mailnet::resolver::answer_query;
using mailnet::resolver::handle_query;
using mailnet::resolver::zone;

namespace {

const char* topology_json = R"({"name":"t","resolver":{"listen":"127.0.0.1:5353"},"domains":[
  {"name":"jaku.com","listen":"127.0.0.1:1025","users":["rey","finn"]},
  {"name":"deathstar.com","listen":"[::1]:1030","users":["vader"]}]})";

const zone& test_zone() {
  static const zone z(parse_topology(topology_json, "test.json"));
  return z;
}

std::string take(char* text) {
  std::string s = text ? text : "";
  std::free(text);
  return s;
}

// A reply decoded into what the tests look at; RRs as ldns prints them, tabs as spaces.
struct decoded {
  std::uint16_t id = 0;
  bool qr = false, aa = false, tc = false, rd = false, ra = false, edns = false;
  int rcode = -1;
  int opcode = -1;
  std::uint16_t edns_udp = 0;
  std::uint8_t edns_ext_rcode = 0;
  std::string question, answer, authority, additional;  // RRs joined by " | "
};

std::string rr_texts(const ldns_rr_list* list) {
  std::string out;
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(list); ++i) {
    std::string s = take(ldns_rr2str(ldns_rr_list_rr(list, i)));
    for (auto& c : s)
      if (c == '\t') c = ' ';
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    out += (out.empty() ? "" : " | ") + s;
  }
  return out;
}

decoded decode(const std::vector<std::uint8_t>& wire) {
  ldns_pkt* p = nullptr;
  REQUIRE(ldns_wire2pkt(&p, wire.data(), wire.size()) == LDNS_STATUS_OK);
  decoded d;
  d.id = ldns_pkt_id(p);
  d.qr = ldns_pkt_qr(p);
  d.aa = ldns_pkt_aa(p);
  d.tc = ldns_pkt_tc(p);
  d.rd = ldns_pkt_rd(p);
  d.ra = ldns_pkt_ra(p);
  d.rcode = ldns_pkt_get_rcode(p);
  d.opcode = ldns_pkt_get_opcode(p);
  d.edns = ldns_pkt_edns(p);
  d.edns_udp = ldns_pkt_edns_udp_size(p);
  d.edns_ext_rcode = ldns_pkt_edns_extended_rcode(p);
  d.question = rr_texts(ldns_pkt_question(p));
  d.answer = rr_texts(ldns_pkt_answer(p));
  d.authority = rr_texts(ldns_pkt_authority(p));
  d.additional = rr_texts(ldns_pkt_additional(p));
  ldns_pkt_free(p);
  return d;
}

// A query built by ldns with the knobs the tests need.
std::vector<std::uint8_t> query(const std::string& name, ldns_rr_type type, std::uint16_t id = 0x1234,
                                bool rd = false, ldns_rr_class klass = LDNS_RR_CLASS_IN, int edns_version = -1,
                                std::uint16_t edns_udp = 4096) {
  ldns_pkt* p = ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), type, klass, rd ? LDNS_RD : 0);
  REQUIRE(p != nullptr);
  ldns_pkt_set_id(p, id);
  if (edns_version >= 0) {
    ldns_pkt_set_edns_udp_size(p, edns_udp);
    ldns_pkt_set_edns_version(p, static_cast<std::uint8_t>(edns_version));
    ldns_pkt_set_edns_do(p, true);
  }
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  REQUIRE(ldns_pkt2wire(&data, p, &size) == LDNS_STATUS_OK);
  std::vector<std::uint8_t> wire(data, data + size);
  std::free(data);
  ldns_pkt_free(p);
  return wire;
}

decoded ask(const std::vector<std::uint8_t>& q) {
  auto reply = answer_query(test_zone(), q);
  REQUIRE(reply.has_value());
  return decode(*reply);
}

const std::string soa = ". 60 IN SOA ns.mailnet. hostmaster.mailnet. 1 3600 600 86400 60";

}  // namespace

TEST_CASE("resolver zone: SRV _smtp._tcp gives port and target, with the target's address as glue") {
  const auto d = ask(query("_smtp._tcp.jaku.com.", LDNS_RR_TYPE_SRV, 0xBEEF));
  CHECK(d.id == 0xBEEF);
  CHECK(d.qr);
  CHECK(d.aa);
  CHECK_FALSE(d.tc);
  CHECK_FALSE(d.ra);
  CHECK(d.opcode == LDNS_PACKET_QUERY);
  CHECK(d.rcode == LDNS_RCODE_NOERROR);
  CHECK(d.question == "_smtp._tcp.jaku.com. IN SRV");
  CHECK(d.answer == "_smtp._tcp.jaku.com. 60 IN SRV 0 0 1025 mx.jaku.com.");
  CHECK(d.authority.empty());
  CHECK(d.additional == "mx.jaku.com. 60 IN A 127.0.0.1");
  CHECK_FALSE(d.edns);  // no OPT asked, none given
}

TEST_CASE("resolver zone: MX gives preference 10 and mx.<domain>") {
  const auto d = ask(query("jaku.com.", LDNS_RR_TYPE_MX));
  CHECK(d.rcode == LDNS_RCODE_NOERROR);
  CHECK(d.aa);
  CHECK(d.answer == "jaku.com. 60 IN MX 10 mx.jaku.com.");
  CHECK(d.additional == "mx.jaku.com. 60 IN A 127.0.0.1");
}

TEST_CASE("resolver zone: A for the mail host, AAAA when it listens on ::1") {
  CHECK(ask(query("mx.jaku.com.", LDNS_RR_TYPE_A)).answer ==
        "mx.jaku.com. 60 IN A 127.0.0.1");
  CHECK(ask(query("mx.deathstar.com.", LDNS_RR_TYPE_AAAA)).answer ==
        "mx.deathstar.com. 60 IN AAAA ::1");
  const auto srv = ask(query("_smtp._tcp.deathstar.com.", LDNS_RR_TYPE_SRV));
  CHECK(srv.answer == "_smtp._tcp.deathstar.com. 60 IN SRV 0 0 1030 mx.deathstar.com.");
  CHECK(srv.additional == "mx.deathstar.com. 60 IN AAAA ::1");
  // The ::1 host has no A: NODATA.
  const auto a = ask(query("mx.deathstar.com.", LDNS_RR_TYPE_A));
  CHECK(a.rcode == LDNS_RCODE_NOERROR);
  CHECK(a.answer.empty());
  CHECK(a.authority == soa);
}

TEST_CASE("resolver zone: names are matched without regard to case, and the question keeps its case") {
  const auto d = ask(query("_SMTP._Tcp.JAKU.Com.", LDNS_RR_TYPE_SRV));
  CHECK(d.rcode == LDNS_RCODE_NOERROR);
  CHECK(d.question == "_SMTP._Tcp.JAKU.Com. IN SRV");
  CHECK(d.answer.find(" IN SRV 0 0 1025 ") != std::string::npos);
}

TEST_CASE("resolver zone: unknown names are NXDOMAIN with the root SOA") {
  for (const char* name : {"genshinimpact.com.", "www.jaku.com.", "mx.genshinimpact.com.", "_smtp._tcp.nowhere.org.",
                           "jaku.com.evil.", "xjaku.com."}) {
    CAPTURE(name);
    const auto d = ask(query(name, LDNS_RR_TYPE_SRV));
    CHECK(d.rcode == LDNS_RCODE_NXDOMAIN);
    CHECK(d.aa);
    CHECK(d.answer.empty());
    CHECK(d.authority == soa);
    CHECK(d.additional.empty());
  }
}

TEST_CASE("resolver zone: a known name without the asked type is NODATA with the SOA") {
  for (auto [name, type] : std::vector<std::pair<const char*, ldns_rr_type>>{
           {"jaku.com.", LDNS_RR_TYPE_A},
           {"jaku.com.", LDNS_RR_TYPE_AAAA},
           {"mx.jaku.com.", LDNS_RR_TYPE_TXT},
           {"mx.jaku.com.", LDNS_RR_TYPE_MX},
           {"mx.jaku.com.", LDNS_RR_TYPE_AAAA},
           {"_smtp._tcp.jaku.com.", LDNS_RR_TYPE_A},
           {"_tcp.jaku.com.", LDNS_RR_TYPE_SRV},  // empty non-terminal (RFC 8020)
           {"com.", LDNS_RR_TYPE_A},
           {".", LDNS_RR_TYPE_NS}}) {
    CAPTURE(name);
    const auto d = ask(query(name, type));
    CHECK(d.rcode == LDNS_RCODE_NOERROR);
    CHECK(d.aa);
    CHECK(d.answer.empty());
    CHECK(d.authority == soa);
  }
}

TEST_CASE("resolver zone: SOA at the root, and ANY gives every record of a name") {
  CHECK(ask(query(".", LDNS_RR_TYPE_SOA)).answer == soa);
  const auto any = ask(query("jaku.com.", LDNS_RR_TYPE_ANY));
  CHECK(any.answer == "jaku.com. 60 IN MX 10 mx.jaku.com. | jaku.com. 60 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"");
}

TEST_CASE("resolver zone: SPF, DMARC and DKIM records by default, none where the topology says false") {
  // The defaults: SPF names the node's own address (ip6: for IPv6), DMARC
  // p=reject with relaxed alignment; DKIM only once a public key is known.
  CHECK(ask(query("jaku.com.", LDNS_RR_TYPE_TXT)).answer == "jaku.com. 60 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"");
  CHECK(ask(query("deathstar.com.", LDNS_RR_TYPE_TXT)).answer ==
        "deathstar.com. 60 IN TXT \"v=spf1 ip6:::1 -all\"");
  CHECK(ask(query("_dmarc.jaku.com.", LDNS_RR_TYPE_TXT)).answer ==
        "_dmarc.jaku.com. 60 IN TXT \"v=DMARC1; p=reject; adkim=r; aspf=r\"");
  CHECK(ask(query("mailnet._domainkey.jaku.com.", LDNS_RR_TYPE_TXT)).rcode == LDNS_RCODE_NXDOMAIN);

  auto t = parse_topology(R"({"name":"t","domains":[
    {"name":"jaku.com","listen":"127.0.1.1:25","dns":{"dkim":{"selector":"s1"}}},
    {"name":"off.test","listen":"127.0.1.2:25","dns":{"spf":false,"dmarc":false,"dkim":false}},
    {"name":"own.test","listen":"127.0.1.3:25","dns":{"spf":"v=spf1 ?all","dmarc":"v=DMARC1; p=none"}}]})",
                          "auth.json");
  const std::string key(400, 'A');  // longer than one character-string
  t.domains[0].dns.dkim->public_key = key;
  const zone z(t);
  auto txt = [&](const std::string& name) {
    auto reply = answer_query(z, query(name, LDNS_RR_TYPE_TXT));
    REQUIRE(reply.has_value());
    return decode(*reply);
  };
  const std::string text = "v=DKIM1; k=rsa; p=" + key;
  CHECK(txt("s1._domainkey.jaku.com.").answer == "s1._domainkey.jaku.com. 60 IN TXT \"" + text.substr(0, 255) +
                                                   "\" \"" + text.substr(255) + "\"");
  CHECK(txt("jaku.com.").answer == "jaku.com. 60 IN TXT \"v=spf1 ip4:127.0.1.1 -all\"");
  for (const char* name : {"off.test.", "_dmarc.off.test.", "mailnet._domainkey.off.test."}) {
    CAPTURE(name);
    CHECK(txt(name).answer.empty());
  }
  CHECK(txt("own.test.").answer == "own.test. 60 IN TXT \"v=spf1 ?all\"");
  CHECK(txt("_dmarc.own.test.").answer == "_dmarc.own.test. 60 IN TXT \"v=DMARC1; p=none\"");
  CHECK(txt("mailnet._domainkey.own.test.").answer.empty());  // no key written in: no record
}

TEST_CASE("resolver zone: RD is copied, RA never set") {
  const auto d = ask(query("jaku.com.", LDNS_RR_TYPE_MX, 7, true));
  CHECK(d.rd);
  CHECK_FALSE(d.ra);
  CHECK(d.id == 7);
  CHECK_FALSE(ask(query("jaku.com.", LDNS_RR_TYPE_MX, 8, false)).rd);
}

TEST_CASE("resolver zone: EDNS queries get an OPT back; other versions get BADVERS") {
  const auto d = ask(query("jaku.com.", LDNS_RR_TYPE_MX, 1, false, LDNS_RR_CLASS_IN, 0));
  CHECK(d.rcode == LDNS_RCODE_NOERROR);
  CHECK(d.edns);
  CHECK(d.edns_udp == 1232);
  CHECK(d.answer.find(" IN MX 10 ") != std::string::npos);

  const auto bad = ask(query("jaku.com.", LDNS_RR_TYPE_MX, 2, false, LDNS_RR_CLASS_IN, 1));
  CHECK(bad.edns);
  CHECK(bad.edns_ext_rcode == 1);  // 16 = BADVERS (RFC 6891 §6.1.3)
  CHECK(bad.rcode == 0);
  CHECK(bad.answer.empty());
}

TEST_CASE("resolver zone: other classes are REFUSED, zone transfers NOTIMP") {
  const auto chaos = ask(query("version.bind.", LDNS_RR_TYPE_TXT, 3, false, LDNS_RR_CLASS_CH));
  CHECK(chaos.rcode == LDNS_RCODE_REFUSED);
  CHECK_FALSE(chaos.aa);
  CHECK(chaos.id == 3);
  CHECK(ask(query("jaku.com.", LDNS_RR_TYPE_AXFR)).rcode == LDNS_RCODE_NOTIMPL);
}

TEST_CASE("resolver zone: the outcome carries what the log line shows") {
  auto q = query("_smtp._tcp.jaku.com.", LDNS_RR_TYPE_SRV);
  auto o = handle_query(test_zone(), q);
  CHECK(o.name == "_smtp._tcp.jaku.com");
  CHECK(o.type == "SRV");
  CHECK(o.rcode == "NOERROR");
  CHECK(o.answer == "mx.jaku.com:1025");
  CHECK(o.reason.empty());

  o = handle_query(test_zone(), query("genshinimpact.com.", LDNS_RR_TYPE_MX));
  CHECK(o.name == "genshinimpact.com");
  CHECK(o.rcode == "NXDOMAIN");
  CHECK(o.answer == "-");

  o = handle_query(test_zone(), query("jaku.com.", LDNS_RR_TYPE_MX));
  CHECK(o.answer == "10 mx.jaku.com");
  o = handle_query(test_zone(), query("mx.deathstar.com.", LDNS_RR_TYPE_AAAA));
  CHECK(o.answer == "::1");
}

TEST_CASE("resolver zone: a TTL of the zone's choosing") {
  const zone z(parse_topology(topology_json, "test.json"), 5);
  auto reply = answer_query(z, query("jaku.com.", LDNS_RR_TYPE_MX));
  REQUIRE(reply);
  const auto d = decode(*reply);
  CHECK(d.answer == "jaku.com. 5 IN MX 10 mx.jaku.com.");
  CHECK(z.soa_text() == ". 5 IN SOA ns.mailnet. hostmaster.mailnet. 1 3600 600 86400 5");
}

TEST_CASE("resolver zone: the node's own query bytes are answered") {
  // Both ends of the wire in one place: the client's encoder, the server's decoder.
  const auto q = node::make_query(0x4242, "_smtp._tcp.jaku.com", node::dns_type::srv);
  const auto d = ask(q);
  CHECK(d.id == 0x4242);
  CHECK(d.answer == "_smtp._tcp.jaku.com. 60 IN SRV 0 0 1025 mx.jaku.com.");
}

TEST_CASE("an address shared by many domains has at most ten PTR names") {
  std::string json = R"({"name":"t","resolver":{"listen":"127.0.0.1:5353"},"domains":[)";
  for (int i = 0; i < 12; ++i)
    json += std::string(i ? "," : "") + R"({"name":"d)" + std::to_string(i) + R"(.test","listen":"127.0.0.1:)" +
            std::to_string(2000 + i) + R"(","users":["u"]})";
  json += "]}";
  const auto records = zone_records(parse_topology(json, "many.json"));
  int ptrs = 0;
  for (const auto& r : records)
    if (zone_type_name(r.type) == "PTR") {
      CHECK(r.name == "1.0.0.127.in-addr.arpa.");
      ++ptrs;
    }
  CHECK(ptrs == 10);
}
