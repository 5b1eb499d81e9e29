// The node's resolver client against a real dns_server in this process, on
// 127.0.0.1 port 0, and against hand-driven UDP sockets for the cases a good
// server never produces (silence, stray replies, NODATA for SRV).
#include <doctest/doctest.h>
// ldns/common.h defines bool, true and false as macros unless stdbool.h came first.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/event_log.hpp"
#include "common/topology.hpp"
#include "common/dns/dns_message.hpp"
#include "common/dns/resolver_client.hpp"
#include "resolver/dns_server.hpp"
#include "resolver/zone.hpp"
#include "temp_dir.hpp"

using namespace mailnet;
namespace asio = boost::asio;
using asio::ip::udp;
using namespace std::chrono_literals;

namespace {

const char* topology_json = R"({"name":"t","resolver":{"listen":"127.0.0.1:1053"},"domains":[
  {"name":"jaku.com","listen":"127.0.0.1:1025","users":["rey","finn"]},
  {"name":"deathstar.com","listen":"[::1]:1030","users":["vader"]}]})";

// The resolver of these tests binds port 0 (any free port), which a topology file may not name.
topology test_topology() {
  auto t = parse_topology(topology_json, "test.json");
  t.resolver.listen.port = 0;
  return t;
}

// Runs `body` on a fresh io_context and rethrows whatever it threw; gives up after 20 s.
template <class Body>
void run_coroutine(Body body) {
  asio::io_context io;
  std::exception_ptr failure;
  bool finished = false;
  asio::co_spawn(io, body(io), [&](std::exception_ptr e) {
    failure = e;
    finished = true;
  });
  io.run_for(20s);
  REQUIRE(finished);
  if (failure) std::rethrow_exception(failure);
}

std::filesystem::path temp_log_file(const std::string& name) {
  static const mailnet::test::temp_dir dir("resolver");  // removed when the test binary exits
  auto file = dir.path / name;
  std::filesystem::remove(file);
  return file;
}

using mailnet::test::read_file;

std::uint16_t question_type(const std::vector<std::uint8_t>& query, std::size_t& type_offset) {
  std::size_t pos = 12;
  while (pos < query.size() && query[pos] != 0) pos += 1u + query[pos];
  type_offset = pos + 1;
  REQUIRE(type_offset + 2 <= query.size());
  return static_cast<std::uint16_t>((query[type_offset] << 8) | query[type_offset + 1]);
}

// The zone's reply without its additional section, re-encoded by ldns.
std::vector<std::uint8_t> without_glue(const std::vector<std::uint8_t>& reply) {
  ldns_pkt* p = nullptr;
  REQUIRE(ldns_wire2pkt(&p, reply.data(), reply.size()) == LDNS_STATUS_OK);
  ldns_rr_list_deep_free(ldns_pkt_additional(p));
  ldns_pkt_set_additional(p, ldns_rr_list_new());
  ldns_pkt_set_arcount(p, 0);
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  REQUIRE(ldns_pkt2wire(&data, p, &size) == LDNS_STATUS_OK);
  std::vector<std::uint8_t> out(data, data + size);
  std::free(data);
  ldns_pkt_free(p);
  return out;
}

}  // namespace

TEST_CASE("resolver client: routes from an in-process dns_server, NXDOMAIN, the log, the cache") {
  const auto log_file = temp_log_file("resolver.log");
  run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
    event_log log;
    log.open(log_file, false);
    const auto t = test_topology();
    resolver::dns_server server(io.get_executor(), resolver::zone(t), t.resolver.listen, log);
    const auto where = server.local_endpoint();
    REQUIRE(where.port() != 0);
    asio::co_spawn(io, server.run(), asio::detached);

    node::resolver_client client(io.get_executor(), where, 500ms, 3);
    auto r = co_await client.lookup_mail_route("jaku.com");
    CHECK(r.status == node::lookup_status::ok);
    REQUIRE(r.routes.size() == 1);
    CHECK(r.routes[0] == node::mail_route{"127.0.0.1", 1025});
    CHECK(r.routes[0].name == "mx.jaku.com");  // the SRV target: the relay accepts a certificate for it

    r = co_await client.lookup_mail_route("JAKU.Com.");
    CHECK(r.status == node::lookup_status::ok);
    CHECK(r.routes == std::vector<node::mail_route>{{"127.0.0.1", 1025}});

    r = co_await client.lookup_mail_route("deathstar.com");
    CHECK(r.status == node::lookup_status::ok);
    CHECK(r.routes == std::vector<node::mail_route>{{"::1", 1030}});

    r = co_await client.lookup_mail_route("genshinimpact.com");
    CHECK(r.status == node::lookup_status::nxdomain);
    CHECK(r.routes.empty());
    CHECK(r.detail.find("genshinimpact.com") != std::string::npos);

    r = co_await client.lookup_mail_route("not a domain");
    CHECK(r.status == node::lookup_status::nxdomain);

    // Direct questions go through the same path.
    auto a = co_await client.query("mx.jaku.com", node::dns_type::a);
    CHECK(a.kind == node::reply_kind::answer);

    // What the cache holds can be read without asking (the node's check
    // threads do): the reply query() gave, NXDOMAIN too; nothing not asked.
    const auto hit = client.cached("MX.Jaku.com.", node::dns_type::a);
    REQUIRE(hit);
    CHECK(hit->kind == node::reply_kind::answer);
    REQUIRE(hit->addresses.size() == 1);
    CHECK(hit->addresses[0].address == a.addresses.at(0).address);
    const auto missing = client.cached("genshinimpact.com", node::dns_type::mx);
    REQUIRE(missing);
    CHECK(missing->kind == node::reply_kind::nxdomain);
    CHECK_FALSE(client.cached("mx.jaku.com", node::dns_type::aaaa));
    CHECK_FALSE(client.cached("deathstar.com", node::dns_type::txt));

    // With the server gone, cached answers (and cached NXDOMAIN) still serve.
    server.stop();
    node::resolver_client impatient(io.get_executor(), where, 50ms, 1);
    r = co_await client.lookup_mail_route("jaku.com");
    CHECK(r.status == node::lookup_status::ok);
    r = co_await client.lookup_mail_route("genshinimpact.com");
    CHECK(r.status == node::lookup_status::nxdomain);
    r = co_await impatient.lookup_mail_route("jaku.com");  // another client, another cache
    CHECK(r.status == node::lookup_status::temporary);
  });

  const auto text = read_file(log_file);
  CHECK(text.find("event=query client=127.0.0.1:") != std::string::npos);
  CHECK(text.find("name=_smtp._tcp.jaku.com type=SRV rcode=NOERROR answer=mx.jaku.com:1025") != std::string::npos);
  CHECK(text.find("name=genshinimpact.com type=MX rcode=NXDOMAIN answer=-") != std::string::npos);
  CHECK(text.find("name=_smtp._tcp.deathstar.com type=SRV rcode=NOERROR answer=mx.deathstar.com:1030") !=
        std::string::npos);
}

TEST_CASE("resolver client: a server that never answers is a temporary failure after every attempt") {
  run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
    udp::socket silent(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // bound, never read
    node::resolver_client client(io.get_executor(), silent.local_endpoint(), 100ms, 3);
    const auto start = std::chrono::steady_clock::now();
    auto r = co_await client.lookup_mail_route("jaku.com");
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(r.status == node::lookup_status::temporary);
    CHECK(r.routes.empty());
    CHECK(r.detail.find("no reply") != std::string::npos);
    CHECK(r.detail.find("3 attempts") != std::string::npos);
    CHECK(elapsed >= 300ms);  // every attempt waited its timeout: a lower bound, not a speed
    // Failures are not cached: the next lookup asks (and waits) again.
    CHECK_FALSE(client.cached("_smtp._tcp.jaku.com", node::dns_type::srv));
    const auto again = std::chrono::steady_clock::now();
    r = co_await client.lookup_mail_route("jaku.com");
    CHECK(r.status == node::lookup_status::temporary);
    CHECK(std::chrono::steady_clock::now() - again >= 300ms);
  });
}

TEST_CASE("resolver client: replies from another endpoint or with another id are ignored") {
  run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
    const auto loopback = asio::ip::make_address("127.0.0.1");
    udp::socket server(io, udp::endpoint(loopback, 0));
    udp::socket impostor(io, udp::endpoint(loopback, 0));
    const resolver::zone real(test_topology());
    const resolver::zone elsewhere(parse_topology(
        R"({"name":"e","domains":[{"name":"deathstar.com","listen":"127.0.0.1:1030","users":["vader"]}]})", "e.json"));

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          std::vector<std::uint8_t> buffer(512);
          udp::endpoint client;
          auto [ec, size] =
              co_await server.async_receive_from(asio::buffer(buffer), client, asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;  // (doctest macros inside this coroutine lambda trip GCC 12)
          buffer.resize(size);
          const auto lie = *resolver::answer_query(elsewhere, buffer);  // NXDOMAIN, same id and question
          auto wrong_id = lie;
          wrong_id[1] ^= 0x01;
          co_await impostor.async_send_to(asio::buffer(lie), client, asio::use_awaitable);
          co_await server.async_send_to(asio::buffer(wrong_id), client, asio::use_awaitable);
          const std::vector<std::uint8_t> garbage{1, 2, 3};
          co_await server.async_send_to(asio::buffer(garbage), client, asio::use_awaitable);
          const auto truth = *resolver::answer_query(real, buffer);
          co_await server.async_send_to(asio::buffer(truth), client, asio::use_awaitable);
        },
        asio::detached);

    node::resolver_client client(io.get_executor(), server.local_endpoint(), 1s, 1);
    auto r = co_await client.lookup_mail_route("jaku.com");
    CHECK(r.status == node::lookup_status::ok);
    CHECK(r.routes == std::vector<node::mail_route>{{"127.0.0.1", 1025}});
  });
}

TEST_CASE("resolver client: no SRV falls back to MX and then A or AAAA, port 25; answers are cached") {
  run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
    udp::socket server(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const resolver::zone real(test_topology());
    std::vector<std::uint16_t> asked;

    // A resolver without SRV records and without glue, made from the real
    // zone: SRV is asked as TXT (NODATA) and the type patched back.
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (;;) {
            std::vector<std::uint8_t> query(512);
            udp::endpoint client;
            auto [ec, size] =
                co_await server.async_receive_from(asio::buffer(query), client, asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            query.resize(size);
            std::size_t type_at = 0;
            const auto type = question_type(query, type_at);
            asked.push_back(type);
            if (type == node::dns_type::srv) query[type_at + 1] = 16;  // TXT
            auto reply = without_glue(*resolver::answer_query(real, query));
            if (type == node::dns_type::srv) reply[type_at + 1] = 33;
            co_await server.async_send_to(asio::buffer(reply), client, asio::as_tuple(asio::use_awaitable));
          }
        },
        asio::detached);

    node::resolver_client client(io.get_executor(), server.local_endpoint(), 1s, 2);
    auto r = co_await client.lookup_mail_route("jaku.com");
    CHECK(r.status == node::lookup_status::ok);
    CHECK(r.routes == std::vector<node::mail_route>{{"127.0.0.1", 25}});
    CHECK(r.routes[0].name == "mx.jaku.com");  // the MX target
    CHECK(asked == std::vector<std::uint16_t>{node::dns_type::srv, node::dns_type::mx, node::dns_type::a});

    asked.clear();
    r = co_await client.lookup_mail_route("deathstar.com");
    CHECK(r.status == node::lookup_status::ok);
    CHECK(r.routes == std::vector<node::mail_route>{{"::1", 25}});
    CHECK(asked == std::vector<std::uint16_t>{node::dns_type::srv, node::dns_type::mx, node::dns_type::a,
                                              node::dns_type::aaaa});

    asked.clear();
    r = co_await client.lookup_mail_route("jaku.com");  // all from the cache
    CHECK(r.status == node::lookup_status::ok);
    CHECK(asked.empty());

    client.clear_cache();
    r = co_await client.lookup_mail_route("genshinimpact.com");
    CHECK(r.status == node::lookup_status::nxdomain);
    CHECK(asked == std::vector<std::uint16_t>{node::dns_type::srv, node::dns_type::mx});
    server.close();
  });
}

TEST_CASE("resolver client: a reverse check gives up within its budget when the forward lookups stall") {
  // A server that answers the PTR question with ten names, then never answers
  // the A questions for them: the check must stop asking once its budget (twice
  // one question's whole wait) is spent, not ask all ten.
  int a_questions = 0;
  run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
    udp::socket server(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (;;) {
            std::vector<std::uint8_t> buffer(512);
            udp::endpoint client;
            auto [ec, size] =
                co_await server.async_receive_from(asio::buffer(buffer), client, asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            buffer.resize(size);
            std::size_t type_offset = 0;
            std::size_t pos = 12;
            while (pos < buffer.size() && buffer[pos] != 0) pos += 1u + buffer[pos];
            type_offset = pos + 1;
            if (type_offset + 2 > buffer.size()) continue;
            const int type = (buffer[type_offset] << 8) | buffer[type_offset + 1];
            if (type != LDNS_RR_TYPE_PTR) {
              ++a_questions;  // never answered
              continue;
            }
            ldns_pkt* query = nullptr;
            if (ldns_wire2pkt(&query, buffer.data(), buffer.size()) != LDNS_STATUS_OK) continue;
            ldns_pkt* reply = ldns_pkt_new();
            ldns_pkt_set_id(reply, ldns_pkt_id(query));
            ldns_pkt_set_qr(reply, true);
            ldns_pkt_set_aa(reply, true);
            ldns_pkt_push_rr(reply, LDNS_SECTION_QUESTION, ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(query), 0)));
            for (int i = 0; i < 10; ++i) {
              ldns_rr* rr = nullptr;
              const std::string text = "2.0.0.127.in-addr.arpa. 60 IN PTR mx" + std::to_string(i) + ".jaku.com.";
              if (ldns_rr_new_frm_str(&rr, text.c_str(), 0, nullptr, nullptr) == LDNS_STATUS_OK)
                ldns_pkt_push_rr(reply, LDNS_SECTION_ANSWER, rr);
            }
            std::uint8_t* data = nullptr;
            std::size_t length = 0;
            if (ldns_pkt2wire(&data, reply, &length) == LDNS_STATUS_OK) {
              std::vector<std::uint8_t> wire(data, data + length);
              std::free(data);
              co_await server.async_send_to(asio::buffer(wire), client, asio::use_awaitable);
            }
            ldns_pkt_free(reply);
            ldns_pkt_free(query);
          }
        },
        asio::detached);

    node::resolver_client client(io.get_executor(), server.local_endpoint(), 100ms, 1);  // budget 200 ms
    auto r = co_await client.confirm_reverse("127.0.0.2");
    CHECK(r.outcome == node::reverse_result::verdict::temporary);
    CHECK(r.detail.find("gave up after 200 ms") != std::string::npos);
    server.close();
  });
  // Each unanswered question waits its 100 ms, so about two fit in the
  // budget; all ten would be asked without it. (A count, not a time.)
  CHECK(a_questions >= 1);
  CHECK(a_questions < 10);
}
