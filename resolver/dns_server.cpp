#include "resolver/dns_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <vector>

#include "common/event_log.hpp"
#include "common/topology.hpp"

namespace mailnet::resolver {
namespace asio = boost::asio;
using asio::ip::udp;

namespace {

std::string to_text(const udp::endpoint& e) {
  return endpoint{e.address().to_string(), e.port()}.to_string();
}

}  // namespace

dns_server::dns_server(asio::any_io_executor ex, zone z, const endpoint& listen, event_log& log)
    : zone_(std::move(z)), log_(log), socket_(ex) {
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
}

void dns_server::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  socket_.close(ignored);
}

asio::awaitable<void> dns_server::run() {
  // 64 KiB: the largest UDP payload, so no datagram is ever cut.
  std::vector<std::uint8_t> buffer(65535);
  udp::endpoint client;
  int errors_in_a_row = 0;
  while (!stopped_) {
    auto [ec, size] = co_await socket_.async_receive_from(asio::buffer(buffer), client,
                                                          asio::as_tuple(asio::use_awaitable));
    if (stopped_ || ec == asio::error::operation_aborted) break;
    if (ec) {
      log_.write({{"event", "receive_error"}, {"error", ec.message()}});
      // A persistent error must not become a busy loop.
      if (++errors_in_a_row >= 10) {
        asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        errors_in_a_row = 0;
      }
      continue;
    }
    errors_in_a_row = 0;

    const auto outcome = handle_query(zone_, std::span<const std::uint8_t>(buffer.data(), size));
    const std::string peer = to_text(client);
    const std::string bytes = std::to_string(size);
    if (!outcome.reply) {
      log_.write({{"event", "dropped"}, {"client", peer}, {"bytes", bytes}, {"reason", outcome.reason}});
      continue;
    }
    if (outcome.reason.empty()) {
      log_.write({{"event", "query"}, {"client", peer}, {"name", outcome.name}, {"type", outcome.type},
                  {"rcode", outcome.rcode}, {"answer", outcome.answer}});
    } else {
      log_.write({{"event", "query"}, {"client", peer}, {"name", outcome.name}, {"type", outcome.type},
                  {"rcode", outcome.rcode}, {"answer", outcome.answer}, {"reason", outcome.reason}});
    }
    auto [send_ec, sent] = co_await socket_.async_send_to(asio::buffer(*outcome.reply), client,
                                                          asio::as_tuple(asio::use_awaitable));
    (void)sent;
    if (send_ec && !stopped_) {
      log_.write({{"event", "send_error"}, {"client", peer}, {"error", send_ec.message()}});
    }
  }
}

}  // namespace mailnet::resolver
