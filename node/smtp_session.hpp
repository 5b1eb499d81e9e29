#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "node/node_context.hpp"

namespace mailnet::node {

// One SMTP conversation; owns its socket. Every read and write has a deadline.
// submission: the domain's submission listener (STARTTLS, AUTH, then MAIL).
boost::asio::awaitable<void> run_smtp_session(node_context& ctx, boost::asio::ip::tcp::socket socket,
                                              bool submission = false);

}  // namespace mailnet::node
