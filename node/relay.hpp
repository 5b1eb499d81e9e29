// Delivery of queued mail to other nodes: resolve the domain, speak SMTP as a
// client, keep a result per recipient, retry with backoff on temporary
// trouble, give up after the topology's give_up_after.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "node/node_context.hpp"
#include "node/smtp_client_protocol.hpp"


namespace mailnet::node {

class resolver_client;
class smtp_channel;

// The connections to one destination (host:port), open or connecting, kept
// idle ones included, and the deliveries waiting for one of them to end.
struct destination_slots {
  std::size_t open = 0;
  std::list<std::shared_ptr<boost::asio::steady_timer>> waiting;
  bool closing = false;  // the relay is gone: wake no one
  void wake_one();
  void wake_all();
};

// One connection's share of its destination's cap, given back when it ends.
class connection_slot {
 public:
  connection_slot() = default;
  explicit connection_slot(std::shared_ptr<destination_slots> d) : d_(std::move(d)) { ++d_->open; }
  connection_slot(connection_slot&&) = default;
  connection_slot& operator=(connection_slot&& other) noexcept {
    std::swap(d_, other.d_);
    return *this;
  }
  ~connection_slot();

 private:
  std::shared_ptr<destination_slots> d_;
};

class relay {
 public:
  relay(boost::asio::any_io_executor ex, node_context& ctx, resolver_client& resolver);
  ~relay();

  // Starts a delivery coroutine for a message now on disk.
  void schedule(queued_message m);
  // Loads every queue file (after a restart) and schedules it.
  void recover();
  // Retries every waiting message now.
  void flush();
  // A graceful stop: no attempt, transaction or connection starts from now on
  // (the queue files stay for the next start), deliveries waiting for a
  // connection give up their wait, kept connections close; busy() while an
  // attempt already under way has not finished.
  void stop();
  bool busy() const { return *attempts_under_way_ > 0; }

 private:
  boost::asio::awaitable<void> deliver(std::shared_ptr<queued_message> m);
  boost::asio::awaitable<void> attempt_domain(queued_message& m, const std::string& domain);
  // One transaction with one peer; false when no connection could be had.
  // host: the name the resolver gave for where (the MX or SRV target), whose
  // certificate is accepted as well as the domain's.
  boost::asio::awaitable<bool> attempt_peer(queued_message& m, const std::string& domain,
                                            const std::vector<queued_recipient*>& rcpts,
                                            boost::asio::ip::tcp::endpoint where, const std::string& host);
  boost::asio::awaitable<void> converse(smtp_channel& ch, smtp_client_protocol& protocol, const queued_message& m,
                                        const std::string& domain, const std::string& peer, const std::string& host,
                                        tls_want want);
  static void apply_verdicts(const smtp_client_protocol& protocol, const std::vector<queued_recipient*>& rcpts);
  // A DSN to the sender for recipients that failed for good.
  boost::asio::awaitable<void> send_bounce(const queued_message& m, const std::vector<const queued_recipient*>& failed);

  // Connection caching (as Postfix's scache): after a transaction that ended
  // with a reply to its data, the connection is kept for the next message to
  // the same host:port, for up to idle_limit, instead of QUIT and a new
  // connect, greeting and EHLO per message.
  struct kept_connection {
    std::unique_ptr<smtp_channel> channel;
    connection_slot slot;
    bool greeted = false;  // past the greeting and EHLO
    bool pipelining = false;
    bool size = false;
    bool tls = false;
    std::string verified_for;  // the domain whose certificate it showed, under policy.tls_relay "verify"
    std::chrono::steady_clock::time_point since;
  };
  static constexpr std::chrono::seconds idle_limit{3};
  static constexpr std::size_t kept_per_peer = 8;  // idle ones count against the peer's connection limit
  // Under "verify", only a connection verified for domain is taken.
  std::optional<kept_connection> take_kept(const std::string& peer, const std::string& domain);
  void keep(const std::string& peer, kept_connection c);
  boost::asio::awaitable<void> sweep_kept();  // runs while any connection is kept
  // A kept connection, or a new one once the destination is under its cap
  // (limits.relay_connections_per_destination); nullopt if it cannot connect.
  boost::asio::awaitable<std::optional<kept_connection>> open_connection(const std::string& peer,
                                                                         boost::asio::ip::tcp::endpoint where,
                                                                         const std::string& domain);
  // policy.tls_relay, or off when the network has no TLS.
  tls_want tls_want_of_config() const;
  std::shared_ptr<destination_slots> slots_of(const std::string& peer);

  boost::asio::any_io_executor ex_;
  node_context& ctx_;
  resolver_client& resolver_;
  std::map<std::string, std::shared_ptr<boost::asio::steady_timer>> waiting_;  // id -> backoff timer
  std::uint64_t flushes_ = 0;  // flush() calls so far
  std::map<std::string, std::vector<kept_connection>> kept_;                 // "host:port" -> idle connections
  std::map<std::string, std::shared_ptr<destination_slots>> slots_;         // "host:port" -> its cap's count
  bool sweeping_ = false;
  bool stopping_ = false;
  // Shared with each attempt's guard: a frame destroyed after the relay can still count down.
  std::shared_ptr<std::size_t> attempts_under_way_ = std::make_shared<std::size_t>(0);
};

}  // namespace mailnet::node
