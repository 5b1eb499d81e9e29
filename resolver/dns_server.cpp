#include "resolver/dns_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <sys/socket.h>
#include <vector>

#include "common/event_log.hpp"
#include "common/topology.hpp"

namespace mailnet::resolver {
namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;

namespace {

// Datagrams taken per recvmmsg(). dnsperf keeps ~100 queries in flight; 64
// per call cut the system calls and log writes per query by more than 10×.
constexpr std::size_t batch_size = 64;
constexpr std::size_t max_datagram = 65536;  // the largest UDP payload, so no datagram is ever cut
constexpr std::size_t cache_limit = 4096;    // answers kept; the cache starts over when full
constexpr std::size_t cacheable_query = 512;

template <typename Endpoint>  // udp or tcp
std::string to_text(const Endpoint& e) {
  return endpoint{e.address().to_string(), e.port()}.to_string();
}

// RFC 7766 §6.2.3 wants idle timeouts of seconds, and §10 lets a server
// under pressure close connections. A client has tcp_query_time for a
// query, from its connection or from the query's first byte, to the reply
// written, so a silent or trickling client holds a slot briefly; between
// queries it may wait tcp_idle, since a newcomer at the cap pushes out the
// longest-idle connection first (tcp_slots), so idle ones cannot lock others out.
constexpr std::size_t max_tcp_sessions = 64;
constexpr auto tcp_query_time = std::chrono::seconds(2);
constexpr auto tcp_idle = std::chrono::seconds(10);

}  // namespace

dns_server::dns_server(asio::any_io_executor ex, zone z, const endpoint& listen, event_log& log, dns_faults faults)
    : zone_(std::move(z)), faults_(std::move(faults)), log_(log), socket_(ex), tcp_(ex), tcp_slots_(max_tcp_sessions) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(listen.host, ec);
  if (ec) throw boost::system::system_error(ec, "udp " + listen.to_string() + ": bad address");
  const udp::endpoint where(address, listen.port);
  if (socket_.open(where.protocol(), ec); ec) {
    throw boost::system::system_error(ec, "udp " + listen.to_string() + ": open");
  }
  if (socket_.bind(where, ec); ec) {
    throw boost::system::system_error(ec, "udp " + listen.to_string() + ": bind");
  }
  local_endpoint_ = socket_.local_endpoint();
  // TCP on the same port; without it UDP still serves (the port may be taken
  // for TCP by some other program: only UDP is the resolver's promise).
  const tcp::endpoint tcp_where(address, local_endpoint_.port());
  tcp_.open(tcp_where.protocol(), ec);
  if (!ec) tcp_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) tcp_.bind(tcp_where, ec);
  if (!ec) tcp_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    log_.write({{"event", "tcp_unavailable"}, {"listen", to_text(local_endpoint_)}, {"error", ec.message()}});
    boost::system::error_code ignored;
    tcp_.close(ignored);
  }
}

void dns_server::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  socket_.close(ignored);
  tcp_.close(ignored);
  tcp_slots_.close_all();
}

asio::awaitable<void> dns_server::run_tcp() {
  while (!stopped_ && tcp_.is_open()) {
    auto [ec, socket] = co_await tcp_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopped_ || ec == asio::error::operation_aborted) break;
    if (ec) {  // out of descriptors, say: pause instead of spinning
      log_.write({{"event", "accept_error"}, {"error", ec.message()}});
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    // Registered here, before the session runs, so that a burst of accepts
    // counts every connection it opened.
    auto shared = std::make_shared<tcp::socket>(std::move(socket));
    if (tcp_slots_.full()) tcp_slots_.evict();
    const auto slot = tcp_slots_.add(
        [shared] {
          boost::system::error_code ignored;
          shared->close(ignored);
        },
        tcp_slots::clock::now());
    asio::co_spawn(co_await asio::this_coro::executor, tcp_session(std::move(shared), slot), asio::detached);
  }
}

asio::awaitable<void> dns_server::tcp_session(std::shared_ptr<tcp::socket> socket, tcp_slots::slot_id slot) {
  struct forget {
    dns_server& server;
    tcp_slots::slot_id slot;
    ~forget() { server.tcp_slots_.remove(slot); }
  } guard{*this, slot};
  boost::system::error_code ec;
  const auto peer = socket->remote_endpoint(ec);
  const std::string client = ec ? "?" : to_text(peer);
  // Closes the connection when it runs out; the handler holds the socket,
  // since it may run after this frame ends.
  asio::steady_timer deadline(co_await asio::this_coro::executor);
  auto arm = [&](std::chrono::steady_clock::duration d) {
    deadline.expires_after(d);
    deadline.async_wait([socket](const boost::system::error_code& e) {
      boost::system::error_code ignored;
      if (!e) socket->close(ignored);
    });
  };
  arm(tcp_query_time);  // the first query: counted from the connection
  std::vector<std::uint8_t> query;
  for (bool first = true; !stopped_; first = false) {
    if (!first) arm(tcp_idle);
    auto [wait_ec] = co_await socket->async_wait(tcp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
    if (wait_ec) break;
    tcp_slots_.query_started(slot, tcp_slots::clock::now());
    if (!first) arm(tcp_query_time);  // a trickle does not extend it
    std::uint8_t length[2];
    auto [len_ec, got] = co_await asio::async_read(*socket, asio::buffer(length), asio::as_tuple(asio::use_awaitable));
    if (len_ec) break;
    query.resize(static_cast<std::size_t>(length[0]) << 8 | length[1]);
    if (query.empty()) break;
    auto [body_ec, body] = co_await asio::async_read(*socket, asio::buffer(query), asio::as_tuple(asio::use_awaitable));
    if (body_ec) break;
    if (!co_await answer_tcp(*socket, query, client)) break;
    tcp_slots_.query_done(slot, tcp_slots::clock::now());
  }
  deadline.cancel();
}

asio::awaitable<bool> dns_server::answer_tcp(tcp::socket& socket, const std::vector<std::uint8_t>& query,
                                              const std::string& client) {
  // Not through the UDP cache: over TCP a reply is never cut to 512 bytes.
  const auto outcome = handle_query(zone_, query, true, &faults_);
  const std::string stamp = utc_timestamp();
  std::string line;
  if (outcome.fault)
    line = stamp + " event=fault" + fault_tail(outcome) + " client=" + log_value(client) + " transport=tcp\n";
  line += stamp + (outcome.reply ? " event=query client=" : " event=dropped client=") + log_value(client) +
          log_tail(outcome, query.size()) + " transport=tcp\n";
  log_.write_stamped_lines(line);
  if (!outcome.reply && outcome.fault) {
    // A timeout: no reply, and the connection stays silent until the query's
    // time runs out (the deadline closes it) or the client gives up or sends more.
    co_await socket.async_wait(tcp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
    co_return false;
  }
  if (!outcome.reply) co_return false;  // nothing to say to junk: the connection ends
  const auto& reply = *outcome.reply;
  const std::uint8_t size[2] = {static_cast<std::uint8_t>(reply.size() >> 8),
                                static_cast<std::uint8_t>(reply.size() & 0xFF)};
  const std::array<asio::const_buffer, 2> out{asio::buffer(size), asio::buffer(reply)};
  auto [write_ec, written] = co_await asio::async_write(socket, out, asio::as_tuple(asio::use_awaitable));
  co_return !write_ec;
}

const dns_server::cached_answer& dns_server::answer(const std::uint8_t* query, std::size_t size) {
  // Only well-formed-looking queries are kept: a header, and no bigger than a
  // classic query, so that junk cannot crowd the cache with large keys.
  const bool cacheable = size >= 12 && size <= cacheable_query;
  std::string key;
  if (cacheable) {
    key.assign(reinterpret_cast<const char*>(query), size);
    key[0] = key[1] = 0;
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  }
  cached_answer a;
  auto outcome = handle_query(zone_, std::span<const std::uint8_t>(query, size), false, &faults_);
  a.log_tail = log_tail(outcome, size);
  a.fault_tail = fault_tail(outcome);
  a.reply = std::move(outcome.reply);
  // The cached reply is reused with another id; that is only right when the
  // reply carries the query's id in its first two bytes.
  a.echoes_id = a.reply && size >= 2 && a.reply->size() >= 2 && (*a.reply)[0] == query[0] && (*a.reply)[1] == query[1];
  // A name that a fault rule covers is decided again for every query.
  if (!cacheable || outcome.fault_watched || (a.reply && !a.echoes_id)) {
    scratch_ = std::move(a);
    return scratch_;
  }
  if (cache_.size() >= cache_limit) cache_.clear();
  return cache_.emplace(std::move(key), std::move(a)).first->second;
}

std::string dns_server::log_tail(const query_outcome& outcome, std::size_t size) {
  std::string tail;
  if (!outcome.reply) {
    append_log_fields(tail, {{"bytes", std::to_string(size)}, {"reason", outcome.reason}});
  } else {
    append_log_fields(tail, {{"name", outcome.name}, {"type", outcome.type}, {"rcode", outcome.rcode},
                             {"answer", outcome.answer}});
    if (!outcome.reason.empty()) append_log_fields(tail, {{"reason", outcome.reason}});
  }
  return tail;
}

std::string dns_server::fault_tail(const query_outcome& outcome) {
  std::string tail;
  if (outcome.fault)
    append_log_fields(tail, {{"rule", outcome.fault->name}, {"stage", "dns"}, {"answer", outcome.fault->answer},
                             {"name", outcome.name}, {"type", outcome.type}});
  return tail;
}

asio::awaitable<void> dns_server::run() {
  // Untouched pages of the slab are never resident: a slot costs memory only
  // as far as its datagrams reach.
  std::unique_ptr<std::uint8_t[]> slab(new std::uint8_t[batch_size * max_datagram]);
  std::vector<mmsghdr> in(batch_size);
  std::vector<iovec> in_iov(batch_size);
  std::vector<sockaddr_storage> peers(batch_size);
  std::vector<std::vector<std::uint8_t>> replies(batch_size);
  std::vector<mmsghdr> out(batch_size);
  std::vector<iovec> out_iov(batch_size);
  std::vector<std::size_t> out_slot(batch_size);
  std::string lines;
  int errors_in_a_row = 0;
  const int fd = socket_.native_handle();

  auto peer_endpoint = [&](std::size_t i) {
    udp::endpoint e;
    std::memcpy(e.data(), &peers[i], in[i].msg_hdr.msg_namelen);
    e.resize(in[i].msg_hdr.msg_namelen);
    return e;
  };
  auto pause_if_stuck = [&]() -> asio::awaitable<void> {
    // A persistent error must not become a busy loop.
    if (++errors_in_a_row >= 10) {
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      errors_in_a_row = 0;
    }
  };

  while (!stopped_) {
    auto [wait_ec] = co_await socket_.async_wait(udp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
    if (stopped_ || wait_ec == asio::error::operation_aborted) break;
    if (wait_ec) {
      log_.write({{"event", "receive_error"}, {"error", wait_ec.message()}});
      co_await pause_if_stuck();
      continue;
    }
    // Drain what is queued, a bounded number of batches before waiting again.
    for (int round = 0; round < 16 && !stopped_; ++round) {
      for (std::size_t i = 0; i < batch_size; ++i) {
        in_iov[i] = {slab.get() + i * max_datagram, max_datagram};
        in[i] = {};
        in[i].msg_hdr.msg_name = &peers[i];
        in[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
      }
      const int got = ::recvmmsg(fd, in.data(), batch_size, MSG_DONTWAIT, nullptr);
      if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
        log_.write({{"event", "receive_error"}, {"error", std::strerror(errno)}});
        co_await pause_if_stuck();
        break;
      }
      errors_in_a_row = 0;

      // Answer and log every datagram, then send the replies together.
      const std::string stamp = utc_timestamp();
      lines.clear();
      std::size_t to_send = 0;
      for (std::size_t i = 0; i < static_cast<std::size_t>(got); ++i) {
        const std::uint8_t* query = slab.get() + i * max_datagram;
        const std::size_t size = in[i].msg_len;
        const cached_answer& a = answer(query, size);
        if (!a.fault_tail.empty()) {
          lines += stamp;
          lines += " event=fault";
          lines += a.fault_tail;
          lines += " client=";
          lines += log_value(to_text(peer_endpoint(i)));
          lines += " transport=udp\n";
        }
        lines += stamp;
        lines += a.reply ? " event=query client=" : " event=dropped client=";
        lines += log_value(to_text(peer_endpoint(i)));
        lines += a.log_tail;
        lines += '\n';
        if (!a.reply) continue;
        auto& reply = replies[to_send];
        reply.assign(a.reply->begin(), a.reply->end());
        if (a.echoes_id) {  // the asker's id, in a reply that may have been made for another
          reply[0] = query[0];
          reply[1] = query[1];
        }
        out_iov[to_send] = {reply.data(), reply.size()};
        out[to_send] = {};
        out[to_send].msg_hdr.msg_name = &peers[i];
        out[to_send].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
        out[to_send].msg_hdr.msg_iov = &out_iov[to_send];
        out[to_send].msg_hdr.msg_iovlen = 1;
        out_slot[to_send] = i;
        ++to_send;
      }
      log_.write_stamped_lines(lines);  // logged before the replies go out, as one query at a time did

      std::size_t sent = 0;
      while (sent < to_send && !stopped_) {
        const int n = ::sendmmsg(fd, out.data() + sent, static_cast<unsigned>(to_send - sent), MSG_DONTWAIT);
        if (n > 0) {
          sent += static_cast<std::size_t>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        const std::size_t i = out_slot[sent];
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          // The send buffer is full: wait for room, one reply at a time.
          auto [send_ec, bytes] = co_await socket_.async_send_to(
              asio::buffer(replies[sent]), peer_endpoint(i), asio::as_tuple(asio::use_awaitable));
          (void)bytes;
          if (send_ec && !stopped_)
            log_.write({{"event", "send_error"}, {"client", to_text(peer_endpoint(i))}, {"error", send_ec.message()}});
        } else if (!stopped_) {
          log_.write({{"event", "send_error"}, {"client", to_text(peer_endpoint(i))}, {"error", std::strerror(errno)}});
        }
        ++sent;  // that reply is done with, sent or not
      }
      if (static_cast<std::size_t>(got) < batch_size) break;
    }
  }
}

}  // namespace mailnet::resolver
