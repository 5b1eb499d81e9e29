// The launcher's HTTP server (Boost.Beast, in web_server.cpp only): accepts
// on web.listen, reads bounded requests with deadlines, and answers them
// through web::api on the launcher's own io_context. A slow or hostile client
// holds at most one of a capped number of connections and never blocks the
// supervisor: every read and write is asynchronous and has a deadline.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "common/topology.hpp"
#include "launcher/web/web_api.hpp"

namespace boost::asio {
class io_context;
}

namespace mailnet::launcher::web {

struct server_limits {
  std::size_t connections = 64;          // more get a 503 and are closed
  std::size_t header_bytes = 8192;       // the request line and headers: more is a 431
  std::size_t body_bytes = 65536;        // more is a 413
  std::size_t send_body_bytes = 10u << 20;  // POST /api/v1/send's, with its attachments in base64
  std::size_t large_bodies = 2;             // such sends over body_bytes at once; more get 503
  std::chrono::milliseconds request_time{10000};  // for a whole request on a new connection
  std::chrono::milliseconds idle{30000};          // for the next whole request on a kept-alive connection
  std::chrono::milliseconds write_time{10000};
  // After an answer given before the request's body was read (403, 413, 431,
  // 503): how long the rest is read and dropped, once the answer and a FIN
  // are sent, so that closing with unread bytes does not reset the
  // connection and destroy the answer before the client reads it.
  std::chrono::milliseconds linger{5000};
  std::size_t requests_per_connection = 1000;
  std::chrono::milliseconds heartbeat{15000};     // a comment line on an idle event stream
  std::size_t event_socket_buffer = 32768;        // SO_SNDBUF of an event stream's socket
  std::chrono::milliseconds event_batch{50};      // an event stream writes at most once per this
};

class server {
 public:
  // Binds and listens on listen; nullptr with error set ("127.0.0.1:8025:
  // Address already in use") when it cannot.
  static std::unique_ptr<server> open(boost::asio::io_context& io, const endpoint& listen, control_function control,
                                      std::string& error, server_limits limits = {});
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  void start();  // begins accepting
  void close();  // stops accepting; open connections end with their deadlines

  // One line of a child's stdout, for GET /api/v1/events (event_feed.hpp):
  // never blocks, whatever the event stream clients do.
  void publish(std::string_view node, std::string_view line);
  // A child's new state (launcher-side: a killed node prints nothing), as
  // the event {"event": "state", "state": "killed", "exit": "signal 9"}.
  void publish_state(std::string_view node, std::string_view state, std::string_view exit_text);

  // What POST /api/v1/send calls (on a worker thread of the web server's own);
  // without it that endpoint answers 503.
  void set_sender(send_function send);

  struct impl;

 private:
  explicit server(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

}  // namespace mailnet::launcher::web
