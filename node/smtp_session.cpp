#include "node/smtp_session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <list>
#include <optional>

#include "common/dns/resolver_client.hpp"
#include "common/mail/data_reader.hpp"
#include "node/dkim_signer.hpp"
#include "node/lazy_dkim.hpp"
#include "node/smtp_channel.hpp"
#include "node/trace_headers.hpp"

namespace mailnet::node {

namespace {

// Signs the mail of the node's own domain (its From) that goes to a remote
// recipient, on the disk pool (an RSA signature is a millisecond of CPU the
// event loop need not spend), and puts the DKIM-Signature after the trace
// lines at trace_end, where counted_size() still knows them as the
// network's own. The accepted event's dkim field: the selector, or "no".
// A signature that cannot be made is logged (event=dkim_unavailable) and the
// mail goes unsigned: it is never held back for it.
asio::awaitable<std::string> sign_if_ours(node_context& ctx, const envelope& env, std::string& message,
                                          std::size_t trace_end, const std::string& qid) {
  // ctx.dkim: set exactly when the domain has dns.dkim on.
  if (!ctx.dkim || std::all_of(env.rcpts.begin(), env.rcpts.end(), [](const auto& r) { return r.is_local(); }))
    co_return "no";
  if (author_domain(std::string_view(message).substr(trace_end)) != ctx.config.name) co_return "no";
  dkim_signer::result signed_by;
  // The first message to sign makes the signer (reads the key), on the disk pool too.
  try {
    co_await ctx.on_disk([&] {
      if (const dkim_signer* signer = ctx.dkim->signer()) signed_by = signer->sign(message, qid);
      else signed_by.error = ctx.dkim->problem();
    });
  } catch (const std::exception& e) {  // no thread to be had: unsigned, as for a key that cannot be read
    signed_by.error = std::string("no thread to sign on: ") + e.what();
  }
  if (signed_by.header.empty()) {
    ctx.events.write({{"id", qid}, {"event", "dkim_unavailable"}, {"error", signed_by.error}});
    co_return "no";
  }
  message.insert(trace_end, signed_by.header);
  co_return ctx.dkim->selector();
}

// A transcript line shows control bytes as \xNN so a student can see them.
std::string printable(std::string_view s, std::size_t max = 300) {
  std::string out;
  for (unsigned char c : s.substr(0, max)) {
    if (c < 0x20 || c == 0x7f || c == '\\') {
      append_hex_escape(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

// The fault stage a command line reaches (none for the commands rules do not watch).
fault_stage stage_of(std::string_view line) {
  auto verb = line.substr(0, line.find(' '));
  auto is = [&](std::string_view v) {
    return verb.size() == v.size() && std::equal(verb.begin(), verb.end(), v.begin(), [](char a, char b) {
             return std::toupper(static_cast<unsigned char>(a)) == b;
           });
  };
  if (is("EHLO") || is("HELO")) return fault_stage::ehlo;
  if (is("MAIL")) return fault_stage::mail;
  if (is("RCPT")) return fault_stage::rcpt;
  if (is("QUIT")) return fault_stage::quit;
  return fault_stage::none;  // DATA is decided once the 354 is due (serve())
}

// The name an EHLO or HELO line gives, as the protocol keeps it: lower case, no trailing dot.
std::string helo_name(std::string_view line) {
  auto space = line.find(' ');
  std::string name(space == std::string_view::npos ? std::string_view{} : line.substr(space + 1));
  while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.erase(0, 1);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.pop_back();
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  return name;
}

// "AUTH PLAIN <base64>" as "AUTH PLAIN <redacted>": an initial response
// carries the password. Other lines unchanged.
std::string without_credentials(std::string_view line) {
  if (line.size() < 5) return std::string(line);
  std::string verb(line.substr(0, 5));
  for (auto& c : verb) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (verb != "AUTH ") return std::string(line);
  const auto space = line.find(' ', 5);
  if (space == std::string_view::npos) return std::string(line);
  return std::string(line.substr(0, space)) + " <redacted>";
}

class session {
 public:
  session(node_context& ctx, tcp::socket socket, bool submission)
      : ctx_(ctx), channel_(std::move(socket)), id_(ctx.new_id()), ip_(client_ip()), protocol_(ctx.config, ip_),
        submission_(submission) {
    // The submission listener offers STARTTLS whatever policy.tls says: AUTH needs it.
    // Offered whenever the network has TLS: the certificate is loaded at the
    // first STARTTLS, which answers 454 when it cannot be (node_service.cpp).
    protocol_.offer_tls((submission || ctx.config.policy.tls != tls_policy::off) && ctx.tls);
    if (submission) protocol_.serve_submission(&ctx.passwords);
  }

  asio::awaitable<void> run();

 private:
  asio::awaitable<void> serve();
  asio::awaitable<bool> greet();
  asio::awaitable<void> check_reverse_dns();

  // While the session lives, a graceful stop can wake it when it waits for a
  // command; leave() is called on every way out of run() (not a destructor:
  // a frame destroyed after the node is gone must not touch ctx).
  void join_stop_hooks() {
    hook_ = ctx_.stop_hooks.insert(ctx_.stop_hooks.end(), [this] {
      if (waiting_for_command_) channel_.interrupt();
    });
  }
  void leave() { ctx_.stop_hooks.erase(hook_); }

  std::string shutdown_reply() const {
    return "421 4.3.2 " + ctx_.config.name + " Service shutting down, try again later\r\n";
  }

  std::string client_ip() {
    boost::system::error_code ec;
    auto ep = channel_.socket().remote_endpoint(ec);
    return ec ? std::string("unknown") : ep.address().to_string();
  }

  // Transcript lines wait in log_pending_ (each with its own timestamp) and
  // are written together just before the next reply goes out, so the log
  // still leads the wire but a command and its reply cost one write, not two
  // (bench/README.md, "profile": 26 write(2)s per message before).
  void log_line(std::string_view text) {
    log_pending_ += utc_timestamp();
    log_pending_ += ' ';
    log_pending_ += id_;
    log_pending_ += text;
    log_pending_ += '\n';
  }
  void flush_log() {
    ctx_.transcript.write_stamped_lines(log_pending_);
    log_pending_.clear();
  }
  void log_client(std::string_view line) { log_line(" C: " + printable(line)); }
  void log_server(std::string_view reply) {
    std::size_t pos = 0;
    while (pos < reply.size()) {
      auto eol = reply.find("\r\n", pos);
      log_line(" S: " + printable(reply.substr(pos, eol - pos)));
      if (eol == std::string_view::npos) break;
      pos = eol + 2;
    }
  }

  // Replies wait in pending_ while the client has pipelined more commands
  // (RFC 2920), and go out together when the input runs dry.
  // last: the reply before the session closes. With few sessions open (no
  // load), the node's events that wait for their 20 ms batch
  // (node_service.cpp) are written before it goes out: a client that has
  // its last reply finds its mail's events in node.log, as it finds its
  // transcript in smtp.log. Under load they keep waiting for the batch.
  static constexpr std::size_t few_sessions = 4;
  asio::awaitable<bool> send(std::string_view reply, bool flush_now, bool last = false) {
    log_server(reply);
    pending_ += reply;
    if (!flush_now && channel_.has_buffered_line()) co_return true;
    flush_log();
    if (last && ctx_.active_sessions <= few_sessions) ctx_.events.flush();
    auto st = co_await channel_.write(pending_, ctx_.config.timeouts.command);
    pending_.clear();
    co_return st == io_status::ok;
  }

  asio::awaitable<step> read_data();
  enum class auth_action { deliver, quarantine, reject };
  auth_action log_auth(const std::string& qid, const auth_results& r);
  asio::awaitable<bool> start_tls(const step& s);
  asio::awaitable<bool> after_auth(const step& s);

  // Faults (fault_plan.hpp). fault_at decides, and logs the fault it
  // injects in node.log and the transcript; the rest carry one out.
  std::optional<fault_hit> fault_at(fault_stage stage, std::string_view sender, std::string_view command = {});
  asio::awaitable<bool> flush_pending();
  asio::awaitable<void> pause_for(std::chrono::milliseconds d);
  asio::awaitable<void> hang();

  node_context& ctx_;
  smtp_channel channel_;
  std::string id_;
  std::string ip_;  // asked once: getpeername() per log line showed in strace
  smtp_protocol protocol_;
  std::string pending_;
  std::string log_pending_;
  bool waiting_for_command_ = false;
  bool submission_ = false;
  std::list<std::function<void()>>::iterator hook_;
};

// What an "alter" fault appends to a body: a footer, as a mailing list adds
// one, naming the rule and the node, so a reader of the message sees why its
// DKIM signature no longer verifies. The stored body ends in CRLF, so the
// footer starts a line of its own.
std::string altered_footer(std::string_view rule, std::string_view node) {
  return "-- \r\nThis line was added in transit by " + std::string(node) + " (fault rule " + std::string(rule) +
         ").\r\n";
}

std::optional<fault_hit> session::fault_at(fault_stage stage, std::string_view sender, std::string_view command) {
  auto hit = ctx_.faults.decide(stage, sender);
  if (!hit) return hit;
  const auto& rule = *hit->rule;
  const std::string delay = std::to_string(hit->delay.count()) + "ms";
  const std::string& mail_from = protocol_.transaction().mail_from;
  std::string fields;
  append_log_fields(fields, {{"rule", rule.name}, {"stage", to_string(hit->stage)}, {"action", to_string(rule.action)}});
  const bool replies = rule.action == fault_action::reply || rule.action == fault_action::rate_limit;
  if (replies) append_log_fields(fields, {{"reply", rule.reply}});
  if (rule.action == fault_action::delay) append_log_fields(fields, {{"delay", delay}});
  // The transcript marks what the fault does; a reply it produced is the S: line that follows.
  log_line(" fault" + fields);
  const std::string from(sender.empty() ? std::string_view(ip_) : sender);
  const std::string shown = printable(command, 200);
  if (replies)
    ctx_.events.write({{"id", id_}, {"event", "fault"}, {"rule", rule.name}, {"stage", to_string(hit->stage)},
                       {"action", to_string(rule.action)}, {"reply", rule.reply}, {"from", from}, {"mail_from", mail_from},
                       {"command", shown}});
  else if (rule.action == fault_action::delay)
    ctx_.events.write({{"id", id_}, {"event", "fault"}, {"rule", rule.name}, {"stage", to_string(hit->stage)},
                       {"action", "delay"}, {"delay", delay}, {"from", from}, {"mail_from", mail_from},
                       {"command", shown}});
  else
    ctx_.events.write({{"id", id_}, {"event", "fault"}, {"rule", rule.name}, {"stage", to_string(hit->stage)},
                       {"action", to_string(rule.action)}, {"from", from}, {"mail_from", mail_from},
                       {"command", shown}});
  return hit;
}

// Replies that wait for a pipelined group to end go out before a fault
// acts: the client had them coming.
asio::awaitable<bool> session::flush_pending() {
  flush_log();
  if (pending_.empty()) co_return true;
  auto st = co_await channel_.write(pending_, ctx_.config.timeouts.command);
  pending_.clear();
  co_return st == io_status::ok;
}

asio::awaitable<void> session::pause_for(std::chrono::milliseconds d) {
  asio::steady_timer pause(channel_.socket().get_executor());
  pause.expires_after(d);
  co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
}

// Never answers: reads and drops what the client sends until it gives up,
// the node's idle timeout passes (the session still ends by the node's own
// timeouts) or a graceful stop wakes it.
asio::awaitable<void> session::hang() {
  flush_log();
  const auto deadline = std::chrono::steady_clock::now() + ctx_.config.timeouts.idle;
  waiting_for_command_ = true;
  for (int reads = 0; reads < 10000000 && !ctx_.stopping; ++reads) {
    auto [st, bytes] = co_await channel_.read_some(ctx_.config.timeouts.idle, deadline);
    if (st != io_status::ok) break;
    channel_.consume(bytes.size());
  }
  waiting_for_command_ = false;
  log_line(" hang ended");
}

// The verdicts in node.log (event=spf, dkim, dmarc, with the queue id, so a
// message's trace shows them) and the transcript, and what policy.dmarc makes
// of them: under "enforce", a DMARC fail whose policy is reject is refused,
// quarantine goes to .Junk; a temperror is never acted on.
session::auth_action session::log_auth(const std::string& qid, const auth_results& r) {
  auth_action action = auth_action::deliver;
  if (ctx_.config.policy.dmarc == dmarc_policy::enforce && r.dmarc.result == "fail") {
    if (r.dmarc.policy == "reject") action = auth_action::reject;
    else if (r.dmarc.policy == "quarantine") action = auth_action::quarantine;
  }
  ctx_.events.write({{"id", qid}, {"event", "spf"}, {"result", r.spf.result}, {"identity", r.spf.identity},
                     {"domain", r.spf.domain}, {"helo_result", r.spf.helo_result}, {"client", ip_},
                     {"detail", r.spf.detail}},
                    event_log::pace::batched);
  if (r.dkim.empty())
    ctx_.events.write({{"id", qid}, {"event", "dkim"}, {"result", "none"}, {"detail", "no signature"}},
                      event_log::pace::batched);
  for (const auto& d : r.dkim)
    ctx_.events.write({{"id", qid}, {"event", "dkim"}, {"result", d.result}, {"domain", d.domain},
                       {"selector", d.selector}, {"detail", d.detail}},
                      event_log::pace::batched);
  const char* taken = action == auth_action::reject ? "rejected" : action == auth_action::quarantine ? "quarantined" : "none";
  ctx_.events.write({{"id", qid}, {"event", "dmarc"}, {"result", r.dmarc.result}, {"from_domain", r.dmarc.from_domain},
                     {"policy", r.dmarc.policy}, {"spf_aligned", r.dmarc.spf_aligned ? "yes" : "no"},
                     {"dkim_aligned", r.dmarc.dkim_aligned ? "yes" : "no"}, {"action", taken},
                     {"detail", r.dmarc.detail}},
                    event_log::pace::batched);
  log_line(" auth spf=" + r.spf.result + " dkim=" + r.dkim_summary() + " dmarc=" + r.dmarc.result +
           (action == auth_action::deliver ? std::string() : std::string(" (") + taken + ")"));
  return action;
}

asio::awaitable<step> session::read_data() {
  const auto& limits = ctx_.config.limits;
  // Read past the limit by what trace lines can take: the limit is checked on counted_size() below.
  data_reader reader(limits.message_size + trace_allowance(limits), limits.text_line);
  const auto deadline = std::chrono::steady_clock::now() + ctx_.config.timeouts.data;
  while (!reader.done()) {
    auto [st, bytes] = co_await channel_.read_some(ctx_.config.timeouts.data_block, deadline);
    if (st == io_status::timeout) co_return step{protocol_.timeout_reply(), next_step::close};
    if (st != io_status::ok) co_return step{"", next_step::close};
    channel_.consume(reader.feed(bytes));
  }
  auto facts = scan_headers(reader.message());
  log_line(" C: <message: " + std::to_string(reader.size()) + " bytes>");
  const envelope& env = protocol_.transaction();
  std::string qid = ctx_.new_id();
  trace_info trace{env.helo, env.client_ip, ctx_.config.name, env.esmtp, qid,
                   env.rcpts.size() == 1 ? env.rcpts.front().address : std::string{},
                   std::chrono::system_clock::now(), env.tls, !env.auth_user.empty()};
  std::string message = make_trace_headers(trace, facts);
  const std::size_t trace_size = message.size();  // the message as it came starts here
  std::size_t trace_end = trace_size;  // and where the node's own trace lines end (a signature goes there)
  message += reader.message();
  // Counted as stored, as the next node of the network will count it.
  const bool too_big = reader.too_big() || counted_size(message) > limits.message_size;
  step s = protocol_.on_data_end({too_big, reader.line_too_long(), facts.received});
  if (s.next != next_step::commit) co_return s;
  if (ctx_.faults.watches(fault_stage::end_of_data)) {
    // Nothing is stored unless the fault is a delay or an alter: the client never gets a 250 for it.
    if (auto hit = fault_at(fault_stage::end_of_data, env.helo)) {
      switch (hit->rule->action) {
        case fault_action::delay: co_await pause_for(hit->delay); break;
        case fault_action::alter: message += altered_footer(hit->rule->name, ctx_.config.name); break;
        case fault_action::reply: protocol_.abort_transaction(); co_return step{hit->rule->reply + "\r\n"};
        case fault_action::hang: protocol_.abort_transaction(); co_await hang(); co_return step{"", next_step::close};
        default: protocol_.abort_transaction(); co_return step{"", next_step::close};
      }
    }
  }
  // SPF, DKIM and DMARC (auth_service.hpp) on mail from other hosts; not on
  // the submission listener, whose users have authenticated themselves (and
  // whose mail this node would itself vouch for).
  bool junk = false;
  if (ctx_.auth && !submission_) {
    // Named, not temporaries inside the co_await (GCC 12, see greet()).
    // The message as it will be stored (an "alter" fault's footer included:
    // the verdicts are about what the user gets), without our trace lines.
    auth_request request{env.client_ip, env.helo, env.mail_from, std::string_view(message).substr(trace_size)};
    const auth_results r = co_await ctx_.authenticate(std::move(request));
    const auto verdict = log_auth(qid, r);
    // Fields in our name that came with the message are not ours (RFC 8601 §5): gone, after DKIM saw them.
    if (const std::size_t forged = remove_auth_results_of(message, trace_size, ctx_.config.name))
      log_line(" removed " + std::to_string(forged) + " Authentication-Results: field(s) in this node's name");
    const std::string results = authentication_results_field(ctx_.config.name, r);
    message.insert(first_field_size(message), results);
    trace_end += results.size();
    if (verdict == auth_action::reject) {
      protocol_.abort_transaction();
      std::string reply = "550 5.7.1 Rejected by the DMARC policy of " + r.dmarc.from_domain + ": spf=" +
                          r.spf.result + (r.dmarc.spf_aligned ? "" : " (not aligned)") + ", dkim=" +
                          r.dkim_summary() + (r.dmarc.dkim_aligned ? "" : " (not aligned)") + "\r\n";
      co_return step{std::move(reply)};
    }
    junk = verdict == auth_action::quarantine;
  }
  // Signed after the checks, which are about the signatures the message came with.
  const std::string dkim = co_await sign_if_ours(ctx_, env, message, trace_end, qid);
  // accepted goes before the delivered events of the same message: commit() calls this first.
  // The Message-ID the stored message carries (make_trace_headers adds one
  // when the sender did not): what `mailnet trace` follows from node to node.
  const std::string message_id = facts.has_message_id ? facts.message_id : "<" + qid + "@" + ctx_.config.name + ">";
  auto announce = [this, &env, &qid, &message_id, &dkim, size = reader.size()](bool ok) {
    ctx_.events.write({{"id", qid}, {"event", ok ? "accepted" : "commit_failed"}, {"session", id_},
                       {"from", env.mail_from}, {"rcpts", std::to_string(env.rcpts.size())},
                       {"size", std::to_string(size)}, {"message_id", message_id},
                       {"auth", env.auth_user.empty() ? "no" : env.auth_user}, {"dkim", dkim},
                       {"tls", env.tls.empty() ? "no" : env.tls}},  // last: the launcher counts on it
                      ok ? event_log::pace::batched : event_log::pace::prompt);
  };
  bool ok = co_await ctx_.commit(env, std::move(message), qid, announce, junk);
  co_return protocol_.on_commit(ok, qid);
}

// After the 220 to STARTTLS: bytes that came with or after the command are
// dropped unread (CVE-2011-0411: they would otherwise run as if sent inside
// TLS), then the handshake; the session starts over (RFC 3207 §4.2).
// False when the session ends (the handshake failed).
asio::awaitable<bool> session::start_tls(const step& s) {
  if (!can_serve_tls(ctx_.tls.get())) {
    // The certificate could not be loaded (told once as event=tls_unavailable):
    // the client may go on without TLS (RFC 3207 §4).
    co_return co_await send("454 4.7.0 TLS not available\r\n", true);
  }
  if (!co_await send(s.reply, true)) co_return false;
  if (const std::size_t dropped = channel_.discard_buffered()) {
    log_line(" discarded " + std::to_string(dropped) + " bytes sent after STARTTLS before the TLS handshake");
    ctx_.events.write({{"id", id_}, {"event", "tls_pipelining_discarded"}, {"bytes", std::to_string(dropped)},
                       {"client", ip_}});
  }
  auto outcome = co_await channel_.start_tls_server(*ctx_.tls, ctx_.config.timeouts.command);
  if (!outcome.ok) {
    log_line(" TLS handshake failed: " + printable(outcome.error));
    ctx_.events.write({{"id", id_}, {"event", "tls_failed"}, {"client", ip_}, {"error", outcome.error}});
    co_return false;
  }
  log_line(" TLS started: " + outcome.description + "; the session starts over");
  ctx_.events.write({{"id", id_}, {"event", "tls"}, {"client", ip_}, {"tls", outcome.description},
                     {"resumed", outcome.resumed ? "yes" : "no"}},
                    event_log::pace::batched);
  protocol_.on_tls_started(outcome.description);
  co_return true;
}

// After an AUTH: a success is logged and forgets the address's failures; a
// failure is logged, counted for the connection and the client's address,
// and its 535 waits 250 ms × 2^(n-1) (n: the larger count), at most 5 s.
// False when the session ends meanwhile.
asio::awaitable<bool> session::after_auth(const step& s) {
  using namespace std::chrono;
  const auto now = steady_clock::now();
  if (s.auth == step::auth_result::succeeded) {
    ctx_.auth_failures.erase(ip_);
    ctx_.events.write({{"id", id_}, {"event", "auth"}, {"client", ip_}, {"user", s.login}}, event_log::pace::batched);
    co_return true;
  }
  auto& record = ctx_.auth_failures[ip_];
  if (now - record.last > minutes(5)) record.count = 0;
  ++record.count;
  record.last = now;
  if (ctx_.auth_failures.size() > 10000) {  // bounded: the stale ones go, then all but this one if need be
    std::erase_if(ctx_.auth_failures, [&](const auto& e) { return now - e.second.last > minutes(5); });
    if (ctx_.auth_failures.size() > 10000) {
      const auto kept = record;
      ctx_.auth_failures.clear();
      ctx_.auth_failures[ip_] = kept;
    }
  }
  const std::size_t n = std::max(protocol_.auth_failures(), ctx_.auth_failures[ip_].count);
  const milliseconds delay = std::min<milliseconds>(milliseconds(250L << std::min<std::size_t>(n - 1, 8)), seconds(5));
  ctx_.events.write({{"id", id_}, {"event", "auth_failed"}, {"client", ip_}, {"user", s.login},
                     {"failures", std::to_string(n)}, {"delay_ms", std::to_string(delay.count())}});
  log_line(" AUTH failed (" + std::to_string(n) + " from " + ip_ + "): the reply waits " +
           std::to_string(delay.count()) + " ms");
  if (!co_await flush_pending()) co_return false;
  co_await pause_for(delay);
  co_return true;
}

asio::awaitable<void> session::run() {
  join_stop_hooks();
  try {
    co_await serve();
  } catch (...) {
    leave();
    throw;
  }
  leave();
}

// The connection's first reply: the 220, or a 421 or 554 that ends it.
// True when the session goes on.
asio::awaitable<bool> session::greet() {
  if (ctx_.active_sessions > ctx_.config.limits.connections) {
    co_await send("421 4.7.0 " + ctx_.config.name + " Too many connections, try again later\r\n", true, true);
    co_return false;
  }
  if (ctx_.faults.watches_bandwidth()) {
    if (auto hit = ctx_.faults.decide_bandwidth()) {
      const auto& rule = *hit->rule;
      const std::string rate = std::to_string(rule.bytes_per_second);
      std::string fields;
      append_log_fields(fields, {{"rule", rule.name}, {"stage", "connect"}, {"action", "bandwidth"},
                                 {"bytes_per_second", rate}});
      log_line(" fault" + fields);
      ctx_.events.write({{"id", id_}, {"event", "fault"}, {"rule", rule.name}, {"stage", "connect"},
                         {"action", "bandwidth"}, {"bytes_per_second", rate}, {"from", ip_}});
      channel_.limit_rate(rule.bytes_per_second);
    }
  }
  for (auto stage : {fault_stage::connect, fault_stage::greeting}) {
    if (!ctx_.faults.watches(stage)) continue;
    auto hit = fault_at(stage, {});
    if (!hit) continue;
    if (hit->rule->action == fault_action::delay) {
      co_await pause_for(hit->delay);
      continue;
    }
    // A reply instead of the 220 ends the session, as a 421 or 554 greeting does.
    if (hit->rule->action == fault_action::reply) co_await send(hit->rule->reply + "\r\n", true, true);
    if (hit->rule->action == fault_action::hang) co_await hang();
    flush_log();
    co_return false;
  }
  if (ctx_.config.timeouts.greeting_pause.count() > 0) {
    asio::steady_timer pause(channel_.socket().get_executor());
    pause.expires_after(ctx_.config.timeouts.greeting_pause);
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  // A client that talks before the greeting is not speaking SMTP (or is a
  // spam engine racing ahead): refuse rather than guess what it meant.
  if (channel_.input_pending()) {
    co_await send(protocol_.pregreet_reply(), true, true);
    co_return false;
  }
  // Named first: GCC 12 destroyed a ?: temporary twice inside a co_await.
  const bool stopping = ctx_.stopping;
  const std::string first_reply = stopping ? shutdown_reply() : protocol_.greeting();
  const bool sent = co_await send(first_reply, true, stopping);
  co_return sent && !stopping;
}

// policy.require_fcrdns: the client's address must have a PTR name whose
// address records lead back to it. Checked once at connect; a failure
// answers every MAIL (RFC 7372: 5.7.25), so the client still sees why.
asio::awaitable<void> session::check_reverse_dns() {
  const reverse_result r = co_await ctx_.resolver->confirm_reverse(ip_);
  const char* verdict = r.outcome == reverse_result::verdict::pass   ? "pass"
                        : r.outcome == reverse_result::verdict::fail ? "fail"
                                                                     : "temperror";
  ctx_.events.write({{"id", id_}, {"event", "fcrdns"}, {"client", ip_}, {"result", verdict},
                     {"name", r.name}, {"detail", r.detail}},
                    event_log::pace::batched);
  log_line(" fcrdns " + std::string(verdict) + " " + printable(r.outcome == reverse_result::verdict::pass ? r.name : r.detail));
  if (r.outcome == reverse_result::verdict::fail)
    protocol_.refuse_mail(550, "5.7.25 Reverse DNS validation failed: " + printable(r.detail, 200));
  else if (r.outcome == reverse_result::verdict::temporary)
    protocol_.refuse_mail(451, "4.7.25 Reverse DNS validation could not be completed now: " + printable(r.detail, 200));
}

asio::awaitable<void> session::serve() {
  if (submission_) {
    ctx_.events.write({{"id", id_}, {"event", "connect"}, {"client", ip_}, {"listener", "submission"}},
                      event_log::pace::batched);
    log_line(" connect from " + ip_ + " to the submission listener");
  } else {
    ctx_.events.write({{"id", id_}, {"event", "connect"}, {"client", ip_}}, event_log::pace::batched);
    log_line(" connect from " + ip_);
  }
  if (ctx_.config.policy.require_fcrdns && ctx_.resolver) co_await check_reverse_dns();
  if (!co_await greet()) co_return;

  for (;;) {
    // A graceful stop: a session between transactions (or one whose DATA has
    // just got its 250) is told at once; RFC 5321 §3.8 lets a server close
    // with 421 at any time.
    if (ctx_.stopping) {
      co_await send(shutdown_reply(), true, true);
      break;
    }
    waiting_for_command_ = true;
    auto [st, line] = co_await channel_.read_line(ctx_.config.limits.command_line, ctx_.config.timeouts.idle,
                                                       ctx_.config.timeouts.command);
    waiting_for_command_ = false;
    step s;
    if (ctx_.stopping && st != io_status::eof && st != io_status::error) {
      if (st == io_status::ok) log_client(line);
      co_await send(shutdown_reply(), true, true);
      break;
    }
    if (st == io_status::timeout) {
      co_await send(protocol_.timeout_reply(), true, true);
      break;
    }
    if (st == io_status::eof || st == io_status::error) break;
    if (st == io_status::too_long) {
      log_line(" C: <line over " + std::to_string(ctx_.config.limits.command_line) + " bytes>");
      s = protocol_.on_line_too_long();
    } else {
      // Credentials stay out of smtp.log: a SASL response, and what follows
      // the mechanism in AUTH, are shown as <redacted>.
      if (protocol_.awaiting_auth_response()) log_line(" C: <AUTH response redacted>");
      else log_client(without_credentials(line));
      // A fault acts before the command is carried out: a reply or a
      // disconnect leaves the session as if the command never came.
      std::optional<fault_hit> hit;
      if (!ctx_.faults.empty()) {
        const auto stage = stage_of(line);
        if (ctx_.faults.watches(stage))
          hit = fault_at(stage, stage == fault_stage::ehlo ? helo_name(line) : protocol_.transaction().helo, line);
      }
      if (hit && hit->rule->action == fault_action::delay) {
        if (!co_await flush_pending()) break;
        co_await pause_for(hit->delay);
        hit.reset();
      }
      if (hit && (hit->rule->action == fault_action::reply || hit->rule->action == fault_action::rate_limit)) {
        const bool closing = stage_of(line) == fault_stage::quit;
        if (!co_await send(hit->rule->reply + "\r\n", closing, closing) || closing) break;
        continue;
      }
      if (hit) {  // disconnect or hang: no reply
        if (co_await flush_pending() && hit->rule->action == fault_action::hang) co_await hang();
        break;
      }
      s = protocol_.on_line(line);
      if (s.auth != step::auth_result::none && !co_await after_auth(s)) break;
    }
    if (s.next == next_step::read_data && channel_.input_pending()) {
      // RFC 2920 §3.1: DATA ends a pipelined group; the client must wait for 354.
      s = protocol_.early_data();
    }
    if (s.next == next_step::read_data && ctx_.faults.watches(fault_stage::data)) {
      // The data stage: a reply or a delay instead of or before the 354; a
      // disconnect once the body has begun to arrive; a hang that reads the
      // body and never answers.
      if (auto hit = fault_at(fault_stage::data, protocol_.transaction().helo, line)) {
        const auto action = hit->rule->action;
        if (action == fault_action::delay) {
          if (!co_await flush_pending()) break;
          co_await pause_for(hit->delay);
        } else if (action == fault_action::reply) {
          protocol_.abort_transaction();
          if (!co_await send(hit->rule->reply + "\r\n", false)) break;
          continue;
        } else {
          protocol_.abort_transaction();
          if (!co_await send(s.reply, true)) break;
          if (action == fault_action::hang) {
            co_await hang();
          } else {
            auto [st_body, bytes] = co_await channel_.read_some(ctx_.config.timeouts.data_block);
            log_line(" cut after " + std::to_string(st_body == io_status::ok ? bytes.size() : 0) + " bytes of the message");
          }
          break;
        }
      }
    }
    if (s.next == next_step::read_data) {
      if (!co_await send(s.reply, true)) break;
      s = co_await read_data();
    }
    if (s.next == next_step::start_tls) {
      if (!co_await start_tls(s)) break;
      continue;
    }
    const bool closing = s.next == next_step::close;
    if (!s.reply.empty() && !co_await send(s.reply, closing, closing)) break;
    if (s.next == next_step::close) break;
  }
  // A TLS session ends with close_notify, so that the client can tell the end from a cut.
  if (!protocol_.transaction().tls.empty()) co_await channel_.shutdown_tls(std::chrono::seconds(2));
  ctx_.events.write({{"id", id_}, {"event", "disconnect"}}, event_log::pace::batched);
  log_line(" disconnect");
  flush_log();
}

}  // namespace

asio::awaitable<void> run_smtp_session(node_context& ctx, tcp::socket socket, bool submission) {
  // No RAII guard for the count: a frame destroyed at shutdown must not touch
  // ctx, which may be gone by then.
  ++ctx.active_sessions;
  try {
    session s(ctx, std::move(socket), submission);
    co_await s.run();
  } catch (...) {
    --ctx.active_sessions;
    throw;
  }
  --ctx.active_sessions;
}

}  // namespace mailnet::node
