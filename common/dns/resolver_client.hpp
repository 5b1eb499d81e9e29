// The node's way to find where mail for a domain goes: asks the mailnet
// resolver over UDP (SRV _smtp._tcp first, then MX, RFC 5321 §5.1), with a
// deadline per attempt, a few attempts, and a cache that honours TTLs.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/udp.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/dns/dns_message.hpp"

namespace mailnet::node {

struct mail_route {
  std::string host;  // an address literal: "127.0.0.1", "::1"
  std::uint16_t port = 25;
  // The host name that led to it: the SRV or MX target ("mx.jaku.com"), or
  // the domain itself (the implicit MX), lower case without the final dot.
  // The relay accepts a certificate for it as well as for the domain.
  std::string name{};
  // Where to connect: two targets with one address are one route (the first name kept).
  friend bool operator==(const mail_route& a, const mail_route& b) { return a.host == b.host && a.port == b.port; }
};

enum class lookup_status {
  ok,         // routes holds at least one route, best first
  nxdomain,   // permanent: the domain does not exist or takes no mail
  temporary,  // the resolver did not answer usefully: try again later
};

struct lookup_result {
  lookup_status status = lookup_status::temporary;
  std::vector<mail_route> routes;
  std::string detail;  // readable, for logs and DSN diagnostic text
};

// Forward-confirmed reverse DNS (RFC 8601 §3 "iprev"): the address's PTR
// names, and whether one of them has an A/AAAA record that is the address.
struct reverse_result {
  enum class verdict { pass, fail, temporary } outcome = verdict::temporary;
  std::string name;    // the confirmed name on pass
  std::string detail;  // readable: which step failed
};

class resolver_client {
 public:
  resolver_client(boost::asio::any_io_executor ex, boost::asio::ip::udp::endpoint server,
                  std::chrono::milliseconds timeout, int attempts);

  boost::asio::awaitable<lookup_result> lookup_mail_route(std::string domain);

  // address: an address literal ("127.0.0.2", "::1"). At most 10 PTR names
  // are followed (RFC 7208 §4.6.4 sets the same bound for "ptr"), and no
  // new question is asked once twice one question's whole wait (timeout ×
  // attempts) has passed since the check began: a resolver that stalls
  // makes it a temporary failure within about three such waits, not eleven
  // (the session waits for it before its greeting, a graceful stop too).
  boost::asio::awaitable<reverse_result> confirm_reverse(std::string address);

  // One question through the cache, retries and deadlines (also for tools
  // such as `mailnet resolve`). Never throws for network trouble: that is
  // reply_kind::failure.
  boost::asio::awaitable<dns_reply> query(std::string name, std::uint16_t type);

  // The cached reply to a question, if there is a live one; never asks.
  // Safe from any thread (the node's check threads answer from it without
  // a trip through the event loop). query() gives the same reply while it lasts.
  std::optional<dns_reply> cached(const std::string& name, std::uint16_t type);

  void clear_cache();

 private:
  boost::asio::awaitable<dns_reply> exchange(const std::string& name, std::uint16_t type);
  // Addresses for an SRV/MX target: the glue in `from` first, then A, then AAAA.
  boost::asio::awaitable<dns_reply> addresses_of(const std::string& host, const dns_reply& from);
  std::uint16_t next_id();

  struct cache_entry {
    dns_reply reply;
    std::chrono::steady_clock::time_point expires;
  };

  boost::asio::any_io_executor executor_;
  boost::asio::ip::udp::endpoint server_;
  std::chrono::milliseconds timeout_;
  int attempts_;
  std::mutex mutex_;  // the cache and the id generator, should the node run several threads
  std::map<std::pair<std::string, std::uint16_t>, cache_entry> cache_;
  std::mt19937 random_;
};

}  // namespace mailnet::node
