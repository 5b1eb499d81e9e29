#include "node/relay.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <set>

#include "common/address.hpp"
#include "node/bounce.hpp"
#include "common/mail/data_reader.hpp"
#include "common/dns/resolver_client.hpp"
#include "node/smtp_channel.hpp"
#include "node/smtp_client_protocol.hpp"
#include "node/trace_headers.hpp"

namespace mailnet::node {

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Reads one possibly multi-line reply ("250-..." lines, then "250 ...").
asio::awaitable<smtp_reply> read_reply(smtp_channel& ch, millis timeout) {
  smtp_reply r;
  for (int n = 0; n < 100; ++n) {
    auto [st, line] = co_await ch.read_line(4096, timeout, timeout);
    if (st != io_status::ok || line.size() < 3 ||
        !std::all_of(line.begin(), line.begin() + 3, [](char c) { return c >= '0' && c <= '9'; })) {
      r.code = 0;
      r.text = st == io_status::timeout ? "timeout waiting for a reply" : "connection lost or malformed reply";
      co_return r;
    }
    r.code = std::stoi(line.substr(0, 3));
    r.lines.push_back(line);
    r.text = line;
    if (line.size() == 3 || line[3] != '-') co_return r;
  }
  co_return smtp_reply{0, "reply too long", {}};
}

}  // namespace

relay::relay(asio::any_io_executor ex, node_context& ctx, resolver_client& resolver)
    : ex_(std::move(ex)), ctx_(ctx), resolver_(resolver) {}

relay::~relay() {
  for (auto& [peer, d] : slots_) d->closing = true;
}

void destination_slots::wake_one() {
  if (closing || waiting.empty()) return;
  waiting.front()->cancel();
  waiting.pop_front();
}

void destination_slots::wake_all() {
  while (!waiting.empty()) wake_one();
}

void relay::stop() {
  stopping_ = true;
  // Whoever waits for a connection wakes, sees stopping_ and leaves its
  // recipients as they were; no kept connection is handed out again.
  for (auto& [peer, d] : slots_) d->wake_all();
  for (auto& [peer, list] : kept_)
    for (auto& c : list) {
      boost::system::error_code ec;
      c.channel->send_now("QUIT\r\n");  // a few bytes into an idle socket
    }
  kept_.clear();
}

connection_slot::~connection_slot() {
  if (!d_) return;
  --d_->open;
  d_->wake_one();
}

std::shared_ptr<destination_slots> relay::slots_of(const std::string& peer) {
  auto& d = slots_[peer];
  if (!d) d = std::make_shared<destination_slots>();
  return d;
}

asio::awaitable<std::optional<relay::kept_connection>> relay::open_connection(const std::string& peer,
                                                                              tcp::endpoint where,
                                                                              const std::string& domain) {
  auto slots = slots_of(peer);
  connection_slot slot;
  for (;;) {
    if (stopping_) co_return std::nullopt;
    if (auto kept = take_kept(peer, domain)) co_return kept;
    if (slots->open < ctx_.config.limits.relay_connections_per_destination) {
      slot = connection_slot(slots);
      break;
    }
    // Wait for a connection to end or to be kept (both wake the first waiter).
    auto timer = std::make_shared<asio::steady_timer>(ex_, asio::steady_timer::time_point::max());
    slots->waiting.push_back(timer);
    co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
    slots->waiting.remove(timer);
  }
  // From the node's own address: each domain shows its own IP to its peers.
  boost::system::error_code bad_host;
  const auto own = asio::ip::make_address(ctx_.config.listen.host, bad_host);
  auto [st, socket] = co_await smtp_channel::connect(ex_, where, ctx_.config.timeouts.relay_connect,
                                                     bad_host ? asio::ip::address{} : own);
  if (st != io_status::ok || stopping_) co_return std::nullopt;  // the slot is given back here
  kept_connection c;
  c.channel = std::make_unique<smtp_channel>(std::move(socket));
  c.slot = std::move(slot);
  co_return c;
}

void relay::schedule(queued_message m) {
  auto shared = std::make_shared<queued_message>(std::move(m));
  asio::co_spawn(ex_, deliver(shared), [this, id = shared->id](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      // The queue file stays; the next start (or flush) tries again.
      ctx_.events.write({{"id", id}, {"event", "relay_error"}, {"error", ex.what()}});
    }
  });
}

void relay::recover() {
  for (const auto& id : ctx_.queue.list()) {
    try {
      if (auto m = ctx_.queue.load(id)) {
        ctx_.events.write({{"id", id}, {"event", "recovered"}, {"attempts", std::to_string(m->attempts)}});
        m->next_try_ms = 0;  // a restart is a good moment to try again
        schedule(std::move(*m));
      }
    } catch (const std::exception& e) {
      ctx_.events.write({{"id", id}, {"event", "corrupt_queue_file"}, {"error", e.what()}});
      try {
        ctx_.queue.move_to_corrupt(id);
      } catch (const std::exception& e2) {
        ctx_.events.write({{"id", id}, {"event", "corrupt_move_failed"}, {"error", e2.what()}});
      }
    }
  }
}

void relay::flush() {
  // Every waiting message is retried; an attempt only touches pending recipients.
  // One in the middle of an attempt retries right after it (deliver()).
  ++flushes_;
  for (auto& [id, timer] : waiting_) timer->cancel();
}

asio::awaitable<void> relay::attempt_domain(queued_message& m, const std::string& domain) {
  // RFC 5321 §4.5.3.1.8: every server takes 100 recipients per transaction.
  constexpr std::size_t max_rcpts_per_transaction = 100;
  std::vector<queued_recipient*> rcpts;
  for (auto& r : m.rcpts)
    if (r.domain == domain && r.state == "pending" && rcpts.size() < max_rcpts_per_transaction) rcpts.push_back(&r);
  auto set_all = [&](const std::string& state, const std::string& error) {
    for (auto* r : rcpts)
      if (r->state == "pending") {
        r->state = state;
        r->last_error = error;
      }
  };

  auto route = co_await resolver_.lookup_mail_route(domain);
  if (route.status == lookup_status::nxdomain) {
    set_all("failed", "5.1.2 Domain " + domain + " not found (" + route.detail + ")");
    co_return;
  }
  if (route.status != lookup_status::ok || route.routes.empty()) {
    set_all("pending", "4.4.3 Cannot resolve " + domain + " now (" + route.detail + ")");
    co_return;
  }
  for (const auto& target : route.routes) {
    if (stopping_) co_return;  // a graceful stop: the recipients stay as they were
    boost::system::error_code ec;
    auto address = asio::ip::make_address(target.host, ec);
    if (ec) {
      set_all("pending", "4.4.3 Bad address " + target.host + " for " + domain);
      continue;
    }
    if (co_await attempt_peer(m, domain, rcpts, tcp::endpoint(address, target.port), target.name)) co_return;
    set_all("pending", "4.4.1 No answer from " + domain + " at " + target.host + ":" + std::to_string(target.port));
  }
}

asio::awaitable<bool> relay::attempt_peer(queued_message& m, const std::string& domain,
                                          const std::vector<queued_recipient*>& rcpts, tcp::endpoint where,
                                          const std::string& host) {
  const std::string peer = where.address().to_string() + ":" + std::to_string(where.port());
  smtp_client_protocol::transaction t{ctx_.config.name, domain, m.mail_from, counted_size(m.message), {},
                                      tls_want_of_config()};
  for (auto* r : rcpts) t.rcpts.push_back(r->address);
  // A kept connection first; if it turns out dead before MAIL is answered,
  // once more on a fresh one (the peer may have restarted meanwhile).
  for (;;) {
    auto conn = co_await open_connection(peer, where, domain);
    if (!conn) co_return stopping_;  // stopped: no transaction, and no "no answer" either
    smtp_client_protocol protocol(t, {conn->greeted, conn->pipelining, conn->size, conn->tls});
    co_await converse(*conn->channel, protocol, m, domain, peer, host, t.tls);
    if (protocol.lost_at_start()) continue;  // it was a kept connection: try a fresh one
    if (protocol.tls_failed()) {
      // The handshake broke the connection. "opportunistic" asked for TLS
      // only if it works: the same peer again at once, in plain text (as
      // Postfix's "may" level does). "verify" gets no mail through: 4.7.5.
      const bool fallback = t.tls == tls_want::opportunistic;
      ctx_.events.write({{"id", m.id}, {"event", "tls_failed"}, {"domain", domain}, {"to", peer},
                         {"error", protocol.tls_error()}, {"fallback", fallback ? "plain" : "no"}});
      if (fallback) {
        t.tls = tls_want::off;
        continue;
      }
    }
    apply_verdicts(protocol, rcpts);
    if (!protocol.outcome().empty())
      ctx_.events.write({{"id", m.id}, {"event", "relay_attempt"}, {"domain", domain}, {"to", peer},
                         {"reply", protocol.outcome()},
                         {"tls", conn->channel->tls_description().empty() ? "no" : conn->channel->tls_description()}});
    if (protocol.reusable()) {
      conn->greeted = true;
      conn->pipelining = protocol.facts().pipelining;
      conn->size = protocol.facts().size;
      conn->tls = protocol.facts().tls;
      if (t.tls == tls_want::verify && conn->tls) conn->verified_for = domain;
      conn->since = std::chrono::steady_clock::now();
      keep(peer, std::move(*conn));
    }
    co_return true;
  }
}

tls_want relay::tls_want_of_config() const {
  if (!ctx_.net.tls) return tls_want::off;
  switch (ctx_.config.policy.tls_relay) {
    case tls_relay_policy::off: return tls_want::off;
    case tls_relay_policy::opportunistic: return tls_want::opportunistic;
    default: return tls_want::verify;
  }
}

asio::awaitable<void> relay::converse(smtp_channel& ch, smtp_client_protocol& protocol, const queued_message& m,
                                      const std::string& domain, const std::string& peer, const std::string& host,
                                      tls_want want) {
  const std::string& id = m.id;
  const std::string& message = m.message;
  const auto timeout = ctx_.config.timeouts.relay_reply;
  for (auto s = protocol.start(); s.what != smtp_client_protocol::action::finish;) {
    if (s.what == smtp_client_protocol::action::start_tls) {
      const bool verify = want == tls_want::verify;
      tls_outcome outcome;
      if (ctx_.tls) outcome = co_await ch.start_tls_client(*ctx_.tls, domain, host, verify, timeout);
      else outcome.error = "this node has no TLS setup";
      if (outcome.ok)  // resumed=yes: the session kept from an earlier connection to the domain was taken
        ctx_.events.write({{"id", id}, {"event", "tls"}, {"domain", domain}, {"to", peer}, {"tls", outcome.description},
                           {"resumed", outcome.resumed ? "yes" : "no"}},
                          event_log::pace::batched);
      s = protocol.on_tls(outcome.ok, outcome.error);
      continue;
    }
    // A failed write still reads: the replies the peer sent before it
    // closed (a 421 after many refusals) are kept.
    if (s.what == smtp_client_protocol::action::send_message) {
      std::string wire = dot_stuff_for_wire(message);
      wire += ".\r\n";
      if (co_await ch.write(wire, timeout) != io_status::ok) {
        s = protocol.on_reply({0, "connection lost while sending the message", {}});
        continue;
      }
    } else if (!s.text.empty()) {
      co_await ch.write(s.text, timeout);
    }
    s = protocol.on_reply(co_await read_reply(ch, timeout));
    if (s.what == smtp_client_protocol::action::finish && !s.text.empty()) co_await ch.write(s.text, timeout);
  }
}

void relay::apply_verdicts(const smtp_client_protocol& protocol, const std::vector<queued_recipient*>& rcpts) {
  for (std::size_t i = 0; i < rcpts.size(); ++i) {
    auto* r = rcpts[i];
    switch (protocol.verdicts()[i]) {
      case rcpt_verdict::delivered:
        r->state = "delivered";
        r->last_error.clear();
        break;
      case rcpt_verdict::refused:
        r->state = "failed";
        r->last_error = protocol.errors()[i];
        break;
      default:  // deferred, or accepted/unanswered when the conversation broke off
        r->state = "pending";
        if (!protocol.errors()[i].empty()) r->last_error = protocol.errors()[i];
        break;
    }
  }
}

std::optional<relay::kept_connection> relay::take_kept(const std::string& peer, const std::string& domain) {
  auto it = kept_.find(peer);
  const bool verify = tls_want_of_config() == tls_want::verify;
  while (it != kept_.end() && !it->second.empty()) {
    kept_connection c = std::move(it->second.back());
    it->second.pop_back();
    // Another domain's verified connection at the same address proves nothing for this one: it closes.
    if (verify && c.verified_for != domain) continue;
    if (std::chrono::steady_clock::now() - c.since < idle_limit && c.channel->quiet_and_open()) return c;
    // Closed by the peer, or it said something (a 421 on its idle timeout): drop it.
  }
  return std::nullopt;
}

void relay::keep(const std::string& peer, kept_connection c) {
  auto& list = kept_[peer];
  if (list.size() >= kept_per_peer) return;  // c closes here
  list.push_back(std::move(c));
  slots_of(peer)->wake_one();  // a delivery waiting for the cap can take it
  if (!sweeping_) {
    sweeping_ = true;
    asio::co_spawn(ex_, sweep_kept(), asio::detached);
  }
}

asio::awaitable<void> relay::sweep_kept() {
  // Closes what has been idle for idle_limit, politely; ends when nothing is kept.
  asio::steady_timer tick(ex_);
  while (!kept_.empty()) {
    tick.expires_after(std::chrono::seconds(1));
    co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    const auto now = std::chrono::steady_clock::now();
    for (auto it = kept_.begin(); it != kept_.end();) {
      auto& list = it->second;
      std::erase_if(list, [&](kept_connection& c) {
        if (now - c.since < idle_limit) return false;
        c.channel->send_now("QUIT\r\n");  // a few bytes into an idle socket
        return true;
      });
      it = list.empty() ? kept_.erase(it) : std::next(it);
    }
  }
  sweeping_ = false;
}

asio::awaitable<void> relay::send_bounce(const queued_message& m, const std::vector<const queued_recipient*>& failed) {
  for (const auto* r : failed)
    ctx_.events.write({{"id", m.id}, {"event", "bounced"}, {"rcpt", r->address}, {"error", r->last_error}});
  // RFC 5321 §4.5.5: a bounce is never bounced.
  if (m.mail_from.empty()) {
    ctx_.events.write({{"id", m.id}, {"event", "bounce_dropped"}, {"reason", "null sender"}});
    co_return;
  }
  auto sender = parse_mailbox(m.mail_from);
  if (!sender) {
    ctx_.events.write({{"id", m.id}, {"event", "bounce_dropped"}, {"reason", "unparsable sender"}});
    co_return;
  }
  std::vector<failed_recipient> report;
  for (const auto* r : failed) {
    bool remote_reply = r->last_error.size() > 3 && std::isdigit(static_cast<unsigned char>(r->last_error[0])) &&
                        r->last_error[1] != '.';
    std::string status = status_of(r->last_error);
    if (status[0] == '4') status = "5.4.7";  // expired while only temporary failures were seen
    report.push_back({r->address, status, r->last_error, remote_reply ? r->last_error : std::string{}});
  }
  bounce_info info{ctx_.config.name, m.mail_from, m.id, ctx_.new_id(),
                   std::chrono::system_clock::time_point(std::chrono::milliseconds(m.created_ms)),
                   std::chrono::system_clock::now()};
  std::string dsn = make_bounce(info, report, m.message);

  envelope env;
  env.helo = ctx_.config.name;
  recipient to{sender->to_string(), sender->domain, {}};
  if (sender->domain == ctx_.config.name) {
    auto found = find_local_mailbox(ctx_.config, *sender);
    if (found.mailbox.empty()) {
      ctx_.events.write({{"id", m.id}, {"event", "bounce_dropped"}, {"reason", found.text}});
      co_return;
    }
    to.mailbox = found.mailbox;
  }
  env.rcpts.push_back(to);
  // The bounce is a new message from <>: local senders get it in their
  // Maildir now, remote ones through the queue like any relayed mail.
  // bounce_queued goes before the bounce's own delivered event: commit() calls this first.
  auto announce = [this, &info, &m](bool ok) {
    ctx_.events.write({{"id", info.bounce_id}, {"event", ok ? "bounce_queued" : "bounce_failed"}, {"for", m.id},
                       {"to", m.mail_from}});
  };
  bool ok = co_await ctx_.commit(env, std::move(dsn), info.bounce_id, announce);
  if (!ok) throw std::runtime_error("could not store the bounce for " + m.id);
}

asio::awaitable<void> relay::deliver(std::shared_ptr<queued_message> m) {
  auto timer = std::make_shared<asio::steady_timer>(ex_);
  const auto& retry = ctx_.config.retry;
  auto flushes_seen = flushes_;
  for (;;) {
    // A flush since the last attempt began (during it, or while its outcome
    // was written) means: try now, not at the backoff's time.
    if (m->next_try_ms > now_ms() && flushes_ == flushes_seen) {
      waiting_[m->id] = timer;
      timer->expires_after(millis(m->next_try_ms - now_ms()));
      co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
      waiting_.erase(m->id);
    }
    if (stopping_) co_return;  // the queue file is read again at the next start
    struct under_way {
      std::shared_ptr<std::size_t> count;
      explicit under_way(std::shared_ptr<std::size_t> c) : count(std::move(c)) { ++*count; }
      ~under_way() { --*count; }
    } attempt_guard(attempts_under_way_);
    flushes_seen = flushes_;
    std::set<std::string> domains;
    for (const auto& r : m->rcpts)
      if (r.state == "pending") domains.insert(r.domain);
    std::vector<std::string> before;
    for (const auto& r : m->rcpts) before.push_back(r.state);
    // attempt_domain sends at most max_rcpts_per_transaction recipients; go on
    // while each round gets somewhere.
    auto pending_for = [&](const std::string& d) {
      return std::count_if(m->rcpts.begin(), m->rcpts.end(),
                           [&](const queued_recipient& r) { return r.domain == d && r.state == "pending"; });
    };
    for (const auto& d : domains) {
      for (auto left = pending_for(d); left > 0 && !stopping_;) {
        co_await attempt_domain(*m, d);
        auto now_left = pending_for(d);
        if (now_left >= left) break;  // no progress: the backoff decides when to try again
        left = now_left;
      }
    }
    // A graceful stop cut this attempt short: it does not count, and it
    // never expires a recipient it did not try; what it did deliver is
    // written below, so the next start does not send it again.
    if (!stopping_) ++m->attempts;
    const bool expired = !stopping_ && now_ms() - m->created_ms > retry.give_up_after.count();
    bool pending = false;
    std::vector<queued_recipient*> failed;
    for (std::size_t i = 0; i < m->rcpts.size(); ++i) {
      auto& r = m->rcpts[i];
      if (r.state == "pending" && expired) {
        r.state = "failed";
        r.last_error = "5.4.7 Delivery time expired after " + std::to_string(m->attempts) +
                       " attempts; last error: " + r.last_error;
      }
      if (before[i] != "pending") continue;
      if (r.state == "delivered") {
        ctx_.events.write({{"id", m->id}, {"event", "relayed"}, {"rcpt", r.address}});
      } else if (r.state == "failed") {
        failed.push_back(&r);
      } else {
        pending = true;
        m->last_error = r.last_error;
      }
    }
    // The bounce is stored before the queue file changes: a crash in between
    // can duplicate a bounce, never lose one. If it cannot be stored (a full
    // disk), those recipients wait like pending ones and fail, and bounce, again.
    if (!failed.empty()) {
      try {
        co_await send_bounce(*m, std::vector<const queued_recipient*>(failed.begin(), failed.end()));
      } catch (const std::exception& e) {
        ctx_.events.write({{"id", m->id}, {"event", "bounce_deferred"}, {"error", e.what()}});
        for (auto* r : failed) r->state = "pending";
        pending = true;
      }
    }
    // Exponential backoff: first, 2×first, … up to max.
    auto delay = retry.first.count();
    for (int i = 1; i < m->attempts && delay < retry.max.count(); ++i) delay *= 2;
    delay = std::min<std::int64_t>(delay, retry.max.count());
    m->next_try_ms = now_ms() + delay;
    try {
      if (!pending) {
        co_await ctx_.on_disk([&] { ctx_.queue.remove(m->id); });
        ctx_.events.write({{"id", m->id}, {"event", "removed"}});
        co_return;
      }
      // Rewritten so that a restart resumes the schedule and `mailnet queue` shows the last error.
      co_await ctx_.on_disk([&] { ctx_.queue.rewrite(*m); });
      ctx_.events.write({{"id", m->id}, {"event", "deferred"}, {"attempts", std::to_string(m->attempts)},
                         {"retry_in_ms", std::to_string(delay)}, {"error", m->last_error}});
    } catch (const std::exception& e) {
      // Disk trouble: the message stays in memory (and its older file on
      // disk) and this loop tries again after the backoff.
      ctx_.events.write({{"id", m->id}, {"event", "queue_error"}, {"error", e.what()}});
    }
  }
}

}  // namespace mailnet::node
