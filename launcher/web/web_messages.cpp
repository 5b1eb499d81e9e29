#include "launcher/web/web_messages.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <map>

#include "common/mail/maildir_read.hpp"
#include "launcher/web/messages.hpp"
#include "launcher/web/trace.hpp"

namespace mailnet::launcher::web {

namespace asio = boost::asio;
using json = nlohmann::json;

namespace {

// One thread for every Maildir read of the process: requests are served one
// after the other, and the store they share needs no lock. Made at the first
// request (after `up` has forked into the background) and never destroyed: a
// read under way at exit is simply cut.
asio::thread_pool& worker() {
  static auto* pool = new asio::thread_pool(1);
  return *pool;
}

// f() on the worker thread: a coroutine of its own, f kept in its frame.
asio::awaitable<response> run_job(std::function<response()> f) {
  try {
    co_return f();
  } catch (const std::exception& e) {
    co_return error_response(500, std::string("reading the run folder failed: ") + e.what());
  }
}

response not_allowed(const std::string& method, const std::string& path, const std::string& allowed) {
  auto r = error_response(405, "method " + method + " is not allowed on " + path + " (allowed: " + allowed + ")");
  r.headers.emplace_back("Allow", allowed);
  return r;
}

json status_command() { return json{{"cmd", "status"}}; }

response trace_response(const std::filesystem::path& dir, const std::string& id) {
  try {
    response r;
    r.body = message_trace(dir, id).dump(2, ' ', false, json::error_handler_t::replace) + "\n";
    return r;
  } catch (const trace_not_found& e) {
    return error_response(404, e.what());
  } catch (const std::runtime_error& e) {
    return error_response(400, e.what());
  }
}

}  // namespace

asio::awaitable<response> message_routes::answer(const request& r, const std::string& path,
                                                 std::optional<response> change_refusal) {
  // The query: domain, user, q, limit, folder for the list; domain, user for a DELETE.
  std::map<std::string, std::string> params;
  const auto read = query_params(query_of(r.target), {"domain", "user", "q", "limit", "folder"}, no_pair_limit);
  if (!read.error.empty()) co_return error_response(400, read.error);
  for (const auto& [key, value] : read.params) params[key] = value;  // the last of a key given twice

  // /api/v1/messages[/ID[/raw|/attachments/N]]
  std::string id, part, n;
  if (path.size() > std::string_view("/api/v1/messages/").size()) {
    std::string_view rest(path);
    rest.remove_prefix(std::string_view("/api/v1/messages/").size());
    const auto slash = rest.find('/');
    auto decoded = percent_decode(rest.substr(0, slash), false);
    if (!decoded || decoded->empty() || decoded->find('/') != std::string::npos)
      co_return error_response(404, "no such endpoint: " + path);
    id = *decoded;
    if (slash != std::string_view::npos) {
      part = std::string(rest.substr(slash + 1));
      if (part.starts_with("attachments/")) {
        n = part.substr(std::string_view("attachments/").size());
        part = "attachments";
      } else if (part != "raw" && part != "html" && part != "trace") {
        co_return error_response(404, "no such endpoint: " + path +
                                          " (GET /api/v1/messages/ID, /ID/raw, /ID/html, /ID/attachments/N, /ID/trace; "
                                          "DELETE /ID)");
      }
    }
  } else if (path != "/api/v1/messages" && path != "/api/v1/mailboxes") {
    co_return error_response(404, "no such endpoint: " + path);
  }

  const bool deleting = r.method == "DELETE" && !id.empty() && part.empty();
  if (deleting) {
    if (change_refusal) co_return *change_refusal;
  } else if (r.method != "GET") {
    co_return not_allowed(r.method, path, !id.empty() && part.empty() ? "GET, DELETE" : "GET");
  }

  const bool mailboxes = path == "/api/v1/mailboxes";
  if (mailboxes && !params.empty()) co_return error_response(400, "/api/v1/mailboxes takes no query parameters");
  message_query q;
  if (id.empty()) {
    q.domain = params["domain"];
    q.user = params["user"];
    q.q = params["q"];
    if (params.count("folder")) {
      // As IMAP names them, in any case ("inbox" is INBOX there too).
      const auto& f = params["folder"];
      const std::string lower_f = node::ascii_lower(f);
      if (lower_f == "inbox") q.folder = "INBOX";
      else if (lower_f == "junk") q.folder = "Junk";
      else co_return error_response(400, "folder must be INBOX or Junk (the DMARC quarantine), not '" + f + "'");
    }
    if (params.count("limit")) {
      const auto& l = params["limit"];
      if (l.empty() || l.size() > 5 || l.find_first_not_of("0123456789") != std::string::npos || std::stoul(l) < 1 ||
          std::stoul(l) > 10000)
        co_return error_response(400, "limit must be a whole number from 1 to 10000, not '" + l + "'");
      q.limit = std::stoul(l);
    }
  } else if (!deleting && !params.empty()) {
    co_return error_response(400, "query parameters are taken only by the list and a DELETE");
  } else if (deleting && params.count("folder")) {
    co_return error_response(400, "a DELETE takes no folder: it removes the message from each folder it is in");
  }

  std::optional<response> failed = co_await open_store();
  if (failed) co_return std::move(*failed);
  auto store = store_;
  const std::string domain = params["domain"], user = params["user"];
  std::function<response()> job;
  if (mailboxes) job = [store] { return store->mailboxes(); };
  else if (id.empty()) job = [store, q] { return store->list(q); };
  else if (deleting) job = [store, id, domain, user] { return store->remove(id, domain, user); };
  else if (part == "raw") job = [store, id] { return store->raw(id); };
  else if (part == "html") job = [store, id] { return store->html(id); };
  else if (part == "trace") job = [store, id] { return trace_response(store->dir(), id); };
  else if (part == "attachments") job = [store, id, n] { return store->attachment(id, n); };
  else job = [store, id] { return store->detail(id); };
  response out = co_await on_file_worker(std::move(job));
  co_return out;
}

asio::awaitable<response> on_file_worker(std::function<response()> f) {
  // Off the event loop; this coroutine resumes on its own executor after.
  response out = co_await asio::co_spawn(worker(), run_job(std::move(f)), asio::use_awaitable);
  co_return out;
}

asio::awaitable<std::optional<response>> message_routes::open_store() {
  if (store_) co_return std::nullopt;
  const json reply = co_await control_(status_command());
  const std::string dir = reply.value("ok", false) ? reply["status"].value("dir", "") : "";
  if (dir.empty()) co_return error_response(503, reply.value("error", std::string("the launcher did not answer")));
  if (!store_) store_ = std::make_shared<message_store>(dir);
  co_return std::nullopt;
}

asio::awaitable<void> message_routes::warm_up() {
  std::optional<response> failed = co_await open_store();
  if (failed) co_return;  // asked again at the first request
  auto store = store_;
  // Queued on the worker like a request: one that comes meanwhile waits for
  // it and then finds every file read. The job is a named variable, not a
  // temporary in the co_await's expression (as in answer()): GCC destroyed
  // such a temporary lambda twice, and the store with its last reference.
  std::function<response()> job = [store] {
    store->refresh();
    return response{};
  };
  co_await asio::co_spawn(worker(), run_job(std::move(job)), asio::use_awaitable);
}

}  // namespace mailnet::launcher::web
