// What the launcher's web server answers, without any HTTP library: the
// checks every request must pass (Host, and for a change Content-Type and
// Origin), the routes, and the replies, made from the same JSON requests the
// control socket takes. web_server.cpp (Boost.Beast) only moves bytes.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher::web {

class message_routes;

// The launcher's control: takes a request as mailnet.sock does
// ({"cmd": "status"}, {"cmd": "kill", "name": "jaku.com"}) and gives its reply.
using control_function = std::function<boost::asio::awaitable<nlohmann::json>(nlohmann::json)>;

// POST /api/v1/send's work: the request's JSON to a status and a JSON reply.
// Blocking (it speaks SMTP to a node): called on a worker thread.
using send_function = std::function<std::pair<int, nlohmann::json>(const nlohmann::json&)>;

struct request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // "/api/v1/network?x=1"
  std::optional<std::string> host, origin, content_type;
  std::string body;
};

struct response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type
};

// A JSON reply {"error": reason} with that status.
response error_response(int status, const std::string& reason);

class api {
 public:
  api(endpoint listen, control_function control);

  // The refusal (403 with its reason) of a request that may not be served at
  // all: a Host that is not this server's address or localhost:<port>.
  std::optional<response> refuse_host(const request& r) const;

  // The refusal of a change (POST, DELETE) from its headers alone: not JSON,
  // or from another site's page. (Checked before a large body is read.)
  std::optional<response> refuse_change_headers(const request& r) const;

  // The whole answer to a request, refusals included.
  boost::asio::awaitable<response> answer(request r);

  std::string origin() const;  // "http://127.0.0.1:8025"

  void set_sender(send_function send) { send_ = std::move(send); }

  // Work done once as the server starts: the index of the Maildirs.
  boost::asio::awaitable<void> warm_up();

 private:
  boost::asio::awaitable<response> network();
  boost::asio::awaitable<response> metrics();
  boost::asio::awaitable<response> node_queue(const std::string& node);  // GET /api/v1/nodes/NAME/queue
  boost::asio::awaitable<response> node_action(const std::string& node, const std::string& action);
  boost::asio::awaitable<response> faults(const request& r, const std::string& path);  // /api/v1/faults[/NAME]
  boost::asio::awaitable<response> transcript(const request& r, const std::string& node);  // GET /api/v1/nodes/NAME/transcript
  boost::asio::awaitable<response> dns();                        // GET /api/v1/dns
  boost::asio::awaitable<response> send(const request& r);       // POST /api/v1/send
  std::optional<response> refuse_change(const request& r) const;
  double uptime_seconds() const;  // since the server was made, at the start of `up`

  endpoint listen_;
  control_function control_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::shared_ptr<message_routes> messages_;  // /api/v1/messages (web_messages.hpp)
  send_function send_;
};

// GET /api/v1/network's answer, made of a status reply: the resolver apart
// from the domains' nodes.
nlohmann::json network_document(const nlohmann::json& status, double uptime_seconds);

// The Prometheus text format of a status reply (the control socket's
// "status"): per-domain counters, queue sizes, node states.
std::string prometheus_text(const nlohmann::json& status, double uptime_seconds);

}  // namespace mailnet::launcher::web
