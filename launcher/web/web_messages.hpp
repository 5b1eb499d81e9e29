// The web API's /api/v1/messages routes: parsing the path and query, then
// reading the Maildirs on a worker thread (web/messages.hpp) so that a large
// folder never holds up the launcher's event loop.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "launcher/web/query.hpp"
#include "launcher/web/web_api.hpp"

namespace mailnet::launcher::web {

class message_store;

class message_routes {
 public:
  explicit message_routes(control_function control) : control_(std::move(control)) {}

  static bool handles(const std::string& path) {
    return path == "/api/v1/messages" || path.starts_with("/api/v1/messages/") || path == "/api/v1/mailboxes";
  }

  // change_refusal: web_api's refusal of this request as a change (POST,
  // DELETE), if any; a DELETE is answered with it.
  boost::asio::awaitable<response> answer(const request& r, const std::string& path,
                                          std::optional<response> change_refusal);

  // Indexes every Maildir of the network on the worker thread, so that the
  // first listing finds it done; called once as the web server starts.
  boost::asio::awaitable<void> warm_up();

 private:
  // The store, made at first use (the run folder asked of the launcher);
  // an error response when the launcher does not say.
  boost::asio::awaitable<std::optional<response>> open_store();

  control_function control_;
  std::shared_ptr<message_store> store_;  // made at first use; used on the worker thread only
};

// f() on the one worker thread that reads the run folder's files (Maildirs,
// logs) for the web API, off the launcher's event loop; an exception is a 500.
boost::asio::awaitable<response> on_file_worker(std::function<response()> f);


}  // namespace mailnet::launcher::web
