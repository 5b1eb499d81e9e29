#include "common/dns/resolver_client.hpp"

// GCC 12 reports a false -Wmismatched-new-delete on Asio's coroutine frames
// (GCC bug 109224); the frame's operator new and delete do match.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <stdexcept>

#include "common/topology.hpp"
#include <variant>

namespace mailnet::node {
namespace asio = boost::asio;
using asio::ip::udp;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t max_cache_entries = 1024;
constexpr std::uint16_t smtp_port = 25;  // RFC 5321 §4.5.4: MX hosts take mail on 25

dns_reply failure(std::string detail) {
  dns_reply r;
  r.kind = reply_kind::failure;
  r.detail = std::move(detail);
  return r;
}

lookup_result result(lookup_status status, std::string detail) {
  return {status, {}, std::move(detail)};
}

std::string endpoint_text(const udp::endpoint& e) {
  const std::string address = e.address().to_string();
  return (e.address().is_v6() ? "[" + address + "]" : address) + ":" + std::to_string(e.port());
}

struct target {
  std::string host;
  std::uint16_t port = smtp_port;
};

}  // namespace

resolver_client::resolver_client(asio::any_io_executor ex, udp::endpoint server, std::chrono::milliseconds timeout,
                                 int attempts)
    : executor_(std::move(ex)),
      server_(std::move(server)),
      timeout_(timeout),
      attempts_(std::max(attempts, 1)),
      random_(std::random_device{}()) {}

std::uint16_t resolver_client::next_id() {
  std::lock_guard lock(mutex_);
  return static_cast<std::uint16_t>(std::uniform_int_distribution<unsigned>(0, 0xFFFF)(random_));
}

void resolver_client::clear_cache() {
  std::lock_guard lock(mutex_);
  cache_.clear();
}

std::optional<dns_reply> resolver_client::cached(const std::string& name, std::uint16_t type) {
  const auto key = std::make_pair(canonical_name(name), type);
  std::lock_guard lock(mutex_);
  const auto it = cache_.find(key);
  if (it == cache_.end() || std::chrono::steady_clock::now() >= it->second.expires) return std::nullopt;
  return it->second.reply;
}

asio::awaitable<dns_reply> resolver_client::query(std::string name, std::uint16_t type) {
  auto key = std::make_pair(canonical_name(name), type);
  {
    std::lock_guard lock(mutex_);
    if (auto it = cache_.find(key); it != cache_.end()) {
      if (std::chrono::steady_clock::now() < it->second.expires) co_return it->second.reply;
      cache_.erase(it);
    }
  }
  dns_reply reply = co_await exchange(key.first, type);
  // Failures are never cached: the next message should ask again.
  if (reply.kind != reply_kind::failure && reply.ttl > 0) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mutex_);
    if (cache_.size() >= max_cache_entries) {
      std::erase_if(cache_, [&](const auto& entry) { return entry.second.expires <= now; });
      if (cache_.size() >= max_cache_entries) cache_.clear();
    }
    cache_[std::move(key)] = {reply, now + std::chrono::seconds(reply.ttl)};
  }
  co_return reply;
}

asio::awaitable<dns_reply> resolver_client::exchange(const std::string& name, std::uint16_t type) {
  // A fresh socket per question: a kernel-chosen random source port, plus a
  // random id, is what RFC 5452 asks of a client, and questions in flight
  // never see each other's replies.
  udp::socket socket(executor_);
  boost::system::error_code ec;
  if (socket.open(server_.protocol(), ec); ec) co_return failure("cannot open a UDP socket: " + ec.message());

  const std::uint16_t id = next_id();
  std::vector<std::uint8_t> query;
  try {
    query = make_query(id, name, type);
  } catch (const std::exception& e) {
    co_return failure(e.what());
  }

  std::vector<std::uint8_t> buffer(65535);
  asio::steady_timer timer(executor_);
  const std::string server_text = endpoint_text(server_);
  std::string last_problem = "no reply";
  for (int attempt = 0; attempt < attempts_; ++attempt) {
    // The id stays the same on every attempt, so a late reply to an earlier
    // attempt is still welcome.
    auto [send_ec, sent] =
        co_await socket.async_send_to(asio::buffer(query), server_, asio::as_tuple(asio::use_awaitable));
    (void)sent;
    if (send_ec) {
      last_problem = "cannot send to " + server_text + ": " + send_ec.message();
      continue;
    }
    timer.expires_after(timeout_);
    for (;;) {
      udp::endpoint from;
      auto outcome = co_await (socket.async_receive_from(asio::buffer(buffer), from, asio::as_tuple(asio::use_awaitable)) ||
                               timer.async_wait(asio::as_tuple(asio::use_awaitable)));
      if (outcome.index() == 1) {
        if (std::get<0>(std::get<1>(outcome)) == asio::error::operation_aborted) co_return failure("cancelled");
        last_problem = "no reply from " + server_text + " within " + std::to_string(timeout_.count()) + " ms";
        break;
      }
      auto [receive_ec, size] = std::get<0>(outcome);
      if (receive_ec == asio::error::operation_aborted) co_return failure("cancelled");
      if (receive_ec) {
        last_problem = "receive from " + server_text + ": " + receive_ec.message();
        break;
      }
      if (from != server_) continue;  // RFC 5452 §9.1: only the server we asked
      auto reply = parse_response(std::span<const std::uint8_t>(buffer.data(), size), id, name, type);
      if (!reply) continue;  // another id or another question: keep waiting until the deadline
      co_return std::move(*reply);
    }
  }
  co_return failure(last_problem + " (" + std::to_string(attempts_) + (attempts_ == 1 ? " attempt)" : " attempts)"));
}

asio::awaitable<dns_reply> resolver_client::addresses_of(const std::string& host, const dns_reply& from) {
  dns_reply glue;
  for (const auto& a : from.addresses) {
    if (a.owner == host) glue.addresses.push_back(a);
  }
  if (!glue.addresses.empty()) {
    glue.kind = reply_kind::answer;
    co_return glue;
  }
  dns_reply v4 = co_await query(host, dns_type::a);
  if (v4.kind != reply_kind::nodata) co_return v4;
  co_return co_await query(host, dns_type::aaaa);  // the mail host may be ::1 only
}

asio::awaitable<lookup_result> resolver_client::lookup_mail_route(std::string domain) {
  if (!is_queryable_name(domain)) co_return result(lookup_status::nxdomain, "not a domain name: " + domain);
  const std::string name = canonical_name(domain);

  std::vector<target> targets;
  dns_reply source;
  const dns_reply srv = co_await query("_smtp._tcp." + name, dns_type::srv);
  if (srv.kind == reply_kind::failure) co_return result(lookup_status::temporary, srv.detail);
  if (srv.kind == reply_kind::answer) {
    // RFC 2782: a lone target "." means the service is decidedly not there.
    if (srv.srv.size() == 1 && srv.srv.front().target == ".") {
      co_return result(lookup_status::nxdomain, "no SMTP service at " + name + " (SRV target \".\")");
    }
    auto records = srv.srv;
    // Lowest priority first; among equals the heavier first (no random
    // weighting: one route per domain in mailnet, and order stays testable).
    std::stable_sort(records.begin(), records.end(), [](const srv_data& a, const srv_data& b) {
      return a.priority != b.priority ? a.priority < b.priority : a.weight > b.weight;
    });
    for (const auto& r : records) {
      if (r.target != ".") targets.push_back({r.target, r.port});
    }
    source = srv;
  } else {
    // Neither NODATA nor NXDOMAIN for the SRV name says the domain is gone:
    // that is the MX question's to decide.
    const dns_reply mx = co_await query(name, dns_type::mx);
    if (mx.kind == reply_kind::failure) co_return result(lookup_status::temporary, mx.detail);
    if (mx.kind == reply_kind::nxdomain) co_return result(lookup_status::nxdomain, "domain " + name + " does not exist");
    if (mx.kind == reply_kind::answer) {
      if (mx.mx.size() == 1 && mx.mx.front().exchange == ".") {
        co_return result(lookup_status::nxdomain, name + " accepts no mail (null MX, RFC 7505)");
      }
      auto records = mx.mx;
      std::stable_sort(records.begin(), records.end(),
                       [](const mx_data& a, const mx_data& b) { return a.preference < b.preference; });
      for (const auto& r : records) {
        if (r.exchange != ".") targets.push_back({r.exchange, smtp_port});
      }
      source = mx;
    } else {
      targets.push_back({name, smtp_port});  // RFC 5321 §5.1: the implicit MX
    }
  }

  lookup_result out{lookup_status::ok, {}, {}};
  bool temporary = false;
  std::string problems;
  for (const auto& t : targets) {
    const dns_reply addresses = co_await addresses_of(t.host, source);
    if (addresses.kind == reply_kind::answer) {
      for (const auto& a : addresses.addresses) {
        mail_route route{a.address, t.port, t.host};
        if (std::find(out.routes.begin(), out.routes.end(), route) == out.routes.end()) out.routes.push_back(route);
      }
      continue;
    }
    temporary = temporary || addresses.kind == reply_kind::failure;
    problems += (problems.empty() ? "" : "; ") + addresses.detail;
  }
  if (!out.routes.empty()) {
    out.detail = problems;
    co_return out;
  }
  if (srv.kind != reply_kind::answer && source.mx.empty() && !temporary) {
    co_return result(lookup_status::nxdomain, "no SRV, MX or address records for " + name);
  }
  // A mail host without an address is someone's mistake to fix: keep the
  // mail rather than bounce it.
  co_return result(lookup_status::temporary, "no address for the mail hosts of " + name + ": " + problems);
}

asio::awaitable<reverse_result> resolver_client::confirm_reverse(std::string address) {
  reverse_result out;
  boost::system::error_code ec;
  const auto parsed = asio::ip::make_address(address, ec);
  const std::string reverse = ec ? std::string() : reverse_dns_name(parsed.to_string());
  if (reverse.empty()) {
    out.outcome = reverse_result::verdict::fail;
    out.detail = "not an address: " + address;
    co_return out;
  }
  const auto budget = 2 * timeout_ * attempts_;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  const dns_reply ptr = co_await query(reverse, dns_type::ptr);
  if (ptr.kind == reply_kind::failure) {
    out.detail = "PTR lookup for " + parsed.to_string() + ": " + ptr.detail;
    co_return out;
  }
  if (ptr.kind != reply_kind::answer) {
    out.outcome = reverse_result::verdict::fail;
    out.detail = "no PTR record for " + parsed.to_string();
    co_return out;
  }
  bool temporary = false;
  std::string tried;
  const std::size_t count = std::min<std::size_t>(ptr.names.size(), 10);
  for (std::size_t i = 0; i < count; ++i) {
    const std::string& name = ptr.names[i];
    if (!is_queryable_name(name)) continue;
    if (std::chrono::steady_clock::now() >= deadline) {
      out.detail = "gave up after " + std::to_string(budget.count()) + " ms with " + std::to_string(count - i) +
                   " PTR name(s) of " + parsed.to_string() + " not looked up" +
                   (tried.empty() ? "" : " (no address record of " + tried + " leads back)");
      co_return out;  // temporary
    }
    const dns_reply forward = co_await query(name, parsed.is_v4() ? dns_type::a : dns_type::aaaa);
    if (forward.kind == reply_kind::failure) temporary = true;
    for (const auto& a : forward.addresses) {
      boost::system::error_code bad;
      const auto back = asio::ip::make_address(a.address, bad);
      if (!bad && back == parsed) {
        out.outcome = reverse_result::verdict::pass;
        out.name = name;
        co_return out;
      }
    }
    tried += (tried.empty() ? "" : ", ") + name;
  }
  out.outcome = temporary ? reverse_result::verdict::temporary : reverse_result::verdict::fail;
  out.detail = (temporary ? "the address records of " : "no address record of ") + tried +
               (temporary ? " could not be looked up now" : " leads back to " + parsed.to_string());
  co_return out;
}

}  // namespace mailnet::node
