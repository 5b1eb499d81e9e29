#include "launcher/web/web_api.hpp"

#include "launcher/web/dns_view.hpp"
#include "launcher/web/node_queue.hpp"
#include "launcher/web/static_files.hpp"
#include "launcher/web/transcript.hpp"
#include "launcher/web/web_messages.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

namespace mailnet::launcher::web {

using json = nlohmann::json;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

// Every answer: no sniffing a JSON reply into HTML, no caching of live
// state, no address of ours in another site's Referer.
response& with_common_headers(response& r) {
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  return r;
}

response json_response(int status, const json& body) {
  response r;
  r.status = status;
  r.body = body.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  return r;
}

response method_not_allowed(const std::string& method, const std::string& path, const std::string& allowed) {
  auto r = error_response(405, "method " + method + " is not allowed on " + path + " (allowed: " + allowed + ")");
  r.headers.emplace_back("Allow", allowed);
  return r;
}

// A Prometheus label value: backslash, double quote and newline escaped.
std::string label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// A control request, built outside the coroutines: GCC 12 rejects a braced
// json of string literals inside a co_await ("array used as initializer").
json command(const std::string& cmd, const std::string& name = {}) {
  json request = {{"cmd", cmd}};
  if (!name.empty()) request["name"] = name;
  return request;
}

const std::vector<std::string> node_actions = {"kill", "stop", "start", "restart", "flush"};

}  // namespace

response error_response(int status, const std::string& reason) { return json_response(status, {{"error", reason}}); }

api::api(endpoint listen, control_function control)
    : listen_(std::move(listen)), control_(std::move(control)), messages_(std::make_shared<message_routes>(control_)) {}

boost::asio::awaitable<void> api::warm_up() { co_await messages_->warm_up(); }

std::string api::origin() const { return "http://" + listen_.to_string(); }

std::optional<response> api::refuse_host(const request& r) const {
  const std::string port = std::to_string(listen_.port);
  if (!r.host) return error_response(403, "refused: the request has no Host header");
  const std::string host = lower(trim(*r.host));
  std::vector<std::string> allowed = {lower(listen_.to_string()), "localhost:" + port};
  if (host == allowed[0] || host == allowed[1]) return std::nullopt;
  if (listen_.port == 80 && (host + ":80" == allowed[0] || host == "localhost")) return std::nullopt;
  return error_response(403, "refused: Host \"" + *r.host + "\" is not this server's address (" + allowed[0] +
                                 " or " + allowed[1] + "); a page from another site cannot use this API");
}

// A change (POST, DELETE) must be JSON, which a cross-site form cannot send
// without a preflight (never answered here), and from our own pages when the
// browser says where it comes from.
std::optional<response> api::refuse_change(const request& r) const {
  if (auto refusal = refuse_change_headers(r)) return refusal;
  if (!trim(r.body).empty() && !json::accept(r.body))
    return error_response(400, "the body is not valid JSON (send {} or nothing)");
  return std::nullopt;
}

std::optional<response> api::refuse_change_headers(const request& r) const {
  if (!r.content_type) return error_response(403, "refused: a " + r.method + " must have Content-Type: application/json");
  const std::string type = lower(trim(std::string_view(*r.content_type).substr(0, r.content_type->find(';'))));
  if (type != "application/json")
    return error_response(403, "refused: a " + r.method + " must have Content-Type: application/json, not \"" +
                                   *r.content_type + "\"");
  if (r.origin) {
    const std::string o = lower(trim(*r.origin));
    if (o != lower(origin()) && o != "http://localhost:" + std::to_string(listen_.port))
      return error_response(403, "refused: Origin \"" + *r.origin + "\" is not this dashboard (" + origin() +
                                     "); changes are taken only from its own pages");
  }
  return std::nullopt;
}

boost::asio::awaitable<response> api::answer(request r) {
  if (auto refusal = refuse_host(r)) co_return with_common_headers(*refusal);
  const std::string path = r.target.substr(0, r.target.find('?'));
  const bool get = r.method == "GET";
  response out;
  if (is_asset_path(path)) {
    // The dashboard's pages and their scripts, read from its folder on each request.
    if (!get) out = method_not_allowed(r.method, path, "GET");
    else out = asset_response(asset_folder(), path);
  } else if (path == "/api/v1/network") {
    // (No co_await inside ?: : GCC 12 destroys its temporaries twice.)
    if (get) out = co_await network();
    else out = method_not_allowed(r.method, path, "GET");
  } else if (path == "/api/v1/events") {
    // A GET is the event stream, served by web_server.cpp itself.
    out = method_not_allowed(r.method, path, "GET");
  } else if (path == "/metrics") {
    if (get) out = co_await metrics();
    else out = method_not_allowed(r.method, path, "GET");
  } else if (constexpr std::string_view prefix = "/api/v1/nodes/"; path.starts_with(prefix)) {
    const auto rest = path.substr(prefix.size());
    const auto slash = rest.find('/');
    const std::string name = rest.substr(0, slash);
    const std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (!name.empty() && action == "queue") {
      if (get) out = co_await node_queue(name);
      else out = method_not_allowed(r.method, path, "GET");
    } else if (!name.empty() && action == "transcript") {
      if (get) out = co_await transcript(r, name);
      else out = method_not_allowed(r.method, path, "GET");
    } else if (name.empty() || std::find(node_actions.begin(), node_actions.end(), action) == node_actions.end()) {
      out = error_response(404, "no such endpoint: " + path + " (POST /api/v1/nodes/NAME/ACTION, ACTION one of "
                                "kill, stop, start, restart, flush)");
    } else if (r.method != "POST") {
      out = method_not_allowed(r.method, path, "POST");
    } else if (auto refusal = refuse_change(r)) {
      out = *refusal;
    } else {
      out = co_await node_action(name, action);
    }
  } else if (message_routes::handles(path)) {
    std::optional<response> refusal;
    if (!get) refusal = refuse_change(r);
    out = co_await messages_->answer(r, path, std::move(refusal));
  } else if (path == "/api/v1/dns") {
    if (get) out = co_await dns();
    else out = method_not_allowed(r.method, path, "GET");
  } else if (path == "/api/v1/send") {
    if (r.method != "POST") out = method_not_allowed(r.method, path, "POST");
    else if (auto refusal = refuse_change(r)) out = *refusal;
    else out = co_await send(r);
  } else if (path == "/api/v1/faults" || path.starts_with("/api/v1/faults/")) {
    out = co_await faults(r, path);  // fault rules at run time (issue 20)
  } else {
    out = error_response(404, "no such endpoint: " + path);
  }
  co_return with_common_headers(out);
}

boost::asio::awaitable<response> api::network() {
  const json reply = co_await control_(command("status"));
  if (!reply.value("ok", false)) co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
  co_return json_response(200, network_document(reply["status"], uptime_seconds()));
}

boost::asio::awaitable<response> api::metrics() {
  const json reply = co_await control_(command("status"));
  if (!reply.value("ok", false)) co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
  response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = prometheus_text(reply["status"], uptime_seconds());
  co_return r;
}

boost::asio::awaitable<response> api::node_queue(const std::string& node) {
  std::string name = lower(node);
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  const json reply = co_await control_(command("status"));
  if (!reply.value("ok", false)) co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
  const auto& status = reply["status"];
  if (name == "resolver") co_return error_response(404, "the resolver has no mail queue; name a domain's node");
  bool known = false;
  for (const auto& n : status.value("nodes", json::array()))
    if (n.value("name", std::string()) == name) known = true;
  if (!known) co_return error_response(404, "no node " + name + " in this network");
  co_return json_response(200, queue_document(std::filesystem::path(status.value("dir", std::string())) / name / "queue", name));
}

boost::asio::awaitable<response> api::node_action(const std::string& node, const std::string& action) {
  // A node is named by its domain, in any case, with or without the root's dot (as on the command line).
  std::string name = lower(node);
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  const json reply = co_await control_(command(action, name));
  if (reply.value("ok", false)) {
    json doc = reply;
    doc["node"] = name;
    doc["action"] = action;
    co_return json_response(200, doc);
  }
  const std::string error = reply.value("error", std::string("failed"));
  // Unknown node: 404; a node that cannot do it now (already down, starting, the resolver's flush): 409.
  co_return error_response(error.starts_with("no node named") ? 404 : 409, error);
}

// ---- Transcripts, DNS and sending (issue 19).

namespace {

// The senders' threads: a send waits on a node for up to its timeout, so not
// the file worker's. Made at first use, never destroyed (a send under way at
// exit is cut).
boost::asio::thread_pool& senders() {
  static auto* pool = new boost::asio::thread_pool(2);
  return *pool;
}

boost::asio::awaitable<response> run_send(send_function send, json body) {
  try {
    auto [status, doc] = send(body);
    co_return json_response(status, doc);
  } catch (const std::exception& e) {
    co_return error_response(500, std::string("sending failed: ") + e.what());
  }
}

// The node of a status reply named as on the command line, or a 404.
std::optional<response> unknown_node(const json& status, const std::string& name, const char* resolver_reason) {
  if (name == "resolver") return error_response(404, resolver_reason);
  for (const auto& n : status.value("nodes", json::array()))
    if (n.value("name", std::string()) == name) return std::nullopt;
  return error_response(404, "no node " + name + " in this network");
}

}  // namespace

boost::asio::awaitable<response> api::transcript(const request& r, const std::string& node) {
  std::string name = lower(node);
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  std::string session;
  // Beyond 16 pairs the query is refused, as the event stream's is.
  const auto read = query_params(query_of(r.target), {"session"}, 16);
  for (const auto& [key, value] : read.params) {
    session = value;  // the last of several
    if (session.empty() || session.size() > 64 ||
        !std::all_of(session.begin(), session.end(), [](unsigned char c) { return std::isalnum(c); }))
      co_return error_response(400, "session must be a session id (letters and digits, as the list gives), not '" +
                                        session + "'");
  }
  if (!read.error.empty()) co_return error_response(400, read.error);
  const json reply = co_await control_(command("status"));
  if (!reply.value("ok", false)) co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
  const auto& status = reply["status"];
  if (auto refusal = unknown_node(status, name, "the resolver speaks no SMTP and has no transcript; its queries are "
                                                "in GET /api/v1/dns"))
    co_return *refusal;
  std::set<std::string> domains;
  for (const auto& n : status.value("nodes", json::array())) domains.insert(n.value("name", std::string()));
  const std::filesystem::path dir = std::filesystem::path(status.value("dir", std::string())) / name;
  std::function<response()> job = [dir, name, session, domains]() -> response {
    if (session.empty()) return json_response(200, transcript_sessions(dir, name, domains));
    try {
      return json_response(200, transcript_session(dir, name, session));
    } catch (const session_not_found& e) {
      return error_response(404, e.what());
    }
  };
  // Named, not a temporary inside the co_await: GCC 12's coroutines.
  response out = co_await on_file_worker(std::move(job));
  co_return out;
}

boost::asio::awaitable<response> api::dns() {
  const json reply = co_await control_(command("status"));
  if (!reply.value("ok", false)) co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
  const std::filesystem::path dir = reply["status"].value("dir", std::string());
  std::function<response()> job = [dir]() -> response { return json_response(200, dns_document(dir)); };
  response out = co_await on_file_worker(std::move(job));
  co_return out;
}

boost::asio::awaitable<response> api::send(const request& r) {
  if (!send_) co_return error_response(503, "this launcher does not send mail");
  if (trim(r.body).empty())
    co_return error_response(400, "the body must be a JSON object: {\"from\": ..., \"to\": [...], \"subject\": ..., "
                                  "\"body\": ..., \"attachments\": [...]}");
  json body = json::parse(r.body);  // refuse_change checked that it parses
  response out = co_await boost::asio::co_spawn(senders(), run_send(send_, std::move(body)), boost::asio::use_awaitable);
  co_return out;
}

// ---- Fault rules at run time: GET /api/v1/faults lists them with their
// counts, POST /api/v1/faults adds the rule in the body, DELETE
// /api/v1/faults/NAME clears one and DELETE /api/v1/faults every one; the
// control socket's fault_list, fault_add and fault_clear, as `mailnet fault`.
boost::asio::awaitable<response> api::faults(const request& r, const std::string& path) {
  const std::string name = path.size() > 15 ? path.substr(15) : "";  // after "/api/v1/faults/"
  const bool one = path != "/api/v1/faults";
  if (one && name.empty()) co_return error_response(404, "no such endpoint: " + path);
  const std::string allowed = one ? "DELETE" : "GET, POST, DELETE";
  if ((r.method == "GET" || r.method == "POST") && one) co_return method_not_allowed(r.method, path, allowed);
  if (r.method == "GET") {
    const json reply = co_await control_(command("fault_list"));
    if (!reply.value("ok", false))
      co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
    json doc = json::object();
    doc["faults"] = reply["faults"];
    co_return json_response(200, doc);
  }
  if (r.method != "POST" && r.method != "DELETE") co_return method_not_allowed(r.method, path, allowed);
  if (auto refusal = refuse_change(r)) co_return *refusal;
  json request = command(r.method == "POST" ? "fault_add" : "fault_clear");
  if (r.method == "POST") {
    if (trim(r.body).empty())
      co_return error_response(400, "the body must be a fault rule, a JSON object (as in the topology's faults.rules)");
    request["rule"] = json::parse(r.body);  // refuse_change checked that it parses
  } else {
    request["name"] = one ? name : "*";
  }
  const json reply = co_await control_(request);
  if (reply.value("ok", false)) co_return json_response(r.method == "POST" ? 201 : 200, reply);
  const std::string error = reply.value("error", std::string("failed"));
  co_return error_response(reply.value("bad_input", false) ? 400 : reply.value("not_found", false) ? 404 : 409, error);
}
// ---- end of fault rules at run time

double api::uptime_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

json network_document(const json& status, double uptime_seconds) {
  json doc = {{"name", status.value("name", "")},
              {"folder", status.value("dir", "")},
              {"uptime_s", static_cast<long>(uptime_seconds)},
              {"launcher_pid", status.value("launcher_pid", 0)},
              {"web", status.value("web", "")},
              {"resolver", nullptr},
              {"nodes", json::array()}};
  for (const auto& n : status.value("nodes", json::array())) {
    if (n.value("name", "") == "resolver") doc["resolver"] = n;
    else doc["nodes"].push_back(n);
  }
  return doc;
}

std::string prometheus_text(const json& status, double uptime_seconds) {
  struct family {
    const char* name;
    const char* type;
    const char* help;
    const char* key;  // in a node's status
    bool domains_only;
  };
  static const family families[] = {
      {"mailnet_node_up", "gauge", "1 when the node (a domain, or the resolver) is ready, else 0.", nullptr, false},
      {"mailnet_node_restarts_total", "counter", "Restarts of the node after a crash.", "restarts", false},
      {"mailnet_received_total", "counter", "Messages the domain's node accepted over SMTP.", "received", true},
      {"mailnet_delivered_total", "counter", "Messages delivered into the domain's Maildirs.", "delivered", true},
      {"mailnet_relayed_total", "counter", "Messages the domain's node relayed to another node.", "relayed", true},
      {"mailnet_bounced_total", "counter", "Bounces the domain's node sent.", "bounced", true},
      {"mailnet_queued_messages", "gauge", "Messages waiting in the domain's queue.", "queued", true},
  };
  std::string out;
  char number[64];
  for (const auto& f : families) {
    out += std::string("# HELP ") + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
    for (const auto& n : status.value("nodes", json::array())) {
      const std::string name = n.value("name", "");
      const bool resolver = name == "resolver";
      if (f.domains_only && (resolver || n.value("kind", "") == "imap")) continue;  // imap: Dovecot, no mail of its own
      const long value = f.key ? n.value(f.key, 0L) : (n.value("state", "") == "ready" ? 1L : 0L);
      out += std::string(f.name) + (f.domains_only ? "{domain=\"" : "{node=\"") + label(name) + "\"} " +
             std::to_string(value) + "\n";
    }
  }
  // SPF, DKIM and DMARC verdicts on received mail, by result (status "mail_auth").
  static const std::pair<const char*, const char*> checks[] = {
      {"spf", "SPF verdicts on mail the domain's node received, by result."},
      {"dkim", "DKIM verdicts (one per signature, or none) on mail the domain's node received, by result."},
      {"dmarc", "DMARC verdicts on mail the domain's node received, by result."}};
  for (const auto& [check, help] : checks) {
    const std::string family = std::string("mailnet_") + check + "_total";
    out += "# HELP " + family + " " + help + "\n# TYPE " + family + " counter\n";
    for (const auto& n : status.value("nodes", json::array())) {
      if (!n.contains("mail_auth")) continue;
      const json counts = n["mail_auth"].value(check, json::object());  // named: items() of a temporary dangles
      for (const auto& [result, count] : counts.items()) {
        if (result == "rejected" || result == "quarantined") continue;
        out += family + "{domain=\"" + label(n.value("name", "")) + "\",result=\"" + label(result) + "\"} " +
               std::to_string(count.get<long>()) + "\n";
      }
    }
  }
  out += "# HELP mailnet_dmarc_actions_total Messages refused (rejected) or put in .Junk (quarantined) under policy.dmarc \"enforce\".\n"
         "# TYPE mailnet_dmarc_actions_total counter\n";
  for (const auto& n : status.value("nodes", json::array())) {
    if (!n.contains("mail_auth")) continue;
    const auto& dmarc = n["mail_auth"]["dmarc"];
    for (const char* action : {"rejected", "quarantined"})
      out += "mailnet_dmarc_actions_total{domain=\"" + label(n.value("name", "")) + "\",action=\"" + action + "\"} " +
             std::to_string(dmarc.value(action, 0L)) + "\n";
  }
  // The resolver's queries, counted by the launcher from its event=query lines.
  out += "# HELP mailnet_resolver_queries_total Queries the resolver answered, by question type and answer code.\n"
         "# TYPE mailnet_resolver_queries_total counter\n";
  long dropped = 0;
  for (const auto& n : status.value("nodes", json::array())) {
    if (n.value("name", "") != "resolver") continue;
    dropped = n.value("dropped", 0L);
    for (const auto& q : n.value("queries", json::array()))
      out += "mailnet_resolver_queries_total{type=\"" + label(q.value("type", "")) + "\",rcode=\"" +
             label(q.value("rcode", "")) + "\"} " + std::to_string(q.value("count", 0L)) + "\n";
  }
  out += "# HELP mailnet_resolver_dropped_total Queries the resolver dropped unanswered (malformed, or a fault rule).\n"
         "# TYPE mailnet_resolver_dropped_total counter\nmailnet_resolver_dropped_total " +
         std::to_string(dropped) + "\n";
  std::snprintf(number, sizeof number, "%.3f", uptime_seconds);
  out += "# HELP mailnet_web_uptime_seconds Seconds since the launcher's web server started.\n"
         "# TYPE mailnet_web_uptime_seconds gauge\nmailnet_web_uptime_seconds " +
         std::string(number) + "\n";
  return out;
}

}  // namespace mailnet::launcher::web
