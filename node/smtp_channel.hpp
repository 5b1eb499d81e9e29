// A TCP connection that speaks in lines with a deadline on every read and
// write: a silent peer never holds a session for ever. Shared by the server session and the relay client.
// Expected outcomes (EOF, timeout, reset) come back as values.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace mailnet::node {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using millis = std::chrono::milliseconds;

enum class io_status { ok, eof, timeout, error, too_long };

// The node's TLS material (OpenSSL contexts made from the files the launcher
// wrote in <run>/tls/: its certificate and key, and the network's CA). Opaque
// here: Boost.Asio's SSL headers stay in smtp_channel.cpp.
//
// Made lazily: each context is built at the first STARTTLS or relay that
// needs it, not at the node's start. An idle node of a network of 1,000
// never touches OpenSSL, which saves its start the CPU and each node the
// private memory of OpenSSL's tables and contexts. A part that cannot be
// made (a file missing or unreadable) is told once to on_problem, at that
// first use, and stays unavailable.
class tls_setup;
// The relay client keeps the last TLS session each peer domain gave it and
// offers it on the next connection to that domain (resumption: no
// certificate sent or checked, no signature; the key exchange still
// happens). The environment variable MAILNET_TLS_RESUMPTION=off turns that
// off (the benchmark's "without"); the server side issues session tickets
// either way.
std::shared_ptr<tls_setup> lazy_tls(const std::filesystem::path& tls_dir, const std::string& domain,
                                    std::function<void(const std::string& problem)> on_problem);
bool can_serve_tls(tls_setup* t);   // has the node's certificate and key (made now if not yet)
bool can_verify_tls(tls_setup* t);  // has the network's CA (made now if not yet)

struct tls_outcome {
  bool ok = false;
  std::string error;        // why the handshake failed (a certificate that does not verify, say)
  std::string description;  // "TLSv1.3 TLS_AES_256_GCM_SHA384" once ok
  bool resumed = false;     // an earlier session was resumed (abbreviated handshake, no certificate sent)
};

class smtp_channel {
 public:
  explicit smtp_channel(tcp::socket socket);
  ~smtp_channel();
  smtp_channel(const smtp_channel&) = delete;
  smtp_channel& operator=(const smtp_channel&) = delete;

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

  // STARTTLS (RFC 3207). Whatever the peer sent before the handshake and
  // nobody has read is thrown away first (a command pipelined after
  // STARTTLS must not run inside the TLS session: CVE-2011-0411); returns
  // how many bytes that was. Then every read and write goes through TLS.
  std::size_t discard_buffered();
  asio::awaitable<tls_outcome> start_tls_server(tls_setup& t, millis timeout);  // can_serve_tls(&t) first
  // verify: the peer's certificate must chain to the network's CA and name
  // (in its subjectAltName) domain or host, the name the resolver gave for
  // the address connected to (the MX or SRV target, "mx.<domain>"; empty:
  // the domain only); otherwise the handshake fails. SNI says domain.
  asio::awaitable<tls_outcome> start_tls_client(tls_setup& t, const std::string& domain, const std::string& host,
                                                bool verify, millis timeout);
  // "TLSv1.3 TLS_AES_256_GCM_SHA384" after a handshake, empty before.
  const std::string& tls_description() const { return tls_description_; }

  // Ends TLS politely: sends close_notify (within timeout) without waiting
  // for the peer's; nothing without TLS.
  asio::awaitable<void> shutdown_tls(millis timeout);

  // Writes a few bytes now, without waiting (QUIT into an idle kept
  // connection), through TLS when it is on; errors are ignored.
  void send_now(std::string_view data);

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

  struct tls_stream;
  asio::awaitable<tls_outcome> handshake(bool server, millis timeout);

  tcp::socket socket_;
  std::unique_ptr<tls_stream> tls_;  // set by start_tls_*: reads and writes go through it
  std::string tls_description_;
  asio::steady_timer timer_;
  std::uint64_t rate_ = 0;
  std::chrono::steady_clock::time_point next_read_{}, next_write_{};
  std::string in_;
  bool skipping_ = false;  // inside a command line already answered as too long
};

}  // namespace mailnet::node
