#include "node/smtp_channel.hpp"

#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
// The only translation unit of the node with Boost.Asio's SSL headers (and,
// under BOOST_ASIO_SEPARATE_COMPILATION, the one that compiles their code).
#include <boost/asio/ssl.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/private_files.hpp"

namespace mailnet::node {

using namespace asio::experimental::awaitable_operators;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace ssl = asio::ssl;

namespace {
void keep_sessions(ssl::context& c);  // below: the client contexts keep their peers' sessions
}  // namespace

class tls_setup {
 public:
  tls_setup(std::filesystem::path dir, std::string domain, std::function<void(const std::string&)> on_problem)
      : dir_(std::move(dir)), domain_(std::move(domain)), on_problem_(std::move(on_problem)) {
    const char* resumption = std::getenv("MAILNET_TLS_RESUMPTION");
    resume = !(resumption && std::string_view(resumption) == "off");
  }
  ~tls_setup() {
    for (auto& [key, session] : sessions_) SSL_SESSION_free(session);
  }

  // The node's certificate and key; null when they cannot be loaded.
  ssl::context* server() {
    if (!server_tried_) {
      server_tried_ = true;
      try {
        auto c = std::make_unique<ssl::context>(ssl::context::tls_server);
        harden(*c);
        // Resumption, server side: OpenSSL's stateless tickets (TLS 1.3 and 1.2),
        // sealed with a key this process made (a restarted node takes none of
        // the old tickets: a full handshake then). One ticket per handshake,
        // not OpenSSL's two: the relay keeps only the newest.
        SSL_CTX_set_num_tickets(c->native_handle(), 1);
        static const unsigned char context_id[] = "mailnet-smtp";
        SSL_CTX_set_session_id_context(c->native_handle(), context_id, sizeof context_id - 1);
        const std::string cert = read_private(dir_ / ("node." + domain_ + ".pem"));
        const std::string key = read_private(dir_ / ("node." + domain_ + ".key"));
        c->use_certificate_chain(asio::buffer(cert));
        c->use_private_key(asio::buffer(key), ssl::context::pem);
        server_ = std::move(c);
      } catch (const std::exception& e) {
        on_problem_(std::string("no certificate for STARTTLS: ") + e.what());
      }
    }
    return server_.get();
  }

  // Trusts the network's CA only and checks the peer; null without the CA.
  ssl::context* verify_client() {
    if (!verify_tried_) {
      verify_tried_ = true;
      try {
        auto c = std::make_unique<ssl::context>(ssl::context::tls_client);
        harden(*c);
        c->add_certificate_authority(asio::buffer(read_private(dir_ / "ca.pem")));
        c->set_verify_mode(ssl::verify_peer);
        keep_sessions(*c);
        verify_client_ = std::move(c);
      } catch (const std::exception& e) {
        on_problem_(std::string("no CA to verify peers: ") + e.what());
      }
    }
    return verify_client_.get();
  }

  // Opportunistic: encrypts, checks nothing.
  ssl::context& plain_client() {
    if (!plain_client_) {
      plain_client_ = std::make_unique<ssl::context>(ssl::context::tls_client);
      harden(*plain_client_);
      plain_client_->set_verify_mode(ssl::verify_none);
      keep_sessions(*plain_client_);
    }
    return *plain_client_;
  }

  // Resumption, client side: the newest session each peer gave, by key
  // "verify:<domain>" or "plain:<domain>". Apart, because a resumed
  // handshake shows no certificate and so checks none: only a session that
  // was verified for a domain may stand in for verifying that domain again.
  bool resume = true;  // MAILNET_TLS_RESUMPTION=off: neither kept nor offered
  void keep(const std::string& key, SSL_SESSION* session) const {
    std::lock_guard lock(mutex_);
    auto& slot = sessions_[key];
    if (slot) SSL_SESSION_free(slot);
    slot = session;  // ours now
  }
  // Offers the kept session for key to ssl, if there is one still worth offering.
  void offer(SSL* ssl, const std::string& key) const {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(key);
    if (it != sessions_.end() && SSL_SESSION_is_resumable(it->second)) SSL_set_session(ssl, it->second);
  }

 private:
  static void harden(ssl::context& c) {
    c.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::no_compression);
  }
  // The file's bytes; throws when it cannot be read (it must be a regular file
  // of ours, reached without a link: common/private_files.hpp).
  static std::string read_private(const std::filesystem::path& file) { return read_private_file(file, 1 << 20); }

  std::filesystem::path dir_;
  std::string domain_;
  std::function<void(const std::string&)> on_problem_;
  bool server_tried_ = false, verify_tried_ = false;
  std::unique_ptr<ssl::context> server_, verify_client_, plain_client_;
  mutable std::mutex mutex_;  // a node has one I/O thread today; this keeps it right with more
  mutable std::map<std::string, SSL_SESSION*> sessions_;
};

namespace {

// Where a relay connection's new session goes (attached to its SSL as ex data).
struct session_slot {
  const tls_setup* setup = nullptr;
  std::string key;
};

int session_slot_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// OpenSSL's new-session callback on the client contexts: at the end of a
// TLS 1.2 handshake, or when a TLS 1.3 ticket arrives (after the handshake,
// with the peer's first reply). A copy is kept: the connection's own session
// object is marked not resumable when the connection is freed without a
// close_notify (a TLS 1.2 rule), and the relay ends a connection with QUIT
// and a close. 0: OpenSSL keeps its reference to the original.
int keep_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* slot = static_cast<session_slot*>(SSL_get_ex_data(ssl, session_slot_index()));
  if (!slot || !slot->setup || !SSL_SESSION_is_resumable(session)) return 0;
  if (SSL_SESSION* copy = SSL_SESSION_dup(session)) slot->setup->keep(slot->key, copy);
  return 0;
}

void keep_sessions(ssl::context& c) {
  SSL_CTX_set_session_cache_mode(c.native_handle(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c.native_handle(), keep_new_session);
}

}  // namespace

struct smtp_channel::tls_stream {
  tls_stream(tcp::socket& s, ssl::context& c) : stream(s, c) {}
  ssl::stream<tcp::socket&> stream;
  session_slot slot;  // relay client with resumption: where its sessions go
};

std::shared_ptr<tls_setup> lazy_tls(const std::filesystem::path& tls_dir, const std::string& domain,
                                    std::function<void(const std::string& problem)> on_problem) {
  return std::make_shared<tls_setup>(tls_dir, domain, std::move(on_problem));
}

bool can_serve_tls(tls_setup* t) { return t && t->server(); }
bool can_verify_tls(tls_setup* t) { return t && t->verify_client(); }

smtp_channel::smtp_channel(tcp::socket socket) : socket_(std::move(socket)), timer_(socket_.get_executor()) {}

smtp_channel::~smtp_channel() = default;

std::size_t smtp_channel::discard_buffered() {
  const std::size_t n = in_.size();
  in_.clear();
  skipping_ = false;
  return n;
}

asio::awaitable<tls_outcome> smtp_channel::handshake(bool server, millis timeout) {
  tls_outcome out;
  timer_.expires_after(timeout);
  auto result = co_await (tls_->stream.async_handshake(server ? ssl::stream_base::server : ssl::stream_base::client,
                                                       use_tuple) ||
                          timer_.async_wait(use_tuple));
  if (result.index() == 1) {
    out.error = "TLS handshake timed out";
    co_return out;
  }
  auto [ec] = std::get<0>(result);
  SSL* native = tls_->stream.native_handle();
  if (ec) {
    const long verify = SSL_get_verify_result(native);
    out.error = verify != X509_V_OK ? std::string("certificate verification failed: ") +
                                          X509_verify_cert_error_string(verify)
                                    : "TLS handshake failed: " + ec.message();
    co_return out;
  }
  out.ok = true;
  out.resumed = SSL_session_reused(native) == 1;
  out.description = std::string(SSL_get_version(native)) + " " + SSL_get_cipher_name(native);
  tls_description_ = out.description;
  co_return out;
}

asio::awaitable<tls_outcome> smtp_channel::start_tls_server(tls_setup& t, millis timeout) {
  discard_buffered();
  if (!t.server()) co_return tls_outcome{false, "TLS not available", {}};
  tls_ = std::make_unique<tls_stream>(socket_, *t.server());
  co_return co_await handshake(true, timeout);
}

asio::awaitable<tls_outcome> smtp_channel::start_tls_client(tls_setup& t, const std::string& domain,
                                                            const std::string& host, bool verify, millis timeout) {
  discard_buffered();
  if (verify && !t.verify_client()) co_return tls_outcome{false, "no CA certificate to verify the peer with", {}};
  tls_ = std::make_unique<tls_stream>(socket_, verify ? *t.verify_client() : t.plain_client());
  SSL* native = tls_->stream.native_handle();
  SSL_set_tlsext_host_name(native, domain.c_str());
  const bool also_host = !host.empty() && host != domain;
  if (t.resume) {
    // The key names every name the certificate may carry: a session proven
    // for the domain or mail host H stands for that pair only.
    tls_->slot = {&t, (verify ? "verify:" : "plain:") + domain + (also_host ? " " + host : std::string())};
    SSL_set_ex_data(native, session_slot_index(), &tls_->slot);
    t.offer(native, tls_->slot.key);
  }
  if (verify) {
    // The certificate must name the domain, or the mail host the resolver
    // named for it (RFC 7672 §3.2.2 accepts either), itself: no wildcard
    // stands for one, and no other name will do.
    SSL_set_hostflags(native, X509_CHECK_FLAG_NO_WILDCARDS);
    if (SSL_set1_host(native, domain.c_str()) != 1) co_return tls_outcome{false, "bad host name " + domain, {}};
    if (also_host && SSL_add1_host(native, host.c_str()) != 1)
      co_return tls_outcome{false, "bad host name " + host, {}};
  }
  auto out = co_await handshake(false, timeout);
  if (!out.ok && verify && out.error.find("hostname mismatch") != std::string::npos)
    out.error += " (the certificate names neither " + domain + (also_host ? " nor " + host : std::string()) + ")";
  co_return out;
}

asio::awaitable<void> smtp_channel::shutdown_tls(millis timeout) {
  if (!tls_) co_return;
  // Ours only: marked as if the peer's had come, the shutdown sends
  // close_notify and ends without waiting for a reply most peers never send.
  SSL* native = tls_->stream.native_handle();
  SSL_set_shutdown(native, SSL_get_shutdown(native) | SSL_RECEIVED_SHUTDOWN);
  timer_.expires_after(timeout);
  co_await (tls_->stream.async_shutdown(use_tuple) || timer_.async_wait(use_tuple));
}

void smtp_channel::send_now(std::string_view data) {
  boost::system::error_code ec;
  if (tls_) asio::write(tls_->stream, asio::buffer(data), ec);
  else socket_.write_some(asio::buffer(data), ec);
}

asio::awaitable<io_status> smtp_channel::fill(std::chrono::steady_clock::time_point deadline) {
  if (std::chrono::steady_clock::now() >= deadline) co_return io_status::timeout;
  char chunk[16384];
  timer_.expires_at(deadline);
  // Named first: GCC 12 destroyed a ?: temporary twice inside a co_await.
  auto read = tls_ ? tls_->stream.async_read_some(asio::buffer(chunk), use_tuple)
                   : socket_.async_read_some(asio::buffer(chunk), use_tuple);
  auto result = co_await (std::move(read) || timer_.async_wait(use_tuple));
  if (result.index() == 1) co_return io_status::timeout;
  auto [ec, n] = std::get<0>(result);
  // A TLS peer that closes without close_notify has ended the session all the same.
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated) co_return io_status::eof;
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
  auto send = tls_ ? asio::async_write(tls_->stream, asio::buffer(data), use_tuple)
                   : asio::async_write(socket_, asio::buffer(data), use_tuple);
  auto result = co_await (std::move(send) || timer_.async_wait(use_tuple));
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
