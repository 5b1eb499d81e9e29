// Delivery of queued mail to other nodes: resolve the domain, speak SMTP as a
// client, keep a result per recipient, retry with backoff on temporary
// trouble, give up after the topology's give_up_after.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "node/node_context.hpp"


namespace mailnet::node {

class resolver_client;

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

 private:
  boost::asio::awaitable<void> deliver(std::shared_ptr<queued_message> m);
  boost::asio::awaitable<void> attempt_domain(queued_message& m, const std::string& domain);
  // A DSN to the sender for recipients that failed for good.
  boost::asio::awaitable<void> send_bounce(const queued_message& m, const std::vector<const queued_recipient*>& failed);

  boost::asio::any_io_executor ex_;
  node_context& ctx_;
  resolver_client& resolver_;
  std::map<std::string, std::shared_ptr<boost::asio::steady_timer>> waiting_;  // id -> backoff timer
};

}  // namespace mailnet::node
