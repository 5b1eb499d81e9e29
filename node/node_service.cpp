#include "node/node_service.hpp"

#include <random>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <future>
#include <chrono>
#include <thread>
#include <unistd.h>

#include "common/faults_json.hpp"
#include "common/mail/durable_file.hpp"
#include "common/private_files.hpp"
#include "node/attachment_loader.hpp"
#include "node/bounce.hpp"
#include "node/lazy_dkim.hpp"
#include "node/fd_reserve.hpp"
#include "common/mail/mime_comments.hpp"
#include "node/node_context.hpp"
#include "node/smtp_channel.hpp"
#include "node/relay.hpp"
#include "common/dns/resolver_client.hpp"
#include "node/smtp_session.hpp"

namespace mailnet::node {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::string node_context::new_id() {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llX%04zX", static_cast<unsigned long long>(ms), ++id_counter_ & 0xFFFF);
  return buf;
}

namespace {

// Suspends the calling coroutine until start's completion (called on any
// thread) runs, then resumes it on its own executor. The frame stays
// suspended meanwhile, so references into it stay valid. (A coroutine lambda
// capturing its work by move double-freed it under GCC 12: start is a plain
// lambda, and the coroutine is this function.)
template <typename Start>
asio::awaitable<void> resume_after(Start start) {
  auto initiate = [&start](auto handler) {
    auto shared = std::make_shared<decltype(handler)>(std::move(handler));
    start([shared] {
      auto ex = asio::get_associated_executor(*shared);
      asio::dispatch(ex, std::move(*shared));
    });
  };
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(initiate, asio::use_awaitable);
}

}  // namespace

asio::awaitable<void> node_context::on_disk(std::function<void()> work) {
  std::exception_ptr error;
  disk.need_thread();  // throws here, not in the post below
  co_await resume_after([&](auto resume) {
    ++disk_jobs;
    disk.post([this, &work, &error, resume] {
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      --disk_jobs;
      resume();
    });
  });
  if (error) std::rethrow_exception(error);
}

namespace {

// Only a message whose header says it may carry parts or a file (a multipart
// or message/* type, comments aside, a disposition, a file name) is parsed
// for attachments: plain mail skips the GMime parse, which was a large share
// of the node's CPU per message (bench/README.md).
bool may_have_attachments(std::string_view message) { return may_carry_attachments(message); }

}  // namespace

asio::awaitable<auth_results> node_context::authenticate(auth_request request) {
  auth_results results;
  auth_service* service = nullptr;
  try {
    service = &auth();  // made now if this is the first message to check
    service->need_thread();
  } catch (const std::exception& e) {
    // No handle or no thread to be had (out of memory, the process limit):
    // the verdicts a check that could not run gives (auth_service::submit), and
    // the next message tries again.
    results.spf.result = "temperror";
    results.spf.detail = std::string("the checks could not start: ") + e.what();
    results.dmarc.result = "temperror";
    co_return results;
  }
  co_await resume_after([&](auto resume) {
    service->submit(std::move(request), [&results, resume](auth_results r) {
      results = std::move(r);
      resume();
    });
  });
  co_return results;
}

asio::awaitable<bool> node_context::commit(const envelope& env, std::string message, const std::string& id,
                                           std::function<void(bool ok)> announce, bool junk) {
  queued_message queued;
  queued.id = id;
  queued.mail_from = env.mail_from;
  queued.created_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  std::vector<std::string> local;
  for (const auto& r : env.rcpts) {
    if (r.is_local()) {
      const std::string box = junk ? r.mailbox + "/" + std::string(junk_folder) : r.mailbox;
      if (std::find(local.begin(), local.end(), box) == local.end()) local.push_back(box);
    } else if (std::none_of(queued.rcpts.begin(), queued.rcpts.end(),
                            [&](const queued_recipient& q) { return q.address == r.address; })) {
      queued.rcpts.push_back({r.address, r.domain, {}, "pending", {}});
    }
  }
  std::string error;
  std::vector<std::filesystem::path> delivered_files;  // one per local mailbox, in order
  std::string stored;  // the Maildir form, made on the committer's thread
  // Every copy is written in its tmp/ folder before any is published; the
  // committer makes them durable, links them all or none, makes the links
  // durable, and only then runs done (common/mail/durable_file.hpp). A failure answers
  // 451 with nothing visible in any new/ or in the queue.
  auto work = [&]() -> std::vector<staged_file> {
    std::vector<staged_file> staged;
    try {
      if (!local.empty()) stored = maildir_form(message);
      staged = maildirs.stage_shared(local, stored);  // one file, a link per mailbox
      if (!queued.rcpts.empty()) {
        queued.message = message;
        staged.push_back(queue.stage(queued));
      }
    } catch (...) {
      discard(staged);
      throw;
    }
    for (std::size_t i = 0; i < local.size(); ++i) delivered_files.push_back(staged[i].final_path);
    return staged;
  };
  std::exception_ptr failure;
  try {
    committer.need_threads();  // its threads start at the first message: so that submit cannot throw
  } catch (...) {
    failure = std::current_exception();
  }
  if (!failure)
    co_await resume_after([&](auto resume) {
      committer.submit(work, [&failure, resume](std::exception_ptr e) {
        failure = e;
        resume();
      });
    });
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (!error.empty()) {
    events.write({{"id", id}, {"event", "disk_error"}, {"error", error}});
    if (announce) announce(false);
    co_return false;
  }
  if (announce) announce(true);
  for (const auto& mailbox : local) {
    if (junk)
      events.write({{"id", id}, {"event", "delivered"}, {"mailbox", mailbox.substr(0, mailbox.find('/'))},
                    {"folder", std::string(junk_folder)}},
                   event_log::pace::batched);
    else
      events.write({{"id", id}, {"event", "delivered"}, {"mailbox", mailbox}}, event_log::pace::batched);
  }
  // The attachments come from the file as stored, as any reader of it gets them.
  if (!local.empty() && may_have_attachments(stored))
    extract_later(id, local, std::move(delivered_files), std::move(stored));
  if (!queued.rcpts.empty() && relay_agent) relay_agent->schedule(std::move(queued));
  co_return true;
}

void node_context::extract_later(const std::string& id, const std::vector<std::string>& mailboxes,
                                 std::vector<std::filesystem::path> files, std::string message) {
  // After the 250: attachments are a convenience and must not delay it.
  // Every mailbox's copy is one file under one name (maildir_store::
  // stage_shared), so the attachments are saved once, in the folder named
  // after that name, where `show` finds them from any recipient's copy.
  if (files.empty()) return;
  ++disk_jobs;
  auto extract = [this, id, mailboxes, name = files.front().filename().string(), message = std::move(message)] {
    extraction_result r;
    try {
      r = extract_attachments_via_module(message, dir / "attachments", name);
    } catch (const std::exception& e) {  // out of memory and the like: a pool thread must not die
      r.error = e.what();
    }
    const std::string saved = std::to_string(r.saved.size());
    for (const auto& mailbox : mailboxes) {
      if (r.error.empty() && r.reason.empty())
        events.write({{"id", id}, {"event", "attachments"}, {"mailbox", mailbox}, {"saved", saved}});
      else if (r.error.empty())  // parsed, nothing to save: say why
        events.write({{"id", id}, {"event", "attachments"}, {"mailbox", mailbox}, {"saved", saved},
                      {"reason", r.reason}});
      else
        events.write({{"id", id}, {"event", "attachment_error"}, {"mailbox", mailbox}, {"saved", saved},
                      {"error", r.error}});
    }
    --disk_jobs;
  };
  try {
    extraction.post(std::move(extract));
  } catch (const std::system_error& e) {  // no thread to be had: the mail is delivered, its files not saved
    --disk_jobs;
    for (const auto& mailbox : mailboxes)
      events.write({{"id", id}, {"event", "attachment_error"}, {"mailbox", mailbox}, {"saved", "0"},
                    {"error", std::string("no thread to save them: ") + e.what()}});
  }
}

struct node_service::impl {
  impl(asio::io_context& io_, topology net_, const std::string& domain, std::filesystem::path dir_, bool echo_)
      : io(io_), net(std::move(net_)), config(find(net, domain)), dir(std::move(dir_)), echo(echo_),
        ctx(net, config, dir, events, transcript, disk, extraction, committer),
        acceptor(io), submission_acceptor(io) {}

  // The node's folder and the ones it writes in: 0700, ours, no link
  // (private_files.hpp), checked before the first write.
  static const std::filesystem::path& make_folder(const std::filesystem::path& d) {
    make_private_folder(d);
    for (const char* sub : {"mail", "queue"}) make_private_folders(d, sub);
    return d;
  }

  static const domain_config& find(const topology& t, const std::string& domain) {
    const auto* d = t.find_domain(domain);
    if (!d) throw topology_error("domain " + domain + " is not in topology " + t.name);
    return *d;
  }

  std::string too_many_files_reply() const {
    return "421 4.3.2 " + config.name + " Too many open files, try again later\r\n";
  }

  // One log line per second at most for each kind of trouble, with how many
  // happened meanwhile.
  void note(std::size_t& count, std::chrono::steady_clock::time_point& last, const char* event, std::string detail) {
    ++count;
    if (auto now = std::chrono::steady_clock::now(); now - last >= std::chrono::seconds(1)) {
      events.write({{"event", event}, {"error", std::move(detail)}, {"count", std::to_string(count)}});
      count = 0;
      last = now;
    }
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& listener, bool submission) {
    asio::steady_timer pause(io);
    for (;;) {
      auto [ec, socket] = co_await listener.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !listener.is_open()) co_return;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
        // The table is full: the spare descriptor answers each waiting
        // client 421 rather than leaving it unanswered in the listen queue.
        // A bounded batch, so that a flood cannot keep the sessions waiting.
        bool answered = false;
        for (int i = 0; i < 64 && fds.refuse_waiting(listener.native_handle(), too_many_files_reply()); ++i)
          answered = true;
        note(fd_refusals, last_fd_refusal_log, "refused_fd_limit", ec.message());
        if (answered) continue;
      }
      if (ec) {
        // Out of file descriptors (EMFILE/ENFILE) and the like: breathe, go on.
        note(accept_errors, last_accept_log, "accept_error", ec.message());
        pause.expires_after(std::chrono::milliseconds(50));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      if (ctx.active_sessions >= fds.session_cap()) {
        fd_reserve::answer_now(socket.native_handle(), too_many_files_reply());
        note(fd_refusals, last_fd_refusal_log, "refused_fd_limit",
             "sessions at the cap the descriptor limit allows (" + std::to_string(fds.session_cap()) + ")");
        continue;  // the socket closes here
      }
      asio::co_spawn(io, run_smtp_session(ctx, std::move(socket), submission), [this](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          events.write({{"event", "session_error"}, {"error", ex.what()}});
        }
      });
    }
  }

  // Waits until no session is open and no relay attempt is under way, or
  // until the deadline; wakes the idle sessions on each turn (one woken just
  // before it began to wait would otherwise sleep until its idle timeout).
  asio::awaitable<void> drain(std::chrono::steady_clock::time_point deadline) {
    asio::steady_timer tick(io);
    for (;;) {
      for (auto& wake : ctx.stop_hooks) wake();
      const bool relay_busy = relay_agent && relay_agent->busy();
      if ((ctx.active_sessions == 0 && !relay_busy) || std::chrono::steady_clock::now() >= deadline) {
        events.write({{"event", "stopped"}, {"sessions_cut", std::to_string(ctx.active_sessions)},
                      {"relay_attempt_cut", relay_busy ? "yes" : "no"}});
        events.flush();
        io.stop();
        co_return;
      }
      tick.expires_after(std::chrono::milliseconds(20));
      co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  asio::io_context& io;
  topology net;
  const domain_config& config;
  std::filesystem::path dir;
  bool echo;
  event_log events;
  event_log transcript;
  elastic_pool disk{4};       // signing, queue rewrites and removals
  elastic_pool extraction{1};  // attachments (node_context::extraction)
  group_committer committer{make_folder(dir), config.policy.sync_whole_filesystem};  // new messages
  node_context ctx;
  // Binds the listening socket. A port held only by sockets that do not
  // listen (an outgoing connection that took it as its ephemeral port, or
  // one in TIME_WAIT: ports 32768-60999 are the kernel's to hand out) is
  // freed by the kernel within 60 s, so the node says so and waits for it;
  // a port where a server listens is an error at once.
  std::uint16_t listen(tcp::acceptor& listener, const endpoint& where) {
    tcp::endpoint ep(asio::ip::make_address(where.host), where.port);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(65);
    bool said = false;
    for (;;) {
      boost::system::error_code ec;
      listener.open(ep.protocol(), ec);
      if (!ec) listener.set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) listener.bind(ep, ec);
      if (!ec) listener.listen(asio::socket_base::max_listen_connections, ec);
      if (!ec) return listener.local_endpoint().port();
      boost::system::error_code ignored;
      listener.close(ignored);
      const bool busy = ec == asio::error::address_in_use && ep.port() != 0;
      if (!busy || someone_listens(ep) || std::chrono::steady_clock::now() >= give_up)
        throw std::system_error(ec.value(), std::generic_category(),
                                config.name + ": cannot listen on " + where.to_string() +
                                    (busy ? " (another server listens there)" : ""));
      if (!said) {
        events.write({{"event", "port_busy"}, {"listen", where.to_string()},
                      {"detail", "held by a client connection, not a server (an ephemeral port or TIME_WAIT); "
                                 "waiting up to 65 s for the kernel to free it"}});
        events.flush();  // the event loop is not running yet
        said = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }

  bool someone_listens(const tcp::endpoint& ep) {
    tcp::socket probe(io);
    boost::system::error_code ec;
    probe.connect(ep, ec);
    const bool answered = !ec;
    probe.close(ec);
    return answered;
  }

  tcp::acceptor acceptor;
  tcp::acceptor submission_acceptor;  // open when the domain has "submission"
  std::unique_ptr<resolver_client> resolver;
  // After the resolver: destroyed (its threads joined) before it.
  std::unique_ptr<auth_service> auth;
  std::atomic<bool> closing{false};  // set before auth goes: its lookups answer at once
  std::unique_ptr<relay> relay_agent;

  // One question from an auth_service thread: asked through the node's own
  // resolver client on the event loop (its cache, deadlines and attempts),
  // waited for here. wait: longer than the client's own deadlines, so that
  // it matters only when the loop has stopped. An answer the cache holds is
  // taken here, on the check's thread: the same reply, without two thread
  // hand-offs and a coroutine per question (most of a check's questions).
  dns_reply ask_resolver(const std::string& name, std::uint16_t type, std::chrono::milliseconds wait) {
    dns_reply failed;
    failed.kind = reply_kind::failure;
    failed.detail = "the node is stopping";
    if (closing) return failed;
    if (auto hit = resolver->cached(name, type)) return std::move(*hit);
    auto promise = std::make_shared<std::promise<dns_reply>>();
    auto answer = promise->get_future();
    asio::co_spawn(io, resolver->query(name, type), [promise](std::exception_ptr e, dns_reply reply) {
      if (e) {
        reply = {};
        reply.kind = reply_kind::failure;
        reply.detail = "the resolver client failed";
      }
      promise->set_value(std::move(reply));
    });
    if (answer.wait_for(wait) != std::future_status::ready) {
      failed.detail = "no answer from the resolver client in time";
      return failed;
    }
    try {
      return answer.get();
    } catch (const std::exception&) {  // broken promise: the loop was torn down
      return failed;
    }
  }
  std::size_t accept_errors = 0;
  std::chrono::steady_clock::time_point last_accept_log{};
  fd_reserve fds;
  std::vector<std::string> network_domains;  // for the rules of faults.json
  std::function<std::vector<std::string>()> load_network_domains;  // set until the names are loaded
  void need_network_domains() {
    if (!load_network_domains) return;
    network_domains = load_network_domains();
    load_network_domains = nullptr;
    ctx.faults.set_network_domains(network_domains);
  }
  std::size_t fd_refusals = 0;
  std::chrono::steady_clock::time_point last_fd_refusal_log{};
};

node_service::node_service(asio::io_context& io, topology net, const std::string& domain,
                           std::filesystem::path domain_dir, bool echo, std::vector<std::string> network_domains,
                           std::function<std::vector<std::string>()> load_network_domains)
    : impl_(std::make_unique<impl>(io, std::move(net), domain, std::move(domain_dir), echo)) {
  auto& m = *impl_;
  if (network_domains.empty())
    for (const auto& d : m.net.domains) network_domains.push_back(d.name);
  if (load_network_domains &&
      std::any_of(m.net.faults.rules.begin(), m.net.faults.rules.end(),
                  [&](const fault_rule& r) { return r.to == m.config.name && r.from == "clients"; }))
    network_domains = load_network_domains();  // needed now
  else
    m.load_network_domains = std::move(load_network_domains);
  m.network_domains = network_domains;
  // Without a seed in the topology, one of our own, logged at start so that a run can be replayed.
  std::random_device random;
  const std::uint64_t random_seed = ((std::uint64_t{random()} << 32) | random()) & ((1ULL << 53) - 1);
  m.ctx.faults = fault_plan(m.net.faults, m.config.name, std::move(network_domains), random_seed,
                            std::chrono::steady_clock::now());
}

node_service::~node_service() {
  // The checks' threads first: a lookup they wait for needs the resolver client.
  if (impl_) impl_->closing = true;
  if (impl_) impl_->auth.reset();
  // The committer first: its writers use ctx, which goes before it.
  if (impl_) impl_->committer.stop();
  if (impl_) impl_->disk.join();
  if (impl_) impl_->extraction.join();
}

void node_service::finish() {
  auto& m = *impl_;
  // Nothing more is given to the committer or the disk pool: only the
  // stopped loop did. With all they were given over, there is nothing to
  // wait for, and their threads are left to the kernel: joining them,
  // each unmapping its stack, was half of an idle node's stop.
  if (!m.committer.idle() || m.ctx.disk_jobs != 0) {
    m.closing = true;  // no check waits on the resolver client any more
    m.committer.stop();
    m.disk.join();
    m.extraction.join();
  }
  m.transcript.flush();
  m.events.flush();
}

std::uint16_t node_service::start() {
  auto& m = *impl_;
  m.events.open(m.dir / "node.log", m.echo);
  m.transcript.open(m.dir / "smtp.log", false);
  // One write(2) per pass of the event loop for all sessions' lines: they
  // were 17 system calls per message (bench/README.md, "profile").
  m.transcript.coalesce([&io = m.io](std::function<void()> flush) { asio::post(io, std::move(flush)); });
  // The events every message brings (connect, accepted, delivered,
  // disconnect) at most every 20 ms, and, when few sessions are open, before
  // a session's last reply (smtp_session.cpp); all others in the pass, taking the
  // waiting ones along. Per pass, node.log's writes and the launcher's
  // wake-up for its echo cost the node 1.1-1.2x its rate under load
  // (bench/README.md, change 18). Such a line reaches node.log at most 20 ms
  // late, and a crash loses at most 20 ms of them (no 250 depends on them).
  m.events.coalesce([&io = m.io](std::function<void()> flush) { asio::post(io, std::move(flush)); },
                    [&io = m.io](std::function<void()> flush) {
                      auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(20));
                      timer->async_wait([timer, flush = std::move(flush)](const boost::system::error_code&) { flush(); });
                    });
  for (const auto& user : m.config.users) {
    std::string box = user;
    for (auto& c : box) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    m.ctx.maildirs.ensure(box);
  }
  m.ctx.queue.recover();
  // Copies left in a Maildir's tmp/ by a crash mid-commit never got a 250:
  // maildir(5) says to clean them; the sender retries and the copy comes again.
  // Never through a link: neither a linked Maildir nor a linked tmp/ is emptied.
  std::error_code ec_scan;
  for (const auto& box : std::filesystem::directory_iterator(m.dir / "mail", ec_scan)) {
    if (box.is_symlink() || !box.is_directory()) continue;
    try {
      empty_folder(box.path() / "tmp");
    } catch (const std::exception&) {  // a tmp/ that is a link or gone: nothing of ours to clean
    }
  }

  auto port = m.listen(m.acceptor, m.config.listen);
  std::uint16_t submission_port = 0;
  if (m.config.submission) {
    // The launcher wrote the passwords before starting the nodes (common/passwords.hpp).
    m.ctx.passwords = read_passwords(passwords_file(m.dir.parent_path()));
    submission_port = m.listen(m.submission_acceptor, *m.config.submission);
  }
  if (m.net.tls) {
    // The launcher wrote them in <run>/tls/ (launcher/tls_ca.hpp); read at
    // the first STARTTLS or relay that needs them, and a file that is
    // missing then is told once.
    m.ctx.tls = lazy_tls(m.dir.parent_path() / "tls", m.config.name, [events = &m.events](const std::string& problem) {
      events->write({{"event", "tls_unavailable"}, {"detail", problem}});
    });
  }
  if (m.config.dns.dkim) {
    // Read at the first message to sign (lazy_dkim.hpp); a key that cannot
    // be used is told once then, and each message it leaves unsigned says so.
    m.ctx.dkim = std::make_shared<lazy_dkim>(m.config.name, m.config.dns.dkim->selector, m.dir / "dkim.key",
                                             [events = &m.events](const std::string& problem) {
                                               events->write({{"event", "dkim_unavailable"}, {"error", problem}});
                                             });
  }
  if (!m.ctx.faults.empty())
    m.events.write({{"event", "faults"}, {"seed", std::to_string(m.ctx.faults.seed())},
                    {"rules", std::to_string(m.ctx.faults.size())},
                    {"seeded_by", m.net.faults.seed ? "topology" : "node"}});
  reload_faults(true);  // rules added (or cleared) while the network runs, kept across a restart

  const auto& r = m.net.resolver;
  m.resolver = std::make_unique<resolver_client>(
      m.io.get_executor(), asio::ip::udp::endpoint(asio::ip::make_address(r.listen.host), r.listen.port),
      r.query_timeout, r.query_attempts);
  m.relay_agent = std::make_unique<relay>(m.io.get_executor(), m.ctx, *m.resolver);
  m.ctx.relay_agent = m.relay_agent.get();
  m.ctx.resolver = m.resolver.get();
  if (m.config.policy.dmarc != dmarc_policy::off) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(r.query_timeout * r.query_attempts) +
                      std::chrono::seconds(2);
    // Made at the first message to check, on the event loop: an idle node
    // never opens the libraries' handles nor starts the threads.
    m.ctx.auth = [&m, wait]() -> auth_service& {
      if (!m.auth)
        // Up to four threads, started as checks overlap: a check waits on
        // DNS more than it computes, and a resolver that does not answer
        // holds each for its whole deadline.
        m.auth = std::make_unique<auth_service>(
            [&m, wait](const std::string& name, std::uint16_t type) { return m.ask_resolver(name, type, wait); }, 4);
      return *m.auth;
    };
  }
  m.relay_agent->recover();
  m.fds.measure();  // after the node's own descriptors are open
  if (m.fds.session_cap() < m.config.limits.connections)
    m.events.write({{"event", "fd_limit"}, {"sessions", std::to_string(m.fds.session_cap())},
                    {"detail", "the descriptor limit admits fewer sessions than limits.connections"}});

  for (auto* acceptor : {&m.acceptor, &m.submission_acceptor}) {
    if (!acceptor->is_open()) continue;
    asio::co_spawn(m.io, m.accept_loop(*acceptor, acceptor == &m.submission_acceptor), [this](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        impl_->events.write({{"event", "accept_loop_error"}, {"error", ex.what()}});
      }
    });
  }
  m.events.write({{"event", "ready"}, {"domain", m.config.name},
                  {"listen", endpoint{m.config.listen.host, port}.to_string()},
                  {"pid", std::to_string(::getpid())},
                  // Offered by policy: whether the certificate loads is known at the first STARTTLS.
                  {"starttls", m.config.policy.tls != tls_policy::off && m.ctx.tls
                                   ? std::string(to_string(m.config.policy.tls)) : "off"},
                  // What the relay does: plain text whatever the policy when the network has no TLS.
                  {"tls_relay", m.net.tls ? std::string(to_string(m.config.policy.tls_relay)) : "off"},
                  {"dmarc", std::string(to_string(m.config.policy.dmarc))},
                  {"submission", m.config.submission ? endpoint{m.config.submission->host, submission_port}.to_string()
                                                     : std::string("no")}});
  return port;
}

// <domain>/faults.json, written by the launcher for `mailnet fault add` and
// `clear`: {"generation": G, "rules": [...], "cleared": ["name", ...]}. Each
// load is logged with its generation (the launcher waits for that line);
// a file that cannot be read leaves the rules as they were.
void node_service::reload_faults(bool at_start) {
  auto& m = *impl_;
  const auto file = m.dir / "faults.json";
  std::string generation = "?";
  try {
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::symlink_status(file, ec))) {
      if (at_start) return;
      throw std::runtime_error("no such file");
    }
    const auto doc = nlohmann::json::parse(read_whole_file(file, false));
    generation = std::to_string(doc.at("generation").get<std::uint64_t>());
    m.need_network_domains();  // the rules name domains of the whole network
    const json_reader reader(file.string());
    std::vector<fault_rule> added;
    const auto& rules = doc.at("rules");
    for (std::size_t i = 0; i < rules.size(); ++i)
      added.push_back(read_fault_rule(reader, rules[i], "$.rules[" + std::to_string(i) + "]", m.network_domains));
    const auto cleared = doc.at("cleared").get<std::vector<std::string>>();
    m.ctx.faults.set_run_time(added, cleared);
    m.events.write({{"event", "fault_rules"}, {"generation", generation}, {"rules", std::to_string(m.ctx.faults.size())},
                    {"added", std::to_string(added.size())}, {"cleared", std::to_string(cleared.size())},
                    {"seed", std::to_string(m.ctx.faults.seed())}});
  } catch (const std::exception& e) {
    m.events.write({{"event", "fault_rules_error"}, {"generation", generation}, {"error", e.what()}});
  }
}

void node_service::flush() {
  impl_->events.write({{"event", "flush"}});
  if (impl_->relay_agent) impl_->relay_agent->flush();
}

void node_service::stop() {
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  impl_->submission_acceptor.close(ec);
}

void node_service::shut_down(std::chrono::milliseconds drain) {
  auto& m = *impl_;
  if (m.ctx.stopping) return;
  m.events.write({{"event", "stopping"}, {"sessions", std::to_string(m.ctx.active_sessions)},
                  {"drain_ms", std::to_string(drain.count())}});
  m.ctx.stopping = true;
  stop();
  if (m.relay_agent) m.relay_agent->stop();
  asio::co_spawn(m.io, m.drain(std::chrono::steady_clock::now() + drain), asio::detached);
}

}  // namespace mailnet::node
