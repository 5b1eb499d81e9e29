#include "launcher/web/web_server.hpp"

#include "launcher/web/event_feed.hpp"
#include "launcher/web/peer_user.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <array>
#include <charconv>
#include <iostream>

namespace mailnet::launcher::web {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& context, const endpoint& listen, control_function control, server_limits l)
      : io(context), acceptor(context), web(listen, std::move(control)), limits(l) {}

  asio::io_context& io;
  tcp::acceptor acceptor;
  api web;
  server_limits limits;
  std::size_t active = 0;
  std::size_t large_bodies = 0;  // POST /api/v1/send bodies over body_bytes being read or handled
  event_feed feed;

  asio::awaitable<void> accept_loop();
  asio::awaitable<void> events(beast::tcp_stream& stream, events_query query);
  asio::awaitable<void> session(tcp::socket socket, std::optional<std::string> refusal);
};

namespace {

std::string reply_text(const response& r) {
  const int status = r.status;
  const char* phrase = status == 400   ? "Bad Request"
                       : status == 403 ? "Forbidden"
                       : status == 413 ? "Payload Too Large"
                       : status == 431 ? "Request Header Fields Too Large"
                       : status == 503 ? "Service Unavailable"
                                       : "Error";
  return "HTTP/1.1 " + std::to_string(status) + " " + phrase + "\r\nContent-Type: " + r.content_type +
         "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n" + r.body;
}

std::string reply_text(int status, const std::string& reason) { return reply_text(error_response(status, reason)); }

// The one endpoint whose body may be larger than server_limits::body_bytes.
bool takes_large_body(std::string_view target) { return target.substr(0, target.find('?')) == "/api/v1/send"; }

void report_failure(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::cerr << "mailnet: web server: internal error: " << ex.what() << "\n";
  }
}

}  // namespace

asio::awaitable<void> server::impl::accept_loop() {
  auto self = shared_from_this();
  asio::steady_timer pause(io);
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors (EMFILE): the connection waits in the backlog; do not spin on it.
      pause.expires_after(std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    // Another local user is refused as mailnet.sock refuses them (the owner
    // and root only). Looked up now, while the client's socket surely exists;
    // told after its request is read, so that the client reads the reason.
    auto refusal = refusal_for_tcp_peer(socket.native_handle());
    if (active >= limits.connections) {
      // One short answer into the socket's empty buffer (never waits), then closed.
      boost::system::error_code ignored;
      socket.non_blocking(true, ignored);
      const auto text = reply_text(503, "too many connections to the web server (" +
                                            std::to_string(limits.connections) + "); try again");
      socket.write_some(asio::buffer(text), ignored);
      socket.close(ignored);
      continue;
    }
    ++active;
    asio::co_spawn(io, session(std::move(socket), std::move(refusal)), [self](std::exception_ptr e) {
      --self->active;
      report_failure(e);
    });
  }
}

asio::awaitable<void> server::impl::session(tcp::socket socket, std::optional<std::string> refusal) {
  auto self = shared_from_this();
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(limits.header_bytes + limits.body_bytes + 4096);
  bool unread_body = false;  // answered before the request was read whole
  for (std::size_t i = 0; i < limits.requests_per_connection; ++i) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.header_bytes));
    // The headers first: POST /api/v1/send may carry more (its attachments).
    // Beast would check a Content-Length against its limit as the headers
    // end; the limit is known only then, so it is set and checked here.
    parser.body_limit(boost::none);
    stream.expires_after(i == 0 ? limits.request_time : limits.idle);
    std::size_t body_limit = limits.body_bytes;
    // Counts this request among the large ones until it is answered.
    struct large_slot {
      std::size_t* count = nullptr;
      ~large_slot() { if (count) --*count; }
    } slot;
    bool busy = false;
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (!ec) {
      if (parser.get().method() == http::verb::post && takes_large_body(parser.get().target())) {
        body_limit = limits.send_body_bytes;
        // A body that may be over the usual limit takes one of a few slots, so that
        // many clients cannot hold send_body_bytes each in the launcher's memory;
        // a request that will be refused anyway takes none and is not read.
        if (!parser.content_length() || *parser.content_length() > limits.body_bytes) {
          request head;
          head.method = "POST";
          head.target = std::string(parser.get().target());
          const auto& h = parser.get();
          auto one = [&](http::field f) -> std::optional<std::string> {
            if (h.count(f) == 0) return std::nullopt;
            if (h.count(f) > 1) return std::string("(several)");
            return std::string(h[f]);
          };
          head.host = one(http::field::host);
          head.origin = one(http::field::origin);
          head.content_type = one(http::field::content_type);
          std::optional<response> early;
          if (refusal) early = error_response(403, "refused: " + *refusal);
          else if (auto no = web.refuse_host(head)) early = std::move(no);
          else if (auto no_change = web.refuse_change_headers(head)) early = std::move(no_change);
          if (early) {
            const auto text = reply_text(*early);
            stream.expires_after(limits.write_time);
            co_await asio::async_write(stream, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
            unread_body = true;
            break;
          }
          if (large_bodies >= limits.large_bodies) busy = true;
          else {
            ++large_bodies;
            slot.count = &large_bodies;
          }
        }
      }
      parser.body_limit(body_limit);
      if (parser.content_length() && *parser.content_length() > body_limit) ec = http::error::body_limit;
    }
    if (!ec && busy) {
      const auto text = reply_text(503, std::to_string(limits.large_bodies) +
                                            " sends with large bodies are being received already; try again");
      stream.expires_after(limits.write_time);
      co_await asio::async_write(stream, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
      unread_body = true;
      break;
    }
    if (!ec && !parser.is_done()) {
      auto [body_ec, body_n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      ec = body_ec;
    }
    if (ec) {
      // A request too large, or not HTTP, is told why; a client that went
      // away or said nothing in time is just closed.
      std::string text;
      if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
        text = reply_text(431, "the request's headers are over " + std::to_string(limits.header_bytes) + " bytes");
      else if (ec == http::error::body_limit)
        text = reply_text(413, "the request's body is over " + std::to_string(body_limit) + " bytes");
      else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message)
        text = reply_text(400, "not a valid HTTP request (" + ec.message() + ")");
      if (!text.empty()) {
        stream.expires_after(limits.write_time);
        co_await asio::async_write(stream, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
        unread_body = true;
      }
      break;
    }
    auto& req = parser.get();
    if (refusal) {
      const auto text = reply_text(403, "refused: " + *refusal);
      stream.expires_after(limits.write_time);
      co_await asio::async_write(stream, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
      break;
    }
    request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    auto header = [&](http::field f) -> std::optional<std::string> {
      const auto count = req.count(f);
      if (count == 0) return std::nullopt;
      if (count > 1) return std::string("(") + std::to_string(count) + " headers)";  // never a match
      return std::string(req[f]);
    };
    r.host = header(http::field::host);
    r.origin = header(http::field::origin);
    r.content_type = header(http::field::content_type);
    r.body = std::move(req.body());
    const bool keep_alive = req.keep_alive();
    const unsigned version = req.version();

    // The event stream holds its connection (one of the capped ones) to the end.
    if (r.method == "GET" && r.target.substr(0, r.target.find('?')) == "/api/v1/events" && !web.refuse_host(r)) {
      // ?since=N is a page's first connection (a browser's EventSource cannot
      // send Last-Event-ID before it has seen an event): since=0 replays what
      // is kept. ?events=a,b: only those events.
      const auto mark = r.target.find('?');
      auto query = parse_events_query(mark == std::string::npos ? std::string_view()
                                                                : std::string_view(r.target).substr(mark + 1));
      if (!query.error.empty()) {
        const auto text = reply_text(400, "GET /api/v1/events: " + query.error);
        stream.expires_after(limits.write_time);
        co_await asio::async_write(stream, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
        break;
      }
      if (req.count("Last-Event-ID") == 1) {
        const auto v = req["Last-Event-ID"];
        std::uint64_t id = 0;
        const auto [end, err] = std::from_chars(v.data(), v.data() + v.size(), id);
        if (err == std::errc() && end == v.data() + v.size()) query.since = id;
      }
      co_await events(stream, std::move(query));
      break;
    }

    const response out = co_await web.answer(std::move(r));
    http::response<http::string_body> res{static_cast<http::status>(out.status), version};
    res.set(http::field::content_type, out.content_type);
    for (const auto& [name, value] : out.headers) res.set(name, value);
    res.body() = out.body;
    res.keep_alive(keep_alive);
    res.prepare_payload();
    stream.expires_after(limits.write_time);
    auto [wec, written] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !keep_alive) break;
  }
  boost::system::error_code ignored;
  if (unread_body) {
    // A lingering close: the answer and a FIN go first, then what the client
    // still sends is read and dropped until it closes or linger has passed.
    // Closing at once with bytes unread would make the kernel send a reset,
    // which can discard the answer from the client's receive buffer.
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.expires_after(limits.linger);
    std::array<char, 16384> sink;
    for (;;) {
      auto [rec, got] = co_await stream.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
      if (rec) break;
    }
  }
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

asio::awaitable<void> server::impl::events(beast::tcp_stream& stream, events_query query) {
  auto self = shared_from_this();
  asio::steady_timer wait(io);
  const auto client = feed.subscribe(query.since, std::move(query.filter));
  struct leave {
    event_feed& feed;
    const std::shared_ptr<event_feed::client>& client;
    ~leave() {
      client->wake = nullptr;
      feed.unsubscribe(client);
    }
  } guard{feed, client};
  // New frames end the wait for them (once: a burst of events cancels one
  // wait, not one per event); a drop ends any wait and a write that the
  // client does not read.
  bool idle = false;  // waiting for frames
  client->wake = [&wait, &stream, &idle, c = client.get()] {
    if (c->dropped) {
      boost::system::error_code ignored;
      stream.socket().cancel(ignored);
      wait.cancel();
    } else if (idle) {
      idle = false;
      wait.cancel();
    }
  };
  // Little kernel buffering per stream: a client that does not read soon
  // falls behind its bounded queue and is dropped.
  boost::system::error_code ignored;
  stream.socket().set_option(asio::socket_base::send_buffer_size(static_cast<int>(limits.event_socket_buffer)),
                             ignored);
  std::string out =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
      "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n: mailnet events\n\n";
  auto last_write = asio::steady_timer::clock_type::now() - limits.event_batch;
  for (;;) {
    if (out.empty() && !client->dropped) {
      if (client->frames.empty()) {
        wait.expires_after(limits.heartbeat);
        idle = true;
        auto [ec] = co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
        idle = false;
        if (!ec) out = ": heartbeat\n\n";
      }
      // A loaded node's events come in bursts: those of the next event_batch
      // after a write go out together in one write (and one read and parse
      // for the browser), not one write each.
      if (!client->frames.empty() && !client->dropped) {
        const auto due = last_write + limits.event_batch;
        if (asio::steady_timer::clock_type::now() < due) {
          wait.expires_at(due);
          co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
        }
      }
      for (; !client->frames.empty(); client->frames.pop_front()) out += client->frames.front();
      client->bytes = 0;
    }
    if (client->dropped) break;
    if (out.empty()) continue;
    stream.expires_after(limits.write_time);
    auto [wec, written] = co_await asio::async_write(stream, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
    if (wec) break;
    last_write = asio::steady_timer::clock_type::now();
    out.clear();
  }
  if (client->dropped) {
    const event_feed_limits l;
    std::cerr << "mailnet: web server: dropped an event stream client (GET /api/v1/events) that fell "
              << l.client_events << " events or " << (l.client_bytes >> 20) << " MiB behind\n";
  }
}

server::server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

server::~server() { close(); }

std::unique_ptr<server> server::open(asio::io_context& io, const endpoint& listen, control_function control,
                                     std::string& error, server_limits limits) {
  auto p = std::make_shared<impl>(io, listen, std::move(control), limits);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(listen.host, ec);
  if (ec) {
    error = listen.to_string() + ": " + ec.message();
    return nullptr;
  }
  const tcp::endpoint where(address, listen.port);
  auto failed = [&](const char* what) {
    error = std::string("cannot ") + what + " " + listen.to_string() + ": " + ec.message();
    return nullptr;
  };
  p->acceptor.open(where.protocol(), ec); if (ec) return failed("open a socket for");
  p->acceptor.set_option(tcp::acceptor::reuse_address(true), ec); if (ec) return failed("set SO_REUSEADDR on");
  p->acceptor.bind(where, ec); if (ec) return failed("listen on");
  p->acceptor.listen(asio::socket_base::max_listen_connections, ec); if (ec) return failed("listen on");
  return std::unique_ptr<server>(new server(std::move(p)));
}

void server::publish(std::string_view node, std::string_view line) { impl_->feed.publish(node, line); }

void server::publish_state(std::string_view node, std::string_view state, std::string_view exit_text) {
  impl_->feed.publish(node, state_event_line(state, exit_text));
}

void server::set_sender(send_function send) { impl_->web.set_sender(std::move(send)); }

void server::start() {
  asio::co_spawn(impl_->io, impl_->accept_loop(), report_failure);
  asio::co_spawn(impl_->io, impl_->web.warm_up(), report_failure);
}

void server::close() {
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
}

}  // namespace mailnet::launcher::web
