// Bad DNS packets as raw bytes (RFC 1035 §4.1, RFC 6891 §6.1.1, RFC 9267):
// each one is dropped or answered FORMERR/NOTIMP with the id echoed, in
// bounded time, and never crashes the resolver.
#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "common/topology.hpp"
#include "resolver/query_check.hpp"
#include "resolver/zone.hpp"

using namespace mailnet;
using mailnet::resolver::handle_query;
using mailnet::resolver::zone;
using bytes = std::vector<std::uint8_t>;

namespace {

const zone& test_zone() {
  static const zone z(parse_topology(
      R"({"name":"t","domains":[{"name":"jaku.com","listen":"127.0.0.1:1025","users":["rey"]}]})", "test.json"));
  return z;
}

// Header with id 0xABCD, RD set, and the given counts.
bytes header(std::uint16_t qd, std::uint16_t an = 0, std::uint16_t ns = 0, std::uint16_t ar = 0,
             std::uint8_t flags = 0x01) {
  auto hi = [](std::uint16_t v) { return static_cast<std::uint8_t>(v >> 8); };
  auto lo = [](std::uint16_t v) { return static_cast<std::uint8_t>(v & 0xFF); };
  return {0xAB, 0xCD, flags, 0x00, hi(qd), lo(qd), hi(an), lo(an), hi(ns), lo(ns), hi(ar), lo(ar)};
}

bytes operator+(bytes a, std::initializer_list<int> more) {
  for (int b : more) a.push_back(static_cast<std::uint8_t>(b));
  return a;
}

bytes operator+(bytes a, const bytes& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// `count` labels of `size` octets each, without the final root label.
bytes labels(int count, int size) {
  bytes out;
  for (int i = 0; i < count; ++i) {
    out.push_back(static_cast<std::uint8_t>(size));
    out.insert(out.end(), static_cast<std::size_t>(size), 'a');
  }
  return out;
}

const std::initializer_list<int> a_in = {0, 1, 0, 1};  // QTYPE A, QCLASS IN
const std::initializer_list<int> jaku = {4, 'j', 'a', 'k', 'u', 3, 'c', 'o', 'm', 0};

struct reply_header {
  std::uint16_t id;
  bool qr;
  int opcode;
  bool rd;
  int rcode;
  std::uint16_t qdcount, ancount, nscount, arcount;
};

reply_header read_header(const bytes& r) {
  REQUIRE(r.size() >= 12);
  auto u16 = [&](std::size_t at) { return static_cast<std::uint16_t>((r[at] << 8) | r[at + 1]); };
  return {u16(0), (r[2] & 0x80) != 0, (r[2] >> 3) & 0x0F, (r[2] & 1) != 0, r[3] & 0x0F, u16(4), u16(6), u16(8), u16(10)};
}

void expect_dropped(const bytes& packet) {
  const auto outcome = handle_query(test_zone(), packet);
  CHECK_FALSE(outcome.reply.has_value());
  CHECK_FALSE(outcome.reason.empty());
}

void expect_rcode(const bytes& packet, int rcode) {
  const auto outcome = handle_query(test_zone(), packet);
  REQUIRE(outcome.reply.has_value());
  const auto h = read_header(*outcome.reply);
  CHECK(h.id == 0xABCD);
  CHECK(h.qr);
  CHECK(h.rcode == rcode);
  CHECK(h.rd);
  CHECK(h.qdcount == 0);  // a body we would not read is not echoed
  CHECK(h.ancount == 0);
  CHECK(h.nscount == 0);
  CHECK(h.arcount == 0);
  CHECK_FALSE(outcome.reason.empty());
}

void expect_formerr(const bytes& packet) { expect_rcode(packet, 1); }

}  // namespace

TEST_CASE("resolver malformed: the good packet the others are made from is answered") {
  const auto outcome = handle_query(test_zone(), header(1) + jaku + a_in);
  REQUIRE(outcome.reply);
  CHECK(read_header(*outcome.reply).rcode == 0);
  CHECK(read_header(*outcome.reply).qdcount == 1);
}

TEST_CASE("resolver malformed: shorter than a header is dropped") {
  expect_dropped({});
  expect_dropped({0xAB});
  const auto full = header(1);
  expect_dropped(bytes(full.begin(), full.begin() + 11));
}

TEST_CASE("resolver malformed: a response (QR=1) is dropped, never answered") {
  expect_dropped(header(1, 0, 0, 0, 0x81) + jaku + a_in);
  expect_dropped(header(0, 0, 0, 0, 0x80));
}

TEST_CASE("resolver malformed: opcodes other than QUERY get NOTIMP with the opcode echoed") {
  for (int opcode : {1, 2, 4, 5, 15}) {
    CAPTURE(opcode);
    const auto packet = header(1, 0, 0, 0, static_cast<std::uint8_t>(0x01 | (opcode << 3))) + jaku + a_in;
    expect_rcode(packet, 4);
    CHECK(read_header(*handle_query(test_zone(), packet).reply).opcode == opcode);
  }
}

TEST_CASE("resolver malformed: zero or several questions") {
  expect_formerr(header(0));
  expect_formerr(header(0, 0, 0, 0) + jaku + a_in);
  expect_formerr(header(2) + jaku + a_in);
  expect_formerr(header(2) + jaku + a_in + jaku + a_in);
  expect_formerr(header(0xFFFF) + jaku + a_in);
}

TEST_CASE("resolver malformed: counts larger than the packet") {
  expect_formerr(header(1));  // a question announced, none present
  expect_formerr(header(1, 5) + jaku + a_in);
  expect_formerr(header(1, 0, 1) + jaku + a_in);
  expect_formerr(header(1, 0, 0, 0xFFFF) + jaku + a_in);
  expect_formerr(header(0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF) + jaku + a_in);
}

TEST_CASE("resolver malformed: compression pointer loops") {
  expect_formerr(header(1) + bytes{0xC0, 12} + a_in);                    // points at itself
  expect_formerr(header(1) + bytes{0xC0, 14, 0xC0, 12} + a_in);          // two pointers, each at the other
  expect_formerr(header(1) + bytes{1, 'a', 0xC0, 12} + a_in);            // a label, then back to it
  expect_formerr(header(1) + bytes{1, 'a', 1, 'b', 0xC0, 14} + a_in);    // back into its own middle
}

TEST_CASE("resolver malformed: compression pointers out of bounds, forward, or into the header") {
  expect_formerr(header(1) + bytes{0xC0, 200} + a_in);
  expect_formerr(header(1) + bytes{0xFF, 0xFF} + a_in);
  expect_formerr(header(1) + bytes{0xC0, 0} + a_in);
  expect_formerr(header(1) + bytes{0xC0, 4} + a_in);
  // Forward: ldns 1.8.3 accepts this one, RFC 9267 §2 does not.
  expect_formerr(header(1) + bytes{0xC0, 18} + a_in + jaku);
  expect_formerr(header(1) + bytes{0xC0});  // half a pointer
}

TEST_CASE("resolver malformed: label lengths 0x40 to 0xBF") {
  for (int length : {0x40, 0x41, 0x7F, 0x80, 0xA0, 0xBF}) {
    CAPTURE(length);
    bytes packet = header(1);
    packet.push_back(static_cast<std::uint8_t>(length));
    packet.insert(packet.end(), 0x40, 'a');
    expect_formerr(packet + bytes{0} + a_in);
  }
}

TEST_CASE("resolver malformed: names over 255 octets, and exactly 255 is fine") {
  // 3 x 64 + 62 + 1 = 255 octets on the wire: the longest legal name, unknown here.
  const auto longest = header(1) + labels(3, 63) + labels(1, 61) + bytes{0} + a_in;
  const auto ok = handle_query(test_zone(), longest);
  REQUIRE(ok.reply);
  CHECK(read_header(*ok.reply).rcode == 3);  // NXDOMAIN
  expect_formerr(header(1) + labels(3, 63) + labels(1, 62) + bytes{0} + a_in);  // 256
  expect_formerr(header(1) + labels(4, 63) + bytes{0} + a_in);                  // 257
  expect_formerr(header(1) + labels(200, 1) + bytes{0} + a_in);                 // 401, short labels
  // Over 255 only once the pointer is followed: a 64-octet label in front of the
  // 255-octet question name, in the additional section.
  expect_formerr(header(1, 0, 0, 1) + labels(3, 63) + labels(1, 61) + bytes{0} + a_in + labels(1, 63) +
                 bytes{0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1});
}

TEST_CASE("resolver malformed: truncated name, QTYPE or QCLASS") {
  expect_formerr(header(1) + bytes{4, 'j', 'a', 'k', 'u'});
  expect_formerr(header(1) + bytes{4, 'j', 'a'});
  expect_formerr(header(1) + jaku);
  expect_formerr(header(1) + jaku + bytes{0});
  expect_formerr(header(1) + jaku + bytes{0, 1});
  expect_formerr(header(1) + jaku + bytes{0, 1, 0});
}

TEST_CASE("resolver malformed: bytes after the last record") {
  expect_formerr(header(1) + jaku + a_in + bytes{0xDE, 0xAD});
  expect_formerr(header(1) + jaku + a_in + bytes{0});
}

TEST_CASE("resolver malformed: records after the question are walked too") {
  const auto opt = bytes{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0};  // root owner, udp 4096, no options
  // One OPT is fine; the reply carries one back.
  const auto with_opt = handle_query(test_zone(), header(1, 0, 0, 1) + jaku + a_in + opt);
  REQUIRE(with_opt.reply);
  CHECK(read_header(*with_opt.reply).rcode == 0);
  CHECK(read_header(*with_opt.reply).arcount == 1);

  expect_formerr(header(1, 0, 0, 2) + jaku + a_in + opt + opt);                       // two OPT
  expect_formerr(header(1, 0, 0, 1) + jaku + a_in + bytes{1, 'x'} + opt);             // OPT not at the root
  expect_formerr(header(1, 1, 0, 0) + jaku + a_in + opt);                             // OPT as an answer
  expect_formerr(header(1, 0, 0, 1) + jaku + a_in + bytes{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 9});  // RDATA past end
  expect_formerr(header(1, 0, 0, 1) + jaku + a_in + bytes{0, 0, 1, 0, 1, 0, 0});       // record cut short
  // A backwards pointer to the question name in a record is legal compression.
  const auto compressed = handle_query(
      test_zone(), header(1, 0, 0, 1) + jaku + a_in + bytes{0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1});
  REQUIRE(compressed.reply);
  CHECK(read_header(*compressed.reply).rcode == 0);
  // A forward pointer in a record is not.
  expect_formerr(header(1, 0, 0, 1) + jaku + a_in + bytes{0xC0, 40, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1});
  // Record data that ldns cannot read (an A of 3 octets) is FORMERR too.
  expect_formerr(header(1, 0, 0, 1) + jaku + a_in + bytes{0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 127, 0, 0});
}

TEST_CASE("resolver malformed: pointer chains are cut off, in bounded time") {
  // Each record's owner points at the previous record's owner: chains grow
  // by one jump per record until the walk refuses them.
  bytes packet = header(1, 0, 0, 2000) + bytes{1, 'a', 0} + a_in;
  std::size_t previous = 12;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t here = packet.size();
    packet.push_back(static_cast<std::uint8_t>(0xC0 | (previous >> 8)));
    packet.push_back(static_cast<std::uint8_t>(previous & 0xFF));
    packet = packet + bytes{0, 1, 0, 1, 0, 0, 0, 60, 0, 0};
    previous = here;
  }
  // Bounded by the walk's jump limit; its time is not asserted (a shared machine varies 3x).
  expect_formerr(packet);
}

TEST_CASE("resolver malformed: random and mutated packets never crash, and stay bounded") {
  std::mt19937 random(20261122);
  const bytes good = header(1, 0, 0, 1) + jaku + a_in + bytes{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0};
  int answered = 0;
  for (int round = 0; round < 20000; ++round) {
    bytes packet = good;
    if (round % 2 == 0) {
      const int flips = 1 + static_cast<int>(random() % 4);
      for (int i = 0; i < flips; ++i) packet[random() % packet.size()] = static_cast<std::uint8_t>(random());
      if (random() % 4 == 0) packet.resize(random() % packet.size());
    } else {
      packet.resize(random() % 600);
      for (auto& b : packet) b = static_cast<std::uint8_t>(random());
      if (packet.size() > 2) packet[2] &= 0x7F;  // mostly queries, to reach the body checks
    }
    const auto outcome = handle_query(test_zone(), packet);
    if (!outcome.reply) continue;
    ++answered;
    const auto h = read_header(*outcome.reply);
    REQUIRE(h.qr);
    REQUIRE(outcome.reply->size() <= 512);
    if (packet.size() >= 2) REQUIRE(h.id == static_cast<std::uint16_t>((packet[0] << 8) | packet[1]));
  }
  CHECK(answered > 1000);
}

TEST_CASE("resolver malformed: check_query names the problem") {
  using mailnet::resolver::check_query;
  using mailnet::resolver::query_verdict;
  CHECK(check_query(header(1) + jaku + a_in).verdict == query_verdict::ok);
  CHECK(check_query(header(1) + bytes{0xC0, 12} + a_in).reason.find("pointer") != std::string::npos);
  CHECK(check_query(header(1) + labels(4, 63) + bytes{0} + a_in).reason.find("255") != std::string::npos);
  CHECK(check_query(header(1) + bytes{0x40} + labels(1, 0x3F) + bytes{0} + a_in).reason.find("label type") !=
        std::string::npos);
}
