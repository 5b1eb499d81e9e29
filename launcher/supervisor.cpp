#include "launcher/supervisor.hpp"
#include "launcher/bind_rights.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/v2/process.hpp>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <iostream>
#include <list>
#include <nlohmann/json.hpp>
#include <ctime>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>

#include "common/faults_json.hpp"
#include "common/fd_limit.hpp"
#include "common/full_teardown.hpp"
#include "common/mail/durable_file.hpp"
#include "common/terminal_text.hpp"
#include "common/private_files.hpp"
#include "common/topology.hpp"
#include "launcher/child_spawn.hpp"
#include "launcher/control_socket.hpp"
#include "launcher/imap_config.hpp"
#include "launcher/line_printer.hpp"
#include "launcher/run_folder.hpp"
#include "launcher/web/trace.hpp"
#include "launcher/web/web_server.hpp"
#include "launcher/web_send.hpp"

namespace mailnet::launcher {

namespace asio = boost::asio;
namespace bp = boost::process::v2;
using json = nlohmann::json;
using clock = std::chrono::steady_clock;

namespace {

// A node's graceful stop lets sessions in DATA finish for up to 5 s; the
// SIGKILL after SIGTERM waits longer, so it only ends a node that hangs.
constexpr auto graceful_stop_wait = std::chrono::seconds(8);

// Bring-up spawns the nodes from this many threads, a batch of children per
// job. Each spawn blocks its thread only until the child's exec, so a few
// threads keep the cores busy while the event loop reads the children
// already started; more would only add threads the launcher keeps for good.
constexpr unsigned spawn_threads = 4;
constexpr std::size_t spawn_batch = 32;

// The event of a child's log line. The first " event=" is the line's own:
// only the timestamp and an id of ours come before it, so text quoted in
// later fields cannot fake one.
std::string_view event_of(std::string_view line) {
  auto pos = line.find(" event=");
  if (pos == std::string_view::npos) return {};
  auto value = line.substr(pos + 7);
  return value.substr(0, value.find(' '));
}

// The CPU time of the launcher, all its threads, user and system.
std::chrono::microseconds own_cpu_time() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Completion handler for the launcher's own coroutines: a failure is a bug,
// and it is said, not swallowed.
void report_failure(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::cerr << "mailnet: internal error: " << ex.what() << "\n";
  }
}

// What a child is doing. "killed", "stopped" and "crashed" are all down;
// they differ in who asked.
enum class child_state { starting, ready, stopping, killing, stopped, killed, crashed, failed };

const char* to_string(child_state s) {
  switch (s) {
    case child_state::starting: return "starting";
    case child_state::ready: return "ready";
    case child_state::stopping: return "stopping";
    case child_state::killing: return "killing";
    case child_state::stopped: return "stopped";
    case child_state::killed: return "killed";
    case child_state::crashed: return "crashed";
    case child_state::failed: return "failed";
  }
  return "?";
}

bool is_down(child_state s) {
  return s == child_state::stopped || s == child_state::killed || s == child_state::crashed ||
         s == child_state::failed;
}

// One run of a child process. Coroutines hold it by shared_ptr, so a respawn
// never pulls a pipe out from under a pending read.
struct instance {
  std::unique_ptr<bp::process> proc;
  std::unique_ptr<asio::readable_pipe> out, err;
  int pid = 0;
  bool ever_ready = false;
  clock::time_point ready_at{};
};

// A signal to a run of a child; none before its pid is known (kill(0, ...)
// would signal the launcher's own process group).
void signal_child(const instance& inst, int sig) {
  if (inst.pid > 0) ::kill(inst.pid, sig);
}

struct counters {
  std::size_t received = 0, delivered = 0, relayed = 0, bounced = 0;
  // The resolver's: queries answered by (type, rcode), and queries dropped.
  std::map<std::pair<std::string, std::string>, std::size_t> queries;
  std::size_t dropped = 0;
  std::size_t received_tls = 0;  // of received: the ones that came over TLS
  std::size_t auth_failed = 0;   // AUTH failures on the submission listener
  // SPF, DKIM and DMARC verdicts from the node's event=spf/dkim/dmarc lines
  // (node/auth_service.hpp), by result; and the DMARC actions under
  // policy.dmarc "enforce".
  std::map<std::string, std::size_t> spf, dkim, dmarc;
  std::size_t dmarc_rejected = 0, dmarc_quarantined = 0;
};

struct child {
  std::string name;  // "resolver", "imap" or the domain
  std::string listen;
  std::string exe_name;
  std::vector<std::string> args;
  bool restart_on_failure = false;
  // "imap": mailnet-imap and Dovecot's processes, one process group (the
  // child's own, see child_spawn.hpp), all killed by a SIGKILL.
  bool kill_group = false;
  bool holds_mail() const { return name != "resolver" && !kill_group; }
  std::shared_ptr<instance> current;
  child_state state = child_state::stopped;
  std::string exit_text;   // "exit 1", "signal 9"
  std::string last_error;  // the last line on stderr
  clock::time_point started_at{};
  clock::time_point port_wait_until{};  // set when a starting node waits for its port
  int restarts = 0;       // shown by status
  int backoff_step = 0;   // the next restart waits 0.5 s × 2^backoff_step
  std::string colour;  // ANSI prefix colour, empty when plain
  const domain_config* domain = nullptr;  // a node's entry in the topology; null for the others
  // The last count of its queue and the queue folder's mtime then (supervisor::queued).
  bool queue_known = false;
  std::int64_t queue_mtime_ns = 0;
  std::size_t queue_count = 0;
  counters count;
  // Run-time faults: the generation of the last faults.json written for this
  // node, the last one it said it loaded (event=fault_rules), and the faults
  // it injected since `up` (event=fault).
  std::uint64_t fault_generation_written = 0, fault_generation_seen = 0;
  // The last faults.json it refused (event=fault_rules_error) and its words.
  std::uint64_t fault_generation_refused = 0;
  std::string fault_refusal;
  std::size_t faults = 0;
  child_state announced = child_state::stopped;  // the last state published on the event stream
};

class supervisor {
 public:
  // console: where the person who typed `up` sees progress and a failed
  // start's reason (stderr, or the terminal a detached launcher came from).
  supervisor(asio::io_context& io, topology net, run_folder folder, bool colour, int console)
      : io_(io), net_(std::move(net)), folder_(std::move(folder)), changed_(io), signals_(io, SIGINT, SIGTERM),
        control_(io), colour_(colour), console_(console) {
    changed_.expires_at(clock::time_point::max());
  }

  // Starts everything; returns false (and has stopped what it started) on failure.
  // on_ready is taken by value: a coroutine must not keep references to its
  // caller's temporaries (ASan caught that one).
  asio::awaitable<bool> bring_up(std::chrono::milliseconds ready_timeout, std::function<void(bool)> on_ready);
  void release_console() { console_ = -1; }  // the caller is about to close it
  void flush_output() { out_.flush(); }

 private:
  void notify() {
    announce_states();
    changed_.cancel();
  }
  void announce_states();  // each child's new state, as an event of the web's event stream
  // Every change of a child's state goes through here: announce_states then
  // looks only at the children that changed, not at all of them on every
  // event (at 1,000 nodes, each one's exit walked the whole list three times).
  void set_state(child& c, child_state s) {
    if (c.state == s) return;
    c.state = s;
    if (c.announced != s) unannounced_.push_back(&c);
  }
  std::vector<child*> unannounced_;

  // Waits until pred() holds or the deadline passes; every child event wakes it.
  // changed_ never expires and is only ever cancelled (by notify), so several
  // waiters can share it; each has its own deadline timer. (Re-arming the one
  // shared timer per wait made concurrent waiters cancel each other in a spin.)
  template <typename Pred>
  asio::awaitable<bool> wait_until(Pred pred, clock::time_point deadline) {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer limit(io_);
    limit.expires_at(deadline);
    while (!pred()) {
      if (clock::now() >= deadline) co_return false;
      co_await (changed_.async_wait(asio::as_tuple(asio::use_awaitable)) ||
                limit.async_wait(asio::as_tuple(asio::use_awaitable)));
    }
    co_return true;
  }

  // wait_until for a start: a starting node that said its port is held by
  // a closing connection (event=port_busy) may take until its own deadline.
  template <typename Pred>
  asio::awaitable<bool> wait_for_start(Pred pred, clock::time_point deadline) {
    for (;;) {
      if (co_await wait_until(pred, deadline)) co_return true;
      auto later = deadline;
      for (const auto& c : children_)
        if (c.state == child_state::starting) later = std::max(later, c.port_wait_until);
      if (later <= clock::now()) co_return false;
      deadline = later;
    }
  }

  child* find(const std::string& name) {
    for (auto& c : children_)
      if (c.name == name) return &c;
    return nullptr;
  }

  void spawn(child& c);  // on the event loop's thread (the main thread: see child_spawn.hpp)
  std::shared_ptr<instance> begin_spawn(child& c);
  void spawn_in_pool(const std::vector<child*>& batch);
  void adopt(child& c, const std::shared_ptr<instance>& inst, const std::string& exe, spawned_child started,
             const std::string& error);
  void fail_start(child& c, const std::string& why);
  asio::awaitable<void> pump(child& c, std::shared_ptr<instance> inst, asio::readable_pipe& pipe, bool is_stderr);
  asio::awaitable<void> watch(child& c, std::shared_ptr<instance> inst);
  asio::awaitable<void> restart_later(child& c, std::shared_ptr<instance> dead);
  asio::awaitable<std::string> start_child(child& c, std::chrono::milliseconds timeout);
  asio::awaitable<void> stop_child(child& c, bool kill);
  asio::awaitable<void> stop_all();
  asio::awaitable<void> stop_together(const std::function<bool(const child&)>& which);
  std::vector<std::string> flush_others(const std::string& except);  // the nodes told
  void tell_console(const std::string& text, bool log_it = true);
  void write_network_json();
  bool hold_network_json_ = false;  // during bring-up and stop_all
  void print_line(const child& c, const std::string& line);
  void append_line(const child& c, std::string_view line, std::string& out) const;
  void take_line(child& c, const std::shared_ptr<instance>& inst, std::string_view line, bool is_stderr);
  void count_event(child& c, std::string_view event, std::string_view line);

  // Faults while the network runs (mailnet fault list, add, clear).
  json fault_list() const;
  // The change itself (not coroutines: GCC 12 miscompiles braced json in
  // them); nodes: the nodes whose faults.json changes.
  json fault_add(const json& request, std::set<std::string>& nodes);
  json fault_clear(const std::string& name, std::set<std::string>& nodes);
  json faults_file(const std::string& node, std::uint64_t generation) const;
  std::string write_faults_file(const std::string& node, std::uint64_t generation);  // "" or why not
  asio::awaitable<json> apply_faults(std::set<std::string> nodes, json reply);
  struct fault_state {  // what is in force, to put back
    std::vector<fault_rule> runtime;
    std::set<std::string> cleared;
    std::map<std::string, std::size_t> counts;
  };
  json refused_change(json reply, fault_state before);
  void take_fault_line(child& c, std::string_view line, std::string_view event);
  bool topology_rule_in_force(const fault_rule& r) const { return !cleared_faults_.contains(r.name); }
  // The child that applies a rule: the resolver for a dns rule (its "to" may
  // be any name), else the node of its "to".
  static std::string fault_owner(const fault_rule& r) { return r.stage == fault_stage::dns ? "resolver" : r.to; }

  asio::awaitable<void> serve_control();
  asio::awaitable<void> control_session(asio::local::stream_protocol::socket socket);
  asio::awaitable<json> handle(const json& request);
  json status();
  std::size_t queued(child& c);
  std::size_t running_children() const {
    return static_cast<std::size_t>(std::count_if(children_.begin(), children_.end(),
                                                  [](const child& c) { return c.current && !is_down(c.state); }));
  }

  asio::io_context& io_;
  topology net_;
  run_folder folder_;
  asio::steady_timer changed_;
  asio::signal_set signals_;
  asio::local::stream_protocol::acceptor control_;
  bool colour_;
  int console_;
  std::list<child> children_;  // stable addresses for the coroutines
  bool shutting_down_ = false;
  bool down_requested_ = false;
  std::size_t name_width_ = 8;
  line_printer out_;
  std::unique_ptr<web::server> web_;  // none with "web": false
  // Faults: rules added at run time (after the topology's), the topology's
  // rules cleared, injected faults per rule in force, and the generation
  // counter of the nodes' faults.json.
  std::vector<fault_rule> runtime_faults_;
  std::set<std::string> cleared_faults_;
  std::map<std::string, std::size_t> fault_counts_;
  std::uint64_t fault_generation_ = 0;
  // Bring-up's spawning threads (child_spawn.hpp). They outlive every child
  // they started: a child's parent-death signal fires when its thread ends.
  std::unique_ptr<spawn_pool> spawner_;
  std::size_t pending_spawns_ = 0;  // given to the pool, not yet taken in hand
  std::atomic<bool> stop_spawning_{false};
};

// "jaku.com      | line", in the node's colour on a terminal.
void supervisor::append_line(const child& c, std::string_view line, std::string& out) const {
  if (!c.colour.empty()) out += c.colour;
  out += c.name;
  if (c.name.size() < name_width_) out.append(name_width_ - c.name.size(), ' ');
  if (!c.colour.empty()) out += "\033[0m";
  out += " | ";
  append_terminal_safe(out, line);  // log fields quote mail text
  out += '\n';
}

void supervisor::print_line(const child& c, const std::string& line) {
  std::string text;
  append_line(c, line, text);
  out_.print_block(std::move(text), 1);
}

namespace {

// A field of a resolver's query line that is a word of capitals and digits
// ("SRV", "TYPE65280", "NOERROR"), else "other". The last occurrence: the
// question name before it is the asker's text, quoted when it holds a space.
std::string query_field(std::string_view line, std::string_view key) {
  const auto pos = line.rfind(key);
  if (pos == std::string_view::npos) return "other";
  auto value = line.substr(pos + key.size());
  value = value.substr(0, value.find(' '));
  if (value.empty() || value.size() > 16 ||
      value.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != std::string_view::npos)
    return "other";
  return std::string(value);
}

// A verdict field of an event=spf/dkim/dmarc line: one of the words the
// node writes (RFC 8601 results, the DMARC actions), else "other". The first
// occurrence: the node writes result= and action= before any free text.
std::string verdict_field(std::string_view line, std::string_view key) {
  static const std::set<std::string, std::less<>> words{"pass",      "fail",      "softfail",  "neutral",
                                                        "none",      "temperror", "permerror", "rejected",
                                                        "quarantined"};
  const auto pos = line.find(key);
  if (pos == std::string_view::npos) return "other";
  auto value = line.substr(pos + key.size());
  value = value.substr(0, value.find(' '));
  auto it = words.find(value);
  return it == words.end() ? "other" : *it;
}

}  // namespace

void supervisor::count_event(child& c, std::string_view event, std::string_view line) {
  if (event == "accepted") {
    ++c.count.received;
    // tls= is the event's last field: "no", or the version and cipher.
    // (rfind: a quoted field before it, such as the Message-ID, may hold the same text).
    if (auto at = line.rfind(" tls="); at != std::string_view::npos && line.substr(at) != " tls=no")
      ++c.count.received_tls;
  }
  else if (event == "delivered") ++c.count.delivered;
  else if (event == "relayed") ++c.count.relayed;
  else if (event == "bounced") ++c.count.bounced;
  else if (event == "dropped" && c.name == "resolver") ++c.count.dropped;
  else if (event == "query" && c.name == "resolver") {
    std::pair<std::string, std::string> key{query_field(line, " type="), query_field(line, " rcode=")};
    // Bounded: a client asking every TYPEnnnn gets one row for the rest.
    if (c.count.queries.size() >= 64 && !c.count.queries.count(key)) key.first = "other";
    ++c.count.queries[key];
  }
  else if (event == "auth_failed") ++c.count.auth_failed;
  else if (event == "spf" || event == "dkim" || event == "dmarc") {
    auto& by_result = event == "spf" ? c.count.spf : event == "dkim" ? c.count.dkim : c.count.dmarc;
    ++by_result[verdict_field(line, " result=")];
    if (event == "dmarc") {
      const auto action = verdict_field(line, " action=");
      if (action == "rejected") ++c.count.dmarc_rejected;
      else if (action == "quarantined") ++c.count.dmarc_quarantined;
    }
  }
}

// SIGKILL reaches a child's whole process group when it has one (imap);
// other signals go to the child alone (mailnet-imap passes SIGTERM on). Only
// for a child not yet reaped, so the group is still its own; never before its
// pid is known (kill(0, ...) would signal the launcher's own group).
void send_signal(const child& c, int sig) {
  if (!c.current || c.current->pid <= 0) return;
  ::kill(sig == SIGKILL && c.kill_group ? -c.current->pid : c.current->pid, sig);
}

std::shared_ptr<instance> supervisor::begin_spawn(child& c) {
  c.port_wait_until = {};
  c.fault_generation_seen = 0;  // the new process says which faults.json it read
  c.fault_generation_refused = 0;
  auto inst = std::make_shared<instance>();
  c.current = inst;
  set_state(c, child_state::starting);
  c.exit_text.clear();
  c.last_error.clear();
  c.started_at = clock::now();
  return inst;
}

void supervisor::spawn(child& c) {
  auto inst = begin_spawn(c);
  const auto exe = (own_binary_dir() / c.exe_name).string();
  spawned_child started;
  std::string error;
  try {
    // Not Boost.Process's launcher: its child tells Asio about the fork, which
    // allocates between fork and exec (see child_spawn.hpp).
    started = spawn_child(exe, c.args);
  } catch (const std::exception& e) {
    error = e.what();
  }
  adopt(c, inst, exe, started, error);
}

// Many at once (bring-up): batches of children spawned on the pool's
// threads, each taken in hand by the event loop as soon as it has exec'd.
// The loop meanwhile reads the lines of those already running.
void supervisor::spawn_in_pool(const std::vector<child*>& batch) {
  struct item {
    child* c;
    std::shared_ptr<instance> inst;
    std::string exe;
    std::vector<std::string> args;  // a copy: the thread touches nothing of the loop's
  };
  std::vector<item> items;
  const auto bin = own_binary_dir();
  for (child* c : batch) items.push_back({c, begin_spawn(*c), (bin / c->exe_name).string(), c->args});
  pending_spawns_ += items.size();
  spawner_->run([this, items = std::move(items)] {
    for (const auto& it : items) {
      spawned_child started;
      std::string error = "interrupted";
      if (!stop_spawning_) {
        try {
          started = spawn_child(it.exe, it.args);
          error.clear();
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
      asio::post(io_, [this, it, started, error] {
        --pending_spawns_;
        adopt(*it.c, it.inst, it.exe, started, error);
        notify();
      });
    }
  });
}

// On the event loop: the child's pipes and pidfd registered, its readers started.
void supervisor::adopt(child& c, const std::shared_ptr<instance>& inst, const std::string& exe,
                       spawned_child started, const std::string& error) {
  if (error.empty()) {
    try {
      inst->out = std::make_unique<asio::readable_pipe>(io_, started.out);
      started.out = -1;
      inst->err = std::make_unique<asio::readable_pipe>(io_, started.err);
      started.err = -1;
      // A pidfd, registered with Asio: this can fail (descriptors, a seccomp
      // profile), and then the child would run unmanaged, holding its port.
      inst->proc = std::make_unique<bp::process>(io_.get_executor(), started.pid);
    } catch (const std::exception& e) {
      discard_child(started);
      fail_start(c, "cannot start " + exe + ": " + e.what());
      return;
    }
  } else {
    fail_start(c, "cannot start " + exe + ": " + error);
    return;
  }
  inst->pid = inst->proc->id();
  asio::co_spawn(io_, pump(c, inst, *inst->out, false), report_failure);
  asio::co_spawn(io_, pump(c, inst, *inst->err, true), report_failure);
  asio::co_spawn(io_, watch(c, inst), report_failure);
  write_network_json();
}

void supervisor::fail_start(child& c, const std::string& why) {
  set_state(c, child_state::failed);
  c.exit_text = "not started";
  c.last_error = why;
  notify();
}

asio::awaitable<void> supervisor::pump(child& c, std::shared_ptr<instance> inst, asio::readable_pipe& pipe,
                                       bool is_stderr) {
  // Whatever one read brings is handled line by line and printed as one
  // block: a busy resolver writes tens of thousands of lines a second.
  std::string buffer, block;
  char chunk[16384];  // in the coroutine frame: two per child, so not larger
  for (;;) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!buffer.empty()) take_line(c, inst, buffer, is_stderr);  // a last line without its newline
      co_return;
    }
    buffer.append(chunk, n);
    std::size_t start = 0, count = 0;
    block.clear();
    for (std::size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string_view line(buffer.data() + start, nl - start);
      append_line(c, line, block);
      ++count;
      take_line(c, inst, line, is_stderr);
    }
    buffer.erase(0, start);
    if (buffer.size() > (1u << 20)) {
      // A line over 1 MiB: drop it and keep reading, or the child would block on a full pipe.
      buffer.clear();
      append_line(c, "<a log line over 1 MiB was cut>", block);
      ++count;
    }
    out_.print_block(std::move(block), count);
  }
}

// What a child's line tells the launcher: its last error, ready, a port it
// waits for, the mail counters.
void supervisor::take_line(child& c, const std::shared_ptr<instance>& inst, std::string_view line, bool is_stderr) {
  if (c.current != inst) return;
  if (is_stderr) {
    c.last_error = std::string(line);
    // "mailnet-node: jaku.com: cannot listen ..." is shown after "jaku.com
    // (127.0.0.1:1025) failed to start": the node's name once is enough.
    for (const std::string& prefix : {c.exe_name + " " + c.name + ": ", c.exe_name + ": ", c.name + ": "})
      if (c.last_error.starts_with(prefix)) c.last_error.erase(0, prefix.size());
    return;
  }
  if (web_) web_->publish(c.name, line);  // GET /api/v1/events
  const auto event = event_of(line);
  if (c.state == child_state::starting && event == "port_busy") {
    c.port_wait_until = clock::now() + std::chrono::seconds(70);
  } else if (c.state == child_state::starting && event == "ready") {
    set_state(c, child_state::ready);
    inst->ever_ready = true;
    inst->ready_at = clock::now();
    // faults.json changed after the node read it at its start: read it again.
    if (c.fault_generation_seen < c.fault_generation_written) ::kill(inst->pid, SIGUSR2);
    write_network_json();
    notify();
  } else if (event == "fault" || event == "fault_rules" || event == "fault_rules_error") {
    take_fault_line(c, line, event);
  } else {
    count_event(c, event, line);
  }
}

asio::awaitable<void> supervisor::watch(child& c, std::shared_ptr<instance> inst) {
  auto [ec, code] = co_await inst->proc->async_wait(asio::as_tuple(asio::use_awaitable));
  // ECHILD means the child was reaped already (boostorg/process#496): it exited.
  int status = inst->proc->native_exit_code();
  std::string text;
  if (WIFSIGNALED(status)) text = "signal " + std::to_string(WTERMSIG(status));
  else text = "exit " + std::to_string(ec ? -1 : code);
  if (c.current != inst) co_return;  // an older run; the child has moved on
  c.exit_text = text;
  switch (c.state) {
    case child_state::stopping: set_state(c, child_state::stopped); break;
    case child_state::killing: set_state(c, child_state::killed); break;
    default:
      if (shutting_down_) {
        set_state(c, child_state::stopped);
        break;
      }
      // Died unasked. One that was never ready is not respawned in a loop.
      set_state(c, inst->ever_ready ? child_state::crashed : child_state::failed);
      print_line(c, std::string(to_string(c.state)) + " (" + text + ")");
      if (c.restart_on_failure && inst->ever_ready)
        asio::co_spawn(io_, restart_later(c, inst), report_failure);
  }
  write_network_json();
  notify();
}

asio::awaitable<void> supervisor::restart_later(child& c, std::shared_ptr<instance> dead) {
  // Growing backoff: 0.5 s, 1 s, 2 s … up to 30 s (Postfix's master does the
  // same). A node that had served for a minute before it died starts over at 0.5 s.
  if (clock::now() - dead->ready_at >= std::chrono::minutes(1)) c.backoff_step = 0;
  auto delay = std::chrono::milliseconds(500) * (1 << std::min(c.backoff_step, 6));
  if (delay > std::chrono::seconds(30)) delay = std::chrono::seconds(30);
  ++c.backoff_step;
  ++c.restarts;
  print_line(c, "restarting in " + std::to_string(delay.count()) + " ms");
  asio::steady_timer timer(io_);
  timer.expires_after(delay);
  co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  if (c.current != dead || c.state != child_state::crashed || shutting_down_) co_return;
  co_await start_child(c, std::chrono::seconds(15));
}

// Starts a child that is down and waits until it is ready; "" or the reason.
asio::awaitable<std::string> supervisor::start_child(child& c, std::chrono::milliseconds timeout) {
  if (!is_down(c.state)) co_return c.name + " is " + to_string(c.state);
  spawn(c);
  co_await wait_for_start([&] { return c.state != child_state::starting; }, clock::now() + timeout);
  if (c.state == child_state::ready) {
    flush_others(c.name);
    co_return "";
  }
  std::string why = c.state == child_state::starting ? "not ready after " + std::to_string(timeout.count()) + " ms"
                                                      : c.exit_text + (c.last_error.empty() ? "" : ": " + c.last_error);
  if (c.state == child_state::starting) co_await stop_child(c, true);
  co_return why;
}

asio::awaitable<void> supervisor::stop_child(child& c, bool kill) {
  if (is_down(c.state) || !c.current) co_return;
  set_state(c, kill ? child_state::killing : child_state::stopping);
  send_signal(c, kill ? SIGKILL : SIGTERM);
  write_network_json();
  auto down = [&] { return is_down(c.state); };
  if (!co_await wait_until(down, clock::now() + graceful_stop_wait)) {
    send_signal(c, SIGKILL);
    co_await wait_until(down, clock::now() + std::chrono::seconds(5));
  }
}

asio::awaitable<void> supervisor::stop_all() {
  shutting_down_ = true;
  hold_network_json_ = true;
  // Nodes first, the resolver once they are down: a node draining its
  // sessions and relay attempts still gets DNS answers.
  auto is_resolver = [](const child& c) { return c.name == "resolver"; };
  co_await stop_together([&](const child& c) { return !is_resolver(c); });
  co_await stop_together(is_resolver);
  hold_network_json_ = false;
  write_network_json();
}

// SIGTERM to every running child that matches, SIGKILL to those still there
// after graceful_stop_wait.
asio::awaitable<void> supervisor::stop_together(const std::function<bool(const child&)>& which) {
  std::vector<child*> told;  // the last told first: the first to look at when waiting
  for (auto& c : children_)
    if (which(c) && !is_down(c.state)) told.push_back(&c);
  for (auto it = told.rbegin(); it != told.rend(); ++it) {
    set_state(**it, child_state::stopping);
    signal_child(*(*it)->current, SIGTERM);
  }
  // Each wake-up (a child's exit, a line) drops the children found down at
  // the end of the list and stops at the first still running: the work is
  // one step per child in all, where a pass over every child per wake-up
  // was a thousand each at 1,000 nodes.
  auto all_down = [&] {
    while (!told.empty() && is_down(told.back()->state)) told.pop_back();
    return told.empty();
  };
  if (!co_await wait_until(all_down, clock::now() + graceful_stop_wait)) {
    for (child* c : told)
      if (!is_down(c->state)) send_signal(*c, SIGKILL);
    co_await wait_until(all_down, clock::now() + std::chrono::seconds(5));
  }
}

// A node (or the resolver) came back: the others retry their waiting mail now
// instead of at their next backoff step (SIGUSR1 is the nodes' flush).
std::vector<std::string> supervisor::flush_others(const std::string& except) {
  std::vector<std::string> told;
  for (auto& c : children_)
    if (c.name != except && c.holds_mail() && c.state == child_state::ready) {
      signal_child(*c.current, SIGUSR1);
      told.push_back(c.name);
    }
  return told;
}

// Into the log (stderr) and, for a detached launcher, the terminal `up -d`
// was typed in; progress goes to that terminal only.
void supervisor::tell_console(const std::string& text, bool log_it) {
  if (log_it || console_ == STDERR_FILENO) std::cerr << text << std::flush;
  if (console_ < 0 || console_ == STDERR_FILENO) return;
  for (std::size_t done = 0; done < text.size();) {
    ssize_t n = ::write(console_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void supervisor::announce_states() {
  // In the order of the changes; a child that changed twice is announced
  // once, in its latest state, as before.
  std::vector<child*> changed;
  changed.swap(unannounced_);
  if (!web_) {
    for (child* c : changed) c->announced = c->state;
    return;
  }
  for (child* c : changed)
    if (c->announced != c->state) {
      c->announced = c->state;
      web_->publish_state(c->name, to_string(c->state), is_down(c->state) ? c->exit_text : std::string());
    }
}

void supervisor::write_network_json() {
  announce_states();
  // Bring-up and shutdown write it once at their end: rewritten on every
  // child event it cost O(nodes²) (a queue scan per node per write) and was
  // most of the launcher's time for 500 domains.
  if (hold_network_json_) return;
  json doc = status();
  std::error_code ec;
  try {
    // 0600, no link followed; replace, not throw: a path need not be UTF-8.
    write_private_file(folder_.network_json().string() + ".tmp",
                       doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  } catch (const std::exception&) {
    return;  // the status file is a convenience: the network runs on without it
  }
  std::filesystem::rename(folder_.network_json().string() + ".tmp", folder_.network_json(), ec);
}

// The .msg files in a node's queue. Reading a thousand queue folders was a
// third of the launcher's work for a status (and for each network.json):
// a folder is read again only when its mtime has moved. A change made later
// in the same clock tick as the one that set the mtime would not move it
// (file times have the kernel's tick, a few ms), so a count read less than
// 50 ms after the mtime is not kept.
std::size_t supervisor::queued(child& c) {
  const auto dir = folder_.dir() / c.name / "queue";
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {  // the folder itself, not a link's target
    c.queue_known = false;
    return folder_.queued_count(c.name);
  }
  const std::int64_t mtime = std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (c.queue_known && mtime == c.queue_mtime_ns) return c.queue_count;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const std::int64_t read_at = std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
  c.queue_count = folder_.queued_count(c.name);
  c.queue_mtime_ns = mtime;
  c.queue_known = read_at - mtime > 50'000'000;  // and not a clock set back
  return c.queue_count;
}

json supervisor::status() {
  json nodes = json::array();
  for (auto& c : children_) {
    bool running = c.current && !is_down(c.state);
    double uptime = running ? std::chrono::duration<double>(clock::now() - c.started_at).count() : 0.0;
    json n = {{"name", c.name}, {"state", to_string(c.state)}, {"pid", running ? c.current->pid : 0},
              {"listen", c.listen}, {"uptime_s", static_cast<long>(uptime)}, {"exit", c.exit_text},
              {"restarts", c.restarts}};
    if (c.kill_group) {
      // Dovecot: its listeners, and whether they offer STARTTLS.
      n["kind"] = "imap";
      n["imap"] = net_.mail_access.imap ? net_.mail_access.imap->to_string() : std::string();
      n["pop3"] = net_.mail_access.pop3 ? net_.mail_access.pop3->to_string() : std::string();
      n["tls"] = net_.tls ? "starttls" : "off";
    } else if (c.name != "resolver") {
      n["received"] = c.count.received;
      n["received_tls"] = c.count.received_tls;
      // STARTTLS on the node's port (policy.tls; "off" too in a network with "tls": false).
      if (const auto* d = c.domain) {
        n["tls"] = net_.tls ? std::string(to_string(d->policy.tls)) : std::string("off");
        // What its relay asks of the next node (policy.tls_relay; "off" without the network's TLS).
        n["tls_relay"] = net_.tls ? std::string(to_string(d->policy.tls_relay)) : std::string("off");
        // The submission listener's address, "" without one (README: Submission).
        n["submission"] = d->submission ? d->submission->to_string() : std::string();
      }
      n["delivered"] = c.count.delivered;
      n["relayed"] = c.count.relayed;
      n["bounced"] = c.count.bounced;
      n["auth_failures"] = c.count.auth_failed;
      // Every result word is present (0 when not seen), so that readers need not guess.
      auto verdicts = [](const std::map<std::string, std::size_t>& seen, std::initializer_list<const char*> words) {
        json out = json::object();
        for (const char* w : words) out[w] = 0;
        for (const auto& [w, count] : seen) out[w] = count;
        return out;
      };
      json dmarc = verdicts(c.count.dmarc, {"pass", "fail", "none", "temperror", "permerror"});
      dmarc["rejected"] = c.count.dmarc_rejected;
      dmarc["quarantined"] = c.count.dmarc_quarantined;
      n["mail_auth"] = {
          {"spf", verdicts(c.count.spf, {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})},
          {"dkim", verdicts(c.count.dkim, {"pass", "fail", "none", "temperror", "permerror"})},
          {"dmarc", std::move(dmarc)}};
      if (const auto* d = c.domain) n["dmarc_policy"] = std::string(to_string(d->policy.dmarc));
      n["queued"] = queued(c);
      n["faults"] = c.faults;
    } else {
      json queries = json::array();
      for (const auto& [key, count] : c.count.queries)
        queries.push_back({{"type", key.first}, {"rcode", key.second}, {"count", count}});
      n["queries"] = std::move(queries);
      n["dropped"] = c.count.dropped;
      n["faults"] = c.faults;  // answers its dns rules gave instead of the real one
    }
    nodes.push_back(std::move(n));
  }
  json doc = {{"name", net_.name}, {"dir", std::filesystem::absolute(folder_.dir()).string()},
              {"launcher_pid", ::getpid()}, {"nodes", nodes}};
  if (net_.web.enabled) doc["web"] = net_.web.url();
  doc["faults"] = fault_list();
  return doc;
}

// Accepts with accept4 (close-on-exec: Asio's accept is not). Out of
// descriptors (EMFILE, ENFILE) the connection stays in the backlog and the
// listener stays readable: waiting a little instead of retrying at once keeps
// the launcher from spinning, and the owner gets in once descriptors free up.
asio::awaitable<void> supervisor::serve_control() {
  asio::steady_timer pause(io_);
  std::size_t failures = 0;
  auto last_report = clock::time_point{};
  for (;;) {
    auto [ec] = co_await control_.async_wait(asio::socket_base::wait_read, asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !control_.is_open()) co_return;
    const int fd = ec ? -1 : accept_control_client(control_.native_handle());
    if (fd < 0) {
      if (!ec && (errno == EAGAIN || errno == ECONNABORTED)) continue;
      ++failures;
      if (auto now = clock::now(); now - last_report >= std::chrono::seconds(1)) {
        std::cerr << "mailnet: control socket: accept failed: " << (ec ? ec.message() : std::strerror(errno)) << " ("
                  << failures << " times)\n";
        failures = 0;
        last_report = now;
      }
      pause.expires_after(std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    asio::local::stream_protocol::socket socket(io_);
    boost::system::error_code assign_ec;
    socket.assign(asio::local::stream_protocol(), fd, assign_ec);
    if (assign_ec) {
      ::close(fd);
      continue;
    }
    asio::co_spawn(io_, control_session(std::move(socket)), report_failure);
  }
}

asio::awaitable<void> supervisor::control_session(asio::local::stream_protocol::socket socket) {
  using namespace asio::experimental::awaitable_operators;
  std::string buffer;
  asio::steady_timer deadline(io_);
  if (auto refusal = refusal_for_peer(socket.native_handle())) {
    // Another user: one line saying why, then the connection is closed
    // unread (the line fits in the socket's buffer, so this never waits).
    std::string out = json{{"ok", false}, {"error", *refusal}}.dump() + "\n";
    boost::system::error_code ignored;
    asio::write(socket, asio::buffer(out), ignored);
    co_return;
  }
  deadline.expires_after(std::chrono::seconds(5));  // a client that says nothing is not kept
  auto read = co_await (asio::async_read_until(socket, asio::dynamic_buffer(buffer, 65536), '\n',
                                               asio::as_tuple(asio::use_awaitable)) ||
                        deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (read.index() != 0) co_return;
  auto [ec, n] = std::get<0>(read);
  if (ec) co_return;
  json reply;
  try {
    reply = co_await handle(json::parse(buffer.substr(0, n)));
  } catch (const json::exception& e) {
    reply = {{"ok", false}, {"error", std::string("bad request: ") + e.what()}};
  }
  std::string out = reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";  // a path need not be UTF-8
  deadline.expires_after(std::chrono::seconds(5));
  co_await (asio::async_write(socket, asio::buffer(out), asio::as_tuple(asio::use_awaitable)) ||
            deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
}

asio::awaitable<json> supervisor::handle(const json& request) {
  const std::string cmd = request.value("cmd", "");
  if (cmd == "status") co_return json{{"ok", true}, {"status", status()}};
  if (cmd == "down") {
    down_requested_ = true;
    notify();
    // How many it is about to stop, for `mailnet down` to say while it waits.
    co_return json{{"ok", true}, {"stopping", running_children()}};
  }
  if (cmd == "fault_list") co_return json{{"ok", true}, {"faults", fault_list()}};
  if (cmd == "fault_add" || cmd == "fault_clear") {
    std::set<std::string> nodes;
    fault_state before{runtime_faults_, cleared_faults_, fault_counts_};
    json reply = cmd == "fault_add" ? fault_add(request, nodes) : fault_clear(request.value("name", ""), nodes);
    if (!reply.value("ok", false)) co_return reply;
    reply = co_await apply_faults(std::move(nodes), std::move(reply));
    if (!reply["refused"].empty()) reply = refused_change(std::move(reply), std::move(before));
    co_return reply;
  }
  const std::string name = request.value("name", "");
  if (cmd == "flush" && name.empty()) {
    auto told = flush_others("");
    json down = json::array();
    for (const auto& k : children_)
      if (k.holds_mail() && k.state != child_state::ready) down.push_back(k.name + " is " + to_string(k.state));
    co_return json{{"ok", true}, {"flushed", told}, {"skipped", down}};
  }
  child* c = find(name);
  if (!c) {
    std::string known;
    for (const auto& k : children_) known += (known.empty() ? "" : ", ") + k.name;
    co_return json{{"ok", false}, {"error", "no node named '" + name + "' (known: " + known + ")"}};
  }
  if (cmd == "flush") {  // one node retries what it holds
    if (c->name == "resolver") co_return json{{"ok", false}, {"error", "the resolver holds no mail"}};
    if (!c->holds_mail()) co_return json{{"ok", false}, {"error", c->name + " (Dovecot) holds no queue: it reads the Maildirs"}};
    if (c->state != child_state::ready) co_return json{{"ok", false}, {"error", name + " is " + to_string(c->state)}};
    signal_child(*c->current, SIGUSR1);
    co_return json{{"ok", true}, {"flushed", json::array({c->name})}, {"skipped", json::array()}};
  }
  if (cmd == "kill" || cmd == "stop") {
    if (is_down(c->state)) co_return json{{"ok", false}, {"error", name + " is already " + to_string(c->state)}};
    co_await stop_child(*c, cmd == "kill");
    co_return json{{"ok", true}, {"state", to_string(c->state)}};
  }
  if (cmd == "start" || cmd == "restart") {
    if (cmd == "restart") co_await stop_child(*c, false);
    auto why = co_await start_child(*c, std::chrono::seconds(15));
    if (!why.empty()) co_return json{{"ok", false}, {"error", name + " failed to start: " + why}};
    co_return json{{"ok", true}, {"state", to_string(c->state)}, {"pid", c->current->pid}};
  }
  co_return json{{"ok", false}, {"error", "unknown command '" + cmd + "'"}};
}

// ---- Faults while the network runs: `mailnet fault list|add|clear`, also
// GET/POST/DELETE /api/v1/faults. The launcher keeps the rules and writes,
// for each node concerned, <domain>/faults.json: the rules added for it and
// the names of its topology rules cleared, with a generation number; the
// dns rules go to the resolver's resolver/faults.json, in the same form. A
// SIGUSR2 (as SIGUSR1 is the nodes' flush) makes the node read it again; it
// logs event=fault_rules generation=G, and the reply waits for that line, so
// when it comes the node acts on the change. A node that is down reads the
// file when it starts.

// "... event=fault rule=NAME stage=...", "... event=fault_rules generation=G ..."
// and "... event=fault_rules_error generation=G error=...".
void supervisor::take_fault_line(child& c, std::string_view line, std::string_view event) {
  if (event == "fault_rules_error") {
    // Its own words, unescaped (the reply escapes them where it is shown).
    // Without a generation (the resolver's line; a node's file that did not
    // parse) it is about the file it was last given.
    std::uint64_t generation = c.fault_generation_written;
    std::string why;
    web::log_event e;
    if (web::parse_log_event(std::string(line), e)) {
      why = e.value("error");
      const auto g = e.value("generation");
      std::uint64_t n = 0;
      if (std::from_chars(g.data(), g.data() + g.size(), n).ec == std::errc()) generation = n;
    }
    c.fault_refusal = why.empty() ? std::string(line) : why;
    c.fault_generation_refused = std::max(c.fault_generation_refused, generation);
    notify();
    return;
  }
  const std::string key = " event=" + std::string(event) + (event == "fault" ? " rule=" : " generation=");
  const auto pos = line.find(key);
  if (pos == std::string_view::npos) return;
  auto value = line.substr(pos + key.size());
  value = value.substr(0, value.find(' '));
  if (event == "fault") {
    ++c.faults;
    if (auto it = fault_counts_.find(std::string(value)); it != fault_counts_.end()) ++it->second;
    return;
  }
  std::uint64_t generation = 0;
  if (std::from_chars(value.data(), value.data() + value.size(), generation).ec == std::errc())
    c.fault_generation_seen = std::max(c.fault_generation_seen, generation);
  notify();
}

json supervisor::fault_list() const {
  json out = json::array();
  auto add = [&](const fault_rule& r, const char* source) {
    auto it = fault_counts_.find(r.name);
    out.push_back({{"name", r.name}, {"source", source}, {"injected", it == fault_counts_.end() ? 0 : it->second},
                   {"rule", fault_rule_to_json(r)}});
  };
  for (const auto& r : net_.faults.rules)
    if (topology_rule_in_force(r)) add(r, "topology");
  for (const auto& r : runtime_faults_) add(r, "run time");
  return out;
}

json supervisor::fault_add(const json& request, std::set<std::string>& nodes) {
  std::vector<std::string> domains;
  for (const auto& d : net_.domains) domains.push_back(d.name);
  fault_rule rule;
  try {
    if (!request.contains("rule")) throw topology_error("fault rule: $: missing (expected a rule, a JSON object)");
    rule = read_fault_rule(json_reader("fault rule"), request["rule"], "$", domains);
    for (const auto& in_force : fault_list())
      if (in_force["name"] == rule.name)
        throw topology_error("fault rule: $.name: a rule named \"" + rule.name + "\" is in force already (" +
                             in_force["source"].get<std::string>() +
                             "): choose another name, or clear it first (mailnet fault clear " + rule.name + ")");
  } catch (const topology_error& e) {
    return {{"ok", false}, {"bad_input", true}, {"error", e.what()}};
  }
  runtime_faults_.push_back(rule);
  fault_counts_[rule.name] = 0;
  nodes.insert(fault_owner(rule));
  return {{"ok", true}, {"added", rule.name}, {"rule", fault_rule_to_json(rule)}};
}

json supervisor::fault_clear(const std::string& name, std::set<std::string>& nodes) {
  const bool all = name.empty() || name == "*";
  json cleared = json::array();
  for (const auto& r : net_.faults.rules)
    if (topology_rule_in_force(r) && (all || r.name == name)) {
      cleared_faults_.insert(r.name);
      nodes.insert(fault_owner(r));
      cleared.push_back(r.name);
    }
  for (auto it = runtime_faults_.begin(); it != runtime_faults_.end();) {
    if (all || it->name == name) {
      nodes.insert(fault_owner(*it));
      cleared.push_back(it->name);
      it = runtime_faults_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& n : cleared) fault_counts_.erase(n.get<std::string>());
  if (!all && cleared.empty()) {
    std::string known;
    for (const auto& r : fault_list()) known += (known.empty() ? "" : ", ") + r["name"].get<std::string>();
    return {{"ok", false},
            {"not_found", true},
            {"error", "no fault rule named '" + name + "' is in force (" +
                          (known.empty() ? std::string("there is none") : "rules: " + known) + ")"}};
  }
  return {{"ok", true}, {"cleared", cleared}};
}

json supervisor::faults_file(const std::string& node, std::uint64_t generation) const {
  json doc = {{"generation", generation}, {"rules", json::array()}, {"cleared", json::array()}};
  for (const auto& r : runtime_faults_)
    if (fault_owner(r) == node) doc["rules"].push_back(fault_rule_to_json(r));
  for (const auto& r : net_.faults.rules)
    if (fault_owner(r) == node && cleared_faults_.contains(r.name)) doc["cleared"].push_back(r.name);
  return doc;
}

std::string supervisor::write_faults_file(const std::string& name, std::uint64_t generation) {
  const json doc = faults_file(name, generation);
  const auto file = folder_.dir() / name / "faults.json";
  try {
    // Durable before the node is told (the file fsynced, renamed, its folder
    // fsynced), as mail is: a machine that crashes after `add` answered
    // restarts the node with the rules it was said to have. A few ms on the
    // event loop, per change a person makes. The helper never opens a name
    // that is there (O_EXCL): a tmp left by a launcher that died between
    // write and rename is removed first (remove follows no link).
    const std::filesystem::path tmp = file.string() + ".tmp";
    std::filesystem::remove(tmp);
    node::publish_durably(tmp, file, doc.dump(2) + "\n", true);
    return "";
  } catch (const std::exception& e) {
    return "cannot write " + file.string() + ": " + e.what();
  }
}

namespace {

// Not in the coroutine: GCC 12 miscompiles braced json in them.
json refusal(const std::string& node, const std::string& why) { return json{{"node", node}, {"error", why}}; }

}  // namespace

// Writes the faults.json of each node in nodes, signals those that run, and
// waits (up to 5 s) until each has read it, or refused it (its
// event=fault_rules_error, taken as soon as it comes). The reply says which
// nodes applied the change, which refused it and why, and which will apply
// it when they start.
asio::awaitable<json> supervisor::apply_faults(std::set<std::string> nodes, json reply) {
  const auto generation = ++fault_generation_;
  json applied = json::array(), pending = json::array(), refused = json::array();
  std::vector<child*> told;
  for (const auto& name : nodes) {
    child* c = find(name);
    if (!c) continue;
    if (auto problem = write_faults_file(name, generation); !problem.empty()) {
      pending.push_back(name + ": " + problem);
      continue;
    }
    c->fault_generation_written = generation;
    if (c->state == child_state::ready) {
      signal_child(*c->current, SIGUSR2);
      told.push_back(c);
    } else {
      pending.push_back(name + " is " + to_string(c->state) + ": it applies the change when it starts");
    }
  }
  auto done = [&](const child* c) {
    return c->state != child_state::ready || c->fault_generation_seen >= c->fault_generation_written ||
           c->fault_generation_refused >= c->fault_generation_written;
  };
  co_await wait_until([&] { return std::all_of(told.begin(), told.end(), done); },
                      clock::now() + std::chrono::seconds(5));
  for (const child* c : told) {
    if (c->state == child_state::ready && c->fault_generation_seen >= generation) applied.push_back(c->name);
    else if (c->fault_generation_refused >= generation) refused.push_back(refusal(c->name, c->fault_refusal));
    else if (c->state == child_state::ready) pending.push_back(c->name + " did not confirm within 5 s");
    else pending.push_back(c->name + " is " + to_string(c->state) + ": it applies the change when it starts");
  }
  reply["applied"] = applied;
  reply["pending"] = pending;
  reply["refused"] = refused;
  write_network_json();
  co_return reply;
}

// A change some node refused: an error that quotes each node's words. When no
// node took it, it is undone, so that `fault list` says what the nodes do and
// the same change can be made again once the cause is gone; the refusing
// nodes' files are written back (without a signal: they hold those rules).
json supervisor::refused_change(json reply, fault_state before) {
  std::string why;
  for (const auto& r : reply["refused"])
    why += (why.empty() ? "" : "; ") + r["node"].get<std::string>() + " refused the change: " + r["error"].get<std::string>();
  if (reply["applied"].empty() && reply["pending"].empty()) {
    for (auto& [name, count] : before.counts)  // a fault injected meanwhile still counts
      if (auto it = fault_counts_.find(name); it != fault_counts_.end()) count = it->second;
    runtime_faults_ = std::move(before.runtime);
    cleared_faults_ = std::move(before.cleared);
    fault_counts_ = std::move(before.counts);
    const auto generation = ++fault_generation_;
    for (const auto& r : reply["refused"]) {
      child* c = find(r["node"].get<std::string>());
      if (c && write_faults_file(c->name, generation).empty()) c->fault_generation_written = generation;
    }
    write_network_json();
    why += " (the change is undone: the rules in force are as they were)";
  } else {
    why += " (the other nodes concerned took the change)";
  }
  reply["ok"] = false;
  reply["error"] = why;
  return reply;
}
// ---- end of faults while the network runs

asio::awaitable<bool> supervisor::bring_up(std::chrono::milliseconds ready_timeout,
                                           std::function<void(bool)> on_ready) {
  static const char* palette[] = {"\033[36m", "\033[32m", "\033[33m", "\033[35m", "\033[34m", "\033[91m",
                                  "\033[92m", "\033[93m", "\033[94m", "\033[95m", "\033[96m"};
  const auto topo_file = folder_.topology_json().string();
  const auto run_dir = folder_.dir().string();
  auto add = [&](std::string name, std::string listen, std::vector<std::string> args, std::string exe,
                 bool restart) -> child& {
    auto& c = children_.emplace_back();
    c.name = std::move(name);
    c.listen = std::move(listen);
    c.args = std::move(args);
    c.exe_name = std::move(exe);
    c.restart_on_failure = restart;
    if (colour_) c.colour = palette[(children_.size() - 1) % std::size(palette)];
    name_width_ = std::max(name_width_, c.name.size());
    return c;
  };
  add("resolver", net_.resolver.listen.to_string(), {"--topology", topo_file, "--run-dir", run_dir},
      "mailnet-resolver", net_.resolver.restart_on_failure);
  for (const auto& d : net_.domains)
    add(d.name, d.listen.to_string(),
        {"--topology", folder_.node_topology_json(d.name).string(), "--network-topology", topo_file, "--domain", d.name,
         "--run-dir", run_dir},
        "mailnet-node", d.restart_on_failure)
        .domain = &d;
  if (net_.mail_access.enabled()) {
    // Dovecot, last: it reads the Maildirs the nodes make (README: IMAP and POP3).
    std::string listen;
    if (net_.mail_access.imap) listen = net_.mail_access.imap->to_string() + " imap";
    if (net_.mail_access.pop3) listen += (listen.empty() ? "" : ", ") + net_.mail_access.pop3->to_string() + " pop3";
    add("imap", listen, mail_access_arguments(folder_.dir(), net_), "mailnet-imap", net_.mail_access.restart_on_failure)
        .kill_group = true;
  }

  // The first Ctrl-C stops everything in order; a second one does not wait.
  bool interrupted = false;
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec, int) {
    if (ec) return;
    if (interrupted) {
      for (auto& c : children_)
        if (!is_down(c.state) && c.current) send_signal(c, SIGKILL);
    }
    interrupted = true;
    notify();
    signals_.async_wait(on_signal);
  };
  signals_.async_wait(on_signal);

  // The web server's port is taken before any child starts: a taken one
  // fails `up` at once. It answers once the network is up, through the same
  // requests as the control socket.
  if (net_.web.enabled) {
    std::string why;
    web_ = web::server::open(
        io_, net_.web.listen, [this](json request) -> asio::awaitable<json> { co_return co_await handle(request); },
        why);
    if (web_) {
      // POST /api/v1/send, on the web server's worker thread: what `mailnet send` does.
      std::set<std::string> domains;
      for (const auto& d : net_.domains) domains.insert(d.name);
      web_->set_sender([resolver = net_.resolver, domains](const json& body) {
        return send_from_json(body, resolver, domains);
      });
    }
    if (!web_) {
      tell_console("mailnet: the web server (web.listen " + net_.web.listen.to_string() + ") failed to start: " + why +
                   " (choose a free port for web.listen in the topology, or turn it off with \"web\": false)\n");
      on_ready(false);
      co_return false;
    }
  }

  // Rules added at run time last as long as the run: none from an earlier one.
  for (const auto& c : children_) {
    std::error_code ignored;
    std::filesystem::remove(folder_.dir() / c.name / "faults.json", ignored);
  }
  for (const auto& r : net_.faults.rules) fault_counts_[r.name] = 0;

  // The resolver first: nodes ask it as soon as they have mail to relay.
  hold_network_json_ = true;
  auto deadline = clock::now() + ready_timeout;
  auto& resolver = children_.front();
  spawn(resolver);
  co_await wait_for_start([&] { return interrupted || resolver.state != child_state::starting; }, deadline);
  bool ok = resolver.state == child_state::ready;
  const bool progress = console_ >= 0 && ::isatty(console_) && children_.size() > 10;  // on a terminal, large topologies
  if (ok) {
    // The launcher reads its children's lines between two spawns: spawning a
    // thousand nodes takes seconds, and their lines (ready among them) must
    // not wait in the pipes until the last one has started. Each child has
    // ready_timeout from its own start: the wait ends ready_timeout after the
    // last spawn. (With one deadline for all, taken before the first spawn, a
    // network whose spawning outlasted it failed at once, every node ready
    // but its line still unread.)
    spawner_ = std::make_unique<spawn_pool>(spawn_threads);
    std::vector<child*> batch;
    for (auto it = std::next(children_.begin()); it != children_.end(); ++it) {
      batch.push_back(&*it);
      if (batch.size() == spawn_batch || std::next(it) == children_.end()) {
        spawn_in_pool(batch);
        batch.clear();
      }
    }
    // Every child taken in hand (or given up on, after a Ctrl-C) before
    // anything may signal one: until then its pid is unknown.
    co_await wait_until(
        [&] {
          if (interrupted) stop_spawning_ = true;
          return pending_spawns_ == 0;
        },
        clock::time_point::max());
    deadline = clock::now() + ready_timeout;
    auto ready_count = [&] {
      return std::count_if(children_.begin(), children_.end(),
                           [](const child& c) { return c.state == child_state::ready; });
    };
    long shown = -1;
    co_await wait_for_start(
        [&] {
          if (progress && ready_count() != shown) {
            shown = ready_count();
            tell_console("\rmailnet: " + std::to_string(shown) + " of " + std::to_string(children_.size()) + " ready",
                         false);
          }
          return interrupted || std::none_of(children_.begin(), children_.end(), [](const child& c) {
                   return c.state == child_state::starting;
                 });
        },
        deadline);
    if (progress) tell_console("\n", false);
    ok = std::all_of(children_.begin(), children_.end(), [](const child& c) { return c.state == child_state::ready; });
  }

  hold_network_json_ = false;
  if (!ok) {
    out_.flush();  // the children's last words first, then the verdict
    for (const auto& c : children_) {
      if (c.state == child_state::ready) continue;
      std::string why = c.state == child_state::starting
                            ? "not ready after " + std::to_string(ready_timeout.count()) + " ms"
                            : c.exit_text + (c.last_error.empty() ? "" : ": " + c.last_error);
      if (interrupted) why = "interrupted";
      tell_console("mailnet: " + c.name + " (" + c.listen + ") failed to start: " + terminal_safe(why) + "\n");
      break;
    }
    co_await stop_all();  // writes network.json
    on_ready(false);
    co_return interrupted;
  }

  boost::system::error_code ec;
  std::filesystem::remove(folder_.control_socket());
  std::string why;
  const int listener = listen_owner_only(folder_.control_socket(), why);
  if (listener >= 0) control_.assign(asio::local::stream_protocol(), listener, ec);
  if (listener < 0 || ec) {
    if (listener >= 0) ::close(listener);
    tell_console("mailnet: cannot serve the control socket " + folder_.control_socket().string() + ": " +
                 (ec ? ec.message() : why) + "\n");
    co_await stop_all();
    on_ready(false);
    co_return false;
  }
  asio::co_spawn(io_, serve_control(), report_failure);
  if (web_) web_->start();
  write_network_json();
  // Mail queued in an earlier run may have been tried, and backed off, while
  // its next hop was still starting: everyone retries now that all listen.
  flush_others("");

  out_.print("mailnet: network " + net_.name + " is up (" + terminal_safe(folder_.dir().string()) + ")");
  for (const auto& c : children_) {
    std::string padded = c.name;
    if (padded.size() < name_width_) padded.resize(name_width_, ' ');
    out_.print("  " + padded + "  ready  " + c.listen + "  pid " + std::to_string(c.current->pid));
  }
  if (web_) out_.print("mailnet: dashboard and API at " + net_.web.url());
  out_.print("mailnet: stop with Ctrl-C or `mailnet down`");
  out_.flush();
  on_ready(true);

  co_await wait_until([&] { return interrupted || down_requested_; }, clock::time_point::max());
  out_.print("mailnet: stopping");
  const auto stop_began = clock::now();
  const auto cpu_before = own_cpu_time();
  const auto running = running_children();
  control_.close(ec);
  if (web_) web_->close();
  co_await stop_all();  // writes network.json
  std::filesystem::remove(folder_.control_socket());
  // How long the stop took, and the launcher's own share of the CPU in it
  // (bench/many_domains.py reads it: the nodes' share is theirs).
  out_.print("mailnet: stopped " + std::to_string(running) + " in " +
             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - stop_began).count()) +
             " ms (the launcher's CPU: " +
             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(own_cpu_time() - cpu_before).count()) +
             " ms)");
  co_return true;
}

// -d: the parent waits on a pipe for the daemon's one byte, '1' ready or '0' failed.
int detach_and_wait(int& ready_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid > 0) {
    ::close(fds[1]);
    // '1' once every node is ready. A failed start writes '0' and exits; the
    // end of the pipe then says that the daemon is gone too.
    char byte = '0';
    ssize_t n;
    do n = ::read(fds[0], &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n == 1 && byte == '1') {
      ::close(fds[0]);
      return 0;
    }
    for (char rest;;) {
      ssize_t r = ::read(fds[0], &rest, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
    }
    ::close(fds[0]);
    return 1;
  }
  ::close(fds[0]);
  ::setsid();
  ready_fd = fds[1];
  return -2;  // the daemon goes on
}

}  // namespace

int run_up(const up_options& options) {
  topology net;
  try {
    net = load_topology(options.topology_file);
  } catch (const topology_error& e) {
    std::cerr << "mailnet: " << e.what() << "\n";
    return 2;
  }
  if (auto problem = privileged_port_problem(net, current_bind_rights()); !problem.empty()) {
    std::cerr << "mailnet: " << options.topology_file.string() << ": " << problem << "\n";
    return 2;
  }
  if (net.mail_access.enabled()) {
    if (auto problem = dovecot_missing_problem(); !problem.empty()) {
      std::cerr << "mailnet: " << options.topology_file.string() << ": " << problem << "\n";
      return 1;
    }
  }
  run_folder folder(options.dir ? *options.dir : std::filesystem::path("run") / net.name);
  // Each child costs the launcher about four descriptors (two pipes, a pidfd,
  // a spare for the control socket); say so before starting anything.
  const std::size_t needed = 4 * (net.domains.size() + 2) + 64;
  if (auto limit = raise_fd_limit(); limit < needed) {
    std::cerr << "mailnet: " << options.topology_file.string() << " has " << net.domains.size()
              << " domains and needs about " << needed << " open files, but the limit is " << limit
              << " (raise it with `ulimit -n`)\n";
    return 1;
  }
  if (auto probe = folder.probe_launcher(); probe.what == run_folder::launcher_probe::state::other_user) {
    std::cerr << "mailnet: network " << net.name << " is already up: " << terminal_safe(probe.why) << "\n";
    return 1;
  }
  try {
    if (auto pid = folder.running_launcher()) {
      std::cerr << "mailnet: network " << net.name << " is already up in " << folder.dir().string()
                << " (launcher pid " << *pid << "); use `mailnet down` first\n";
      return 1;
    }
    folder.prepare(net, options.fresh);
  } catch (const std::exception& e) {
    std::cerr << "mailnet: cannot prepare the output folder " << folder.dir().string() << ": " << e.what() << "\n";
    return 1;
  }

  int ready_fd = -1;
  int console = STDERR_FILENO;
  if (options.detach) {
    int r = detach_and_wait(ready_fd);
    if (r >= 0) {
      if (r == 0) std::cout << "mailnet: network " << net.name << " is up in the background (" << folder.dir().string()
                            << "); logs in " << folder.launcher_log().string() << "\n";
      else std::cerr << "mailnet: network " << net.name << " did not start; see " << folder.launcher_log().string() << "\n";
      return r;
    }
    if (r == -1) {
      std::cerr << "mailnet: cannot start in the background: " << std::strerror(errno) << "\n";
      return 1;
    }
    // The terminal stays the console until the network is up (progress, or
    // why it did not start); after that only launcher.log is written.
    console = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    int log = -1;
    try {
      log = open_private_file(folder.launcher_log(), O_WRONLY | O_CREAT | O_APPEND);  // 0600, no link followed
    } catch (const std::exception& e) {
      std::cerr << "mailnet: " << e.what() << "\n";
    }
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
      ::close(log);
    }
    if (null >= 0) {
      ::dup2(null, 0);
      ::close(null);
    }
  }
  folder.write_pid(::getpid());

  std::signal(SIGPIPE, SIG_IGN);
  const bool colour = !options.detach && ::isatty(1) && !std::getenv("NO_COLOR");
  int code = 1;
  {  // torn down before launcher.pid goes: `mailnet down` waits for that
    asio::io_context io(1);
    supervisor sup(io, std::move(net), folder, colour, console);
    auto on_ready = [&](bool ok) {
      if (ready_fd < 0) return;
      char byte = ok ? '1' : '0';
      [[maybe_unused]] auto n = ::write(ready_fd, &byte, 1);
      if (ok) {  // a failed daemon keeps both until it exits: its parent waits for that
        ::close(ready_fd);
        sup.release_console();
        if (console != STDERR_FILENO && console >= 0) ::close(console);
      }
      ready_fd = -1;
    };
    bool all_reaped = false;  // bring_up ended in its own stop_all, not in an exception
    asio::co_spawn(io, sup.bring_up(options.ready_timeout, on_ready), [&](std::exception_ptr e, bool ok) {
      report_failure(e);
      code = !e && ok ? 0 : 1;
      all_reaped = !e;
      io.stop();
    });
    io.run();
    on_ready(false);
    if (!full_teardown_at_exit && all_reaped) {
      // Every child is reaped (stop_all), launcher.log has the last line:
      // the kernel closes the thousands of pipes and pidfds of a large
      // network faster than their objects' destructors do one by one.
      // After an exception the teardown runs: the processes' destructors
      // end any child still running.
      sup.flush_output();
      std::cout.flush();
      std::cerr.flush();
      folder.remove_pid();
      ::_exit(code);
    }
  }
  folder.remove_pid();
  return code;
}

}  // namespace mailnet::launcher
