#include "node/smtp_channel.hpp"

#include <cerrno>
#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mailnet::node {

using namespace asio::experimental::awaitable_operators;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

smtp_channel::smtp_channel(tcp::socket socket) : socket_(std::move(socket)), timer_(socket_.get_executor()) {}

asio::awaitable<io_status> smtp_channel::fill(std::chrono::steady_clock::time_point deadline) {
  if (std::chrono::steady_clock::now() >= deadline) co_return io_status::timeout;
  char chunk[16384];
  timer_.expires_at(deadline);
  auto result = co_await (socket_.async_read_some(asio::buffer(chunk), use_tuple) || timer_.async_wait(use_tuple));
  if (result.index() == 1) co_return io_status::timeout;
  auto [ec, n] = std::get<0>(result);
  if (ec == asio::error::eof) co_return io_status::eof;
  if (ec) co_return io_status::error;
  in_.append(chunk, n);
  if (rate_) co_await pace(n, next_read_);
  co_return io_status::ok;
}

asio::awaitable<void> smtp_channel::pace(std::size_t n, std::chrono::steady_clock::time_point& next) {
  const auto now = std::chrono::steady_clock::now();
  next = std::max(next, now) + std::chrono::nanoseconds(static_cast<std::int64_t>(n * 1'000'000'000ULL / rate_));
  // Bounded: n is at most one read or one reply, rate_ at least 1.
  timer_.expires_at(next);
  co_await timer_.async_wait(use_tuple);
}

asio::awaitable<std::pair<io_status, std::string>> smtp_channel::read_line(std::size_t max, millis idle,
                                                                           millis command) {
  const bool begun = !in_.empty() || skipping_;
  auto deadline = std::chrono::steady_clock::now() + (begun ? command : idle);
  bool waiting_for_first_byte = !begun;
  std::size_t scanned = 0;
  for (;;) {
    auto nl = in_.find('\n', scanned);
    if (skipping_) {  // the rest of a line already answered as too long
      if (nl == std::string::npos) {
        in_.clear();
      } else {
        in_.erase(0, nl + 1);
        skipping_ = false;
        scanned = 0;
        if (in_.empty()) {  // the next command has not begun: the idle deadline again
          deadline = std::chrono::steady_clock::now() + idle;
          waiting_for_first_byte = true;
        }
        continue;
      }
    } else if (nl != std::string::npos) {
      if (nl > max - 1) {  // max counts the CRLF
        in_.erase(0, nl + 1);
        co_return std::pair{io_status::too_long, std::string{}};
      }
      std::string line = in_.substr(0, nl);
      in_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      co_return std::pair{io_status::ok, std::move(line)};
    } else if (in_.size() > max) {
      // Answered now, not when (if ever) the line ends; what follows of it,
      // up to its LF, is dropped without a second reply. Memory stays bounded.
      in_.clear();
      skipping_ = true;
      co_return std::pair{io_status::too_long, std::string{}};
    }
    scanned = in_.size();
    auto st = co_await fill(deadline);
    if (st != io_status::ok) co_return std::pair{st, std::string{}};
    if (waiting_for_first_byte) {  // the command has begun: its own deadline from now
      waiting_for_first_byte = false;
      deadline = std::chrono::steady_clock::now() + command;
    }
  }
}

asio::awaitable<std::pair<io_status, std::string_view>> smtp_channel::read_some(
    millis timeout, std::chrono::steady_clock::time_point deadline) {
  if (in_.empty()) {
    auto st = co_await fill(std::min(deadline, std::chrono::steady_clock::now() + timeout));
    if (st != io_status::ok) co_return std::pair{st, std::string_view{}};
  }
  co_return std::pair{io_status::ok, std::string_view(in_)};
}

bool smtp_channel::input_pending() {
  boost::system::error_code ec;
  return !in_.empty() || socket_.available(ec) > 0;
}

bool smtp_channel::quiet_and_open() {
  if (!in_.empty() || !socket_.is_open()) return false;
  char byte;
  ssize_t n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);  // 0: closed; 1: a 421 or the like
}

asio::awaitable<io_status> smtp_channel::write(std::string_view data, millis timeout) {
  timer_.expires_after(timeout);
  auto result = co_await (asio::async_write(socket_, asio::buffer(data), use_tuple) || timer_.async_wait(use_tuple));
  if (result.index() == 1) co_return io_status::timeout;
  auto [ec, n] = std::get<0>(result);
  if (!ec && rate_) co_await pace(n, next_write_);
  co_return ec ? io_status::error : io_status::ok;
}

asio::awaitable<std::pair<io_status, tcp::socket>> smtp_channel::connect(asio::any_io_executor ex, tcp::endpoint to,
                                                                        millis timeout, asio::ip::address from) {
  tcp::socket socket(ex);
  if (!from.is_unspecified() && from.is_v4() == to.address().is_v4()) {
    boost::system::error_code ec;
    socket.open(to.protocol(), ec);
#ifdef IP_BIND_ADDRESS_NO_PORT
    // The port is chosen at connect(), per destination: binding first would
    // take one ephemeral port per connection out of the whole range.
    int one = 1;
    if (!ec && from.is_v4()) ::setsockopt(socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    if (!ec) socket.bind(tcp::endpoint(from, 0), ec);
    if (ec) co_return std::pair{io_status::error, tcp::socket(ex)};
  }
  asio::steady_timer timer(ex);
  timer.expires_after(timeout);
  auto result = co_await (socket.async_connect(to, use_tuple) || timer.async_wait(use_tuple));
  if (result.index() == 1) co_return std::pair{io_status::timeout, tcp::socket(ex)};
  auto [ec] = std::get<0>(result);
  if (ec) co_return std::pair{io_status::error, tcp::socket(ex)};
  co_return std::pair{io_status::ok, std::move(socket)};
}

}  // namespace mailnet::node
