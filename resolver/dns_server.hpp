// The resolver's front: UDP, one socket, one coroutine, one reply per query.
// Under load it takes up to a batch of datagrams per system call (recvmmsg),
// answers them, logs them in one write and sends the replies together
// (sendmmsg); replies to a query seen before come from a small cache. And TCP
// on the same port (RFC 7766: every DNS server takes both), for `dig +tcp`,
// `dig ANY` and clients that retry over TCP: two-byte length, then the message.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <memory>
#include <unordered_map>
#include <vector>

#include "resolver/dns_faults.hpp"
#include "resolver/tcp_slots.hpp"
#include "resolver/zone.hpp"

namespace mailnet {
class event_log;
struct endpoint;
}  // namespace mailnet

namespace mailnet::resolver {

class dns_server {
 public:
  // Binds at once, so that a busy port fails here and not later.
  // Throws boost::system::system_error; what() names the address.
  // faults: the topology's dns fault rules (none by default).
  dns_server(boost::asio::any_io_executor ex, zone z, const endpoint& listen, event_log& log,
             dns_faults faults = {});

  boost::asio::ip::udp::endpoint local_endpoint() const { return local_endpoint_; }

  // Serves until stop(). Socket errors are logged and the loop goes on.
  boost::asio::awaitable<void> run();
  // The same over TCP, when the port could be bound for TCP too (tcp_ready()).
  boost::asio::awaitable<void> run_tcp();
  bool tcp_ready() const { return tcp_.is_open(); }

  void stop();

  // A change of the dns fault rules while serving (mailnet fault add, clear).
  // Cached answers are forgotten: a name a new rule covers must not be
  // answered from the cache. A query in flight has its answer already.
  template <typename Change>
  void change_faults(Change&& change) {
    change(faults_);
    cache_.clear();
  }
  const dns_faults& faults() const { return faults_; }

 private:
  // handle_query() is a pure function of the query bytes, and the reply
  // differs between two queries that differ only in their id by that id
  // alone: so replies are kept by the query with its id zeroed. bench/README.md
  // ("resolver") has the measurement: ldns built every reply before.
  struct cached_answer {
    std::optional<std::vector<std::uint8_t>> reply;  // with the first asker's id; none: dropped
    std::string log_tail;  // the log line after client=..., e.g. " name=... type=SRV ..."
    bool echoes_id = false;  // reply[0..1] is the query's id, to be replaced by the next asker's
    std::string fault_tail;  // a fault made it: " rule=... stage=dns answer=... name=... type=..."; never cached
  };
  const cached_answer& answer(const std::uint8_t* query, std::size_t size);
  // The log tail of a query's outcome (" name=... type=... rcode=... answer=...").
  static std::string log_tail(const query_outcome& outcome, std::size_t size);
  // The fields of an event=fault line, empty when no fault made the outcome.
  static std::string fault_tail(const query_outcome& outcome);
  boost::asio::awaitable<void> tcp_session(std::shared_ptr<boost::asio::ip::tcp::socket> socket,
                                           tcp_slots::slot_id slot);
  // Answers one query read over TCP and logs it; false when the connection must end.
  boost::asio::awaitable<bool> answer_tcp(boost::asio::ip::tcp::socket& socket, const std::vector<std::uint8_t>& query,
                                          const std::string& client);

  zone zone_;
  dns_faults faults_;
  std::unordered_map<std::string, cached_answer> cache_;
  cached_answer scratch_;  // the answer to a query too odd to keep
  event_log& log_;
  boost::asio::ip::udp::socket socket_;
  boost::asio::ip::udp::endpoint local_endpoint_;
  boost::asio::ip::tcp::acceptor tcp_;
  tcp_slots tcp_slots_;  // every open TCP connection; closed by stop()
  bool stopped_ = false;
};

}  // namespace mailnet::resolver
