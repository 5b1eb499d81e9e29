// A TCP connection that speaks in lines with a deadline on every read and
// write: a silent peer never holds a session for ever. Shared by the server session and the relay client.
// Expected outcomes (EOF, timeout, reset) come back as values.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <utility>

namespace mailnet::node {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using millis = std::chrono::milliseconds;

enum class io_status { ok, eof, timeout, error, too_long };

class smtp_channel {
 public:
  explicit smtp_channel(tcp::socket socket);

  tcp::socket& socket() { return socket_; }

  // One line without its CRLF (a bare LF also ends a command line). A line
  // longer than max bytes is read and thrown away through its LF, in bounded
  // memory, and reported as too_long as soon as it passes max (the rest is
  // dropped by the next call, without another too_long). idle bounds the wait
  // for the line's first byte, command the whole line from then on, so a
  // client trickling a byte at a time cannot stretch it.
  asio::awaitable<std::pair<io_status, std::string>> read_line(std::size_t max, millis idle, millis command);

  // Whatever is buffered, or the next bytes from the socket, within timeout
  // and before deadline. Call consume() with how much of it was used.
  asio::awaitable<std::pair<io_status, std::string_view>> read_some(
      millis timeout, std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max());

  // Bytes the client sent that nobody has read yet (buffered or in the kernel).
  bool input_pending();
  void consume(std::size_t n) { in_.erase(0, n); }

  // True when nothing was received and the peer has not closed: a kept
  // connection that can carry the next transaction.
  bool quiet_and_open();

  bool has_buffered_line() const { return in_.find('\n') != std::string::npos; }

  asio::awaitable<io_status> write(std::string_view data, millis timeout);

  // From now on, each read and each write is followed by a pause that keeps
  // each direction at no more than this many bytes per second on average
  // (a fault rule's bandwidth). 0: no limit.
  void limit_rate(std::uint64_t bytes_per_second) { rate_ = bytes_per_second; }

  // Ends the read or write under way as if its deadline had passed (a
  // graceful stop wakes a session that waits for its next command).
  void interrupt() { timer_.cancel(); }

  // Connects with a deadline. from: the local address to leave from (the
  // node's own listening address, so that the peer sees each domain's IP),
  // with a port the kernel picks; unspecified: the kernel's choice.
  static asio::awaitable<std::pair<io_status, tcp::socket>> connect(asio::any_io_executor ex, tcp::endpoint to,
                                                                   millis timeout,
                                                                   asio::ip::address from = {});

 private:
  asio::awaitable<io_status> fill(std::chrono::steady_clock::time_point deadline);

  // Waits until n more bytes fit the limit_rate() of one direction.
  asio::awaitable<void> pace(std::size_t n, std::chrono::steady_clock::time_point& next);

  tcp::socket socket_;
  asio::steady_timer timer_;
  std::uint64_t rate_ = 0;
  std::chrono::steady_clock::time_point next_read_{}, next_write_{};
  std::string in_;
  bool skipping_ = false;  // inside a command line already answered as too long
};

}  // namespace mailnet::node
