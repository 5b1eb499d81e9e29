// The resolver's UDP front: one socket, one coroutine, one reply per query.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/udp.hpp>

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
  dns_server(boost::asio::any_io_executor ex, zone z, const endpoint& listen, event_log& log);

  boost::asio::ip::udp::endpoint local_endpoint() const { return local_endpoint_; }

  // Serves until stop(). Socket errors are logged and the loop goes on.
  boost::asio::awaitable<void> run();

  void stop();

 private:
  zone zone_;
  event_log& log_;
  boost::asio::ip::udp::socket socket_;
  boost::asio::ip::udp::endpoint local_endpoint_;
  bool stopped_ = false;
};

}  // namespace mailnet::resolver
