#include "node/relay.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <set>

#include "node/data_reader.hpp"
#include "node/resolver_client.hpp"
#include "node/smtp_channel.hpp"

namespace mailnet::node {

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct smtp_reply {
  int code = 0;  // 0: no reply (connection trouble or timeout)
  std::string text;
};

// Reads one possibly multi-line reply ("250-..." lines, then "250 ...").
asio::awaitable<smtp_reply> read_reply(smtp_channel& ch, millis timeout) {
  smtp_reply r;
  for (int lines = 0; lines < 100; ++lines) {
    auto [st, line] = co_await ch.read_line(4096, timeout);
    if (st != io_status::ok || line.size() < 3 || !std::all_of(line.begin(), line.begin() + 3, ::isdigit)) {
      r.code = 0;
      r.text = st == io_status::timeout ? "timeout waiting for reply" : "connection lost or bad reply";
      co_return r;
    }
    r.code = std::stoi(line.substr(0, 3));
    r.text = line;
    if (line.size() == 3 || line[3] != '-') co_return r;
  }
  co_return smtp_reply{0, "reply too long"};
}

}  // namespace

relay::relay(asio::any_io_executor ex, node_context& ctx, resolver_client& resolver)
    : ex_(std::move(ex)), ctx_(ctx), resolver_(resolver) {}

relay::~relay() = default;

void relay::schedule(queued_message m) {
  auto shared = std::make_shared<queued_message>(std::move(m));
  asio::co_spawn(ex_, deliver(shared), [this, id = shared->id](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      ctx_.events.write({{"id", id}, {"event", "relay_error"}, {"error", ex.what()}});
    }
  });
}

void relay::recover() {
  for (const auto& id : ctx_.queue.list()) {
    try {
      if (auto m = ctx_.queue.load(id)) {
        ctx_.events.write({{"id", id}, {"event", "recovered"}, {"attempts", std::to_string(m->attempts)}});
        schedule(std::move(*m));
      }
    } catch (const std::exception& e) {
      ctx_.events.write({{"id", id}, {"event", "corrupt_queue_file"}, {"error", e.what()}});
      try {
        ctx_.queue.move_to_corrupt(id);
      } catch (const std::exception&) {
      }
    }
  }
}

void relay::flush(const std::string& domain) {
  (void)domain;  // every waiting message is retried; the attempt skips what is done
  for (auto& [id, timer] : waiting_) timer->cancel();
}

asio::awaitable<void> relay::attempt_domain(queued_message& m, const std::string& domain) {
  std::vector<queued_recipient*> rcpts;
  for (auto& r : m.rcpts)
    if (r.domain == domain && r.state == "pending") rcpts.push_back(&r);
  auto set_all = [&](const std::string& state, const std::string& error) {
    for (auto* r : rcpts)
      if (r->state == "pending") {
        r->state = state;
        r->last_error = error;
      }
  };

  auto route = co_await resolver_.lookup_mail_route(domain);
  if (route.status == lookup_status::nxdomain) {
    set_all("failed", "5.1.2 Domain " + domain + " not found: " + route.detail);
    co_return;
  }
  if (route.status != lookup_status::ok || route.routes.empty()) {
    set_all("pending", "4.4.3 Resolver trouble for " + domain + ": " + route.detail);
    co_return;
  }

  const auto& t = ctx_.config.timeouts;
  for (const auto& target : route.routes) {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(target.host, ec);
    if (ec) continue;
    auto [st, socket] = co_await smtp_channel::connect(ex_, tcp::endpoint(address, target.port), t.relay_connect);
    if (st != io_status::ok) {
      set_all("pending", "4.4.1 No answer from " + domain + " at " + target.host + ":" + std::to_string(target.port));
      continue;
    }
    smtp_channel ch(std::move(socket));
    auto expect = [&](smtp_reply r, int want) -> bool {
      if (r.code / 100 == want / 100) return true;
      if (r.code == 0) set_all("pending", "4.4.2 " + domain + ": " + r.text);
      else if (r.code >= 500) set_all("failed", r.text);
      else set_all("pending", r.text);
      return false;
    };
    auto command = [&](std::string line) -> asio::awaitable<smtp_reply> {
      if (co_await ch.write(line + "\r\n", t.relay_reply) != io_status::ok) co_return smtp_reply{0, "write failed"};
      co_return co_await read_reply(ch, t.relay_reply);
    };

    if (!expect(co_await read_reply(ch, t.relay_reply), 220)) co_return;
    if (!expect(co_await command("EHLO " + ctx_.config.name), 250)) co_return;
    if (!expect(co_await command("MAIL FROM:<" + m.mail_from + "> SIZE=" + std::to_string(m.message.size())), 250))
      co_return;
    std::vector<queued_recipient*> accepted;
    for (auto* r : rcpts) {
      auto reply = co_await command("RCPT TO:<" + r->address + ">");
      if (reply.code / 100 == 2) accepted.push_back(r);
      else if (reply.code >= 500) r->state = "failed", r->last_error = reply.text;
      else r->last_error = reply.code ? reply.text : "4.4.2 " + reply.text;
      if (reply.code == 0) co_return;
    }
    if (accepted.empty()) {
      co_await command("QUIT");
      co_return;
    }
    auto data = co_await command("DATA");
    if (data.code != 354) {
      for (auto* r : accepted) r->state = data.code >= 500 ? "failed" : "pending", r->last_error = data.text;
      co_return;
    }
    std::string wire = dot_stuff_for_wire(m.message);
    wire += ".\r\n";
    smtp_reply done{0, "write failed"};
    if (co_await ch.write(wire, t.relay_reply) == io_status::ok) done = co_await read_reply(ch, t.relay_reply);
    for (auto* r : accepted) {
      if (done.code / 100 == 2) {
        r->state = "delivered";
        r->last_error.clear();
        ++ctx_.counters.relayed;
      } else {
        r->state = done.code >= 500 ? "failed" : "pending";
        r->last_error = done.code ? done.text : "4.4.2 " + done.text;
      }
    }
    ctx_.events.write({{"id", m.id}, {"event", "relay_attempt"}, {"domain", domain},
                       {"to", target.host + ":" + std::to_string(target.port)}, {"reply", done.text}});
    co_await command("QUIT");
    co_return;
  }
}

asio::awaitable<void> relay::deliver(std::shared_ptr<queued_message> m) {
  auto timer = std::make_shared<asio::steady_timer>(ex_);
  const auto& retry = ctx_.config.retry;
  for (;;) {
    if (m->next_try_ms > now_ms()) {
      waiting_[m->id] = timer;
      timer->expires_after(millis(m->next_try_ms - now_ms()));
      co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
      waiting_.erase(m->id);
    }
    std::set<std::string> domains;
    for (const auto& r : m->rcpts)
      if (r.state == "pending") domains.insert(r.domain);
    std::vector<std::string> before;
    for (const auto& r : m->rcpts) before.push_back(r.state);
    for (const auto& d : domains) co_await attempt_domain(*m, d);
    ++m->attempts;

    const bool expired = now_ms() - m->created_ms > retry.give_up_after.count();
    bool pending = false;
    for (std::size_t i = 0; i < m->rcpts.size(); ++i) {
      auto& r = m->rcpts[i];
      if (r.state == "pending" && expired) {
        r.state = "failed";
        r.last_error = "4.4.7 Delivery time expired; last error: " + r.last_error;
      }
      if (before[i] != "pending") continue;
      if (r.state == "delivered") {
        ctx_.events.write({{"id", m->id}, {"event", "relayed"}, {"rcpt", r.address}});
      } else if (r.state == "failed") {
        // The DSN back to the sender comes with the bounce module.
        ctx_.events.write({{"id", m->id}, {"event", "failed"}, {"rcpt", r.address}, {"error", r.last_error}});
        ++ctx_.counters.bounced;
      } else {
        pending = true;
        m->last_error = r.last_error;
      }
    }
    if (!pending) {
      co_await ctx_.on_disk([&] { ctx_.queue.remove(m->id); });
      ctx_.events.write({{"id", m->id}, {"event", "removed"}});
      co_return;
    }
    // Exponential backoff: first, 2×first, … up to max.
    auto delay = retry.first.count();
    for (int i = 1; i < m->attempts && delay < retry.max.count(); ++i) delay *= 2;
    delay = std::min<std::int64_t>(delay, retry.max.count());
    m->next_try_ms = now_ms() + delay;
    // Rewritten so that a restart resumes the schedule and shows the last error.
    co_await ctx_.on_disk([&] { ctx_.queue.rewrite(*m); });
    ctx_.events.write({{"id", m->id}, {"event", "deferred"}, {"attempts", std::to_string(m->attempts)},
                       {"retry_in_ms", std::to_string(delay)}, {"error", m->last_error}});
  }
}

}  // namespace mailnet::node
