#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "node/node_context.hpp"

namespace mailnet::node {

// One SMTP conversation; owns its socket. Every read and write has a deadline.
boost::asio::awaitable<void> run_smtp_session(node_context& ctx, boost::asio::ip::tcp::socket socket);

}  // namespace mailnet::node
