#include "launcher/supervisor.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <list>
#include <nlohmann/json.hpp>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/event_log.hpp"
#include "common/topology.hpp"

namespace mailnet::launcher {

namespace asio = boost::asio;
namespace bp = boost::process::v2;
using clock = std::chrono::steady_clock;

namespace {

// Runs in the child between fork and exec: its own process group (a Ctrl-C
// reaches only the launcher, which then stops the children in order), and
// death with the launcher, even if the launcher is killed with SIGKILL.
struct child_setup {
  pid_t parent;
  template <typename Launcher>
  bp::error_code on_exec_setup(Launcher&, const bp::filesystem::path&, const char* const*) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl took effect
    return {};
  }
};

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

std::filesystem::path own_binary_dir() {
  if (const char* env = std::getenv("MAILNET_BIN_DIR"); env && *env) return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::current_path() : self.parent_path();
}

enum class child_state { starting, ready, exited, stopping };

const char* to_string(child_state s) {
  switch (s) {
    case child_state::starting: return "starting";
    case child_state::ready: return "ready";
    case child_state::exited: return "exited";
    case child_state::stopping: return "stopping";
  }
  return "?";
}

struct child {
  std::string name;  // "resolver" or the domain
  std::string listen;
  std::filesystem::path exe;
  std::vector<std::string> args;
  std::unique_ptr<bp::process> proc;
  std::unique_ptr<asio::readable_pipe> out, err;
  child_state state = child_state::starting;
  int pid = 0;
  std::string exit_text;   // "exit 1", "signal 9"
  std::string last_error;  // the last line on stderr
};

class supervisor {
 public:
  supervisor(asio::io_context& io, topology net, std::filesystem::path dir)
      : io_(io), net_(std::move(net)), dir_(std::move(dir)), changed_(io), signals_(io, SIGINT, SIGTERM) {}

  asio::awaitable<int> run(std::chrono::milliseconds ready_timeout);

 private:
  void notify() { changed_.cancel(); }

  // Waits until pred() holds or the deadline passes; every child event wakes it.
  template <typename Pred>
  asio::awaitable<bool> wait_until(Pred pred, clock::time_point deadline) {
    while (!pred()) {
      if (clock::now() >= deadline) co_return false;
      changed_.expires_at(deadline);
      co_await changed_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return true;
  }

  child& add(std::string name, std::string listen, std::vector<std::string> args, const std::string& exe_name) {
    auto& c = children_.emplace_back();
    c.name = std::move(name);
    c.listen = std::move(listen);
    c.exe = own_binary_dir() / exe_name;
    c.args = std::move(args);
    return c;
  }

  void spawn(child& c);
  asio::awaitable<void> pump(child& c, asio::readable_pipe& pipe, bool is_stderr);
  asio::awaitable<void> watch(child& c);
  asio::awaitable<void> stop_all();
  void write_network_json();
  void print_line(const std::string& who, const std::string& line);

  asio::io_context& io_;
  topology net_;
  std::filesystem::path dir_;
  asio::steady_timer changed_;
  asio::signal_set signals_;
  std::list<child> children_;  // stable addresses for the coroutines
  bool shutting_down_ = false;
  std::size_t name_width_ = 8;
};

void supervisor::print_line(const std::string& who, const std::string& line) {
  std::string padded = who;
  if (padded.size() < name_width_) padded.resize(name_width_, ' ');
  std::cout << padded << " | " << line << '\n' << std::flush;
}

void supervisor::spawn(child& c) {
  c.out = std::make_unique<asio::readable_pipe>(io_);
  c.err = std::make_unique<asio::readable_pipe>(io_);
  c.state = child_state::starting;
  c.exit_text.clear();
  c.last_error.clear();
  try {
    c.proc = std::make_unique<bp::process>(io_, bp::filesystem::path(c.exe.string()), c.args,
                                           bp::process_stdio{nullptr, *c.out, *c.err}, child_setup{::getpid()});
  } catch (const std::exception& e) {
    c.state = child_state::exited;
    c.exit_text = "not started";
    c.last_error = "cannot start " + c.exe.string() + ": " + e.what();
    notify();
    return;
  }
  c.pid = c.proc->id();
  asio::co_spawn(io_, pump(c, *c.out, false), report_failure);
  asio::co_spawn(io_, pump(c, *c.err, true), report_failure);
  asio::co_spawn(io_, watch(c), report_failure);
}

asio::awaitable<void> supervisor::pump(child& c, asio::readable_pipe& pipe, bool is_stderr) {
  std::string buffer;
  for (;;) {
    auto [ec, n] = co_await asio::async_read_until(pipe, asio::dynamic_buffer(buffer, 1 << 20), '\n',
                                                   asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    std::string line = buffer.substr(0, n - 1);
    buffer.erase(0, n);
    print_line(c.name, line);
    if (is_stderr) {
      c.last_error = line;
    } else if (c.state == child_state::starting && line.find(" event=ready") != std::string::npos) {
      c.state = child_state::ready;
      notify();
    }
  }
}

asio::awaitable<void> supervisor::watch(child& c) {
  auto [ec, code] = co_await c.proc->async_wait(asio::as_tuple(asio::use_awaitable));
  // ECHILD means someone reaped it already (boostorg/process#496): it exited.
  int status = c.proc->native_exit_code();
  if (WIFSIGNALED(status)) c.exit_text = "signal " + std::to_string(WTERMSIG(status));
  else c.exit_text = "exit " + std::to_string(ec ? -1 : code);
  bool expected = shutting_down_ || c.state == child_state::stopping;
  c.state = child_state::exited;
  if (!expected) print_line(c.name, "exited unexpectedly (" + c.exit_text + ")");
  write_network_json();
  notify();
}

asio::awaitable<void> supervisor::stop_all() {
  shutting_down_ = true;
  // Nodes first, the resolver last, so nothing is left asking a dead resolver.
  for (auto it = children_.rbegin(); it != children_.rend(); ++it)
    if (it->state != child_state::exited) {
      it->state = child_state::stopping;
      ::kill(it->pid, SIGTERM);
    }
  auto all_exited = [this] {
    return std::all_of(children_.begin(), children_.end(),
                       [](const child& c) { return c.state == child_state::exited; });
  };
  if (!co_await wait_until(all_exited, clock::now() + std::chrono::seconds(5))) {
    for (auto& c : children_)
      if (c.state != child_state::exited) ::kill(c.pid, SIGKILL);
    co_await wait_until(all_exited, clock::now() + std::chrono::seconds(5));
  }
}

void supervisor::write_network_json() {
  nlohmann::json doc;
  doc["name"] = net_.name;
  doc["dir"] = std::filesystem::absolute(dir_).string();
  doc["launcher_pid"] = ::getpid();
  doc["nodes"] = nlohmann::json::array();
  for (const auto& c : children_)
    doc["nodes"].push_back({{"name", c.name}, {"listen", c.listen}, {"pid", c.pid},
                            {"state", to_string(c.state)}, {"exit", c.exit_text}});
  std::ofstream(dir_ / "network.json.tmp") << doc.dump(2) << "\n";
  std::filesystem::rename(dir_ / "network.json.tmp", dir_ / "network.json");
}

asio::awaitable<int> supervisor::run(std::chrono::milliseconds ready_timeout) {
  const auto topo_file = (dir_ / "topology.json").string();
  for (const auto& d : net_.domains) name_width_ = std::max(name_width_, d.name.size());

  add("resolver", net_.resolver.listen.to_string(), {"--topology", topo_file, "--run-dir", dir_.string()},
      "mailnet-resolver");
  for (const auto& d : net_.domains)
    add(d.name, d.listen.to_string(), {"--topology", topo_file, "--domain", d.name, "--run-dir", dir_.string()},
        "mailnet-node");

  bool interrupted = false;
  signals_.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    interrupted = true;
    notify();
  });

  // The resolver first: nodes ask it as soon as they have mail to relay.
  auto& resolver = children_.front();
  spawn(resolver);
  auto deadline = clock::now() + ready_timeout;
  co_await wait_until([&] { return interrupted || resolver.state != child_state::starting; }, deadline);
  bool ok = resolver.state == child_state::ready;
  if (ok) {
    for (auto it = std::next(children_.begin()); it != children_.end(); ++it) spawn(*it);
    co_await wait_until(
        [&] {
          return interrupted || std::none_of(children_.begin(), children_.end(), [](const child& c) {
                   return c.state == child_state::starting;
                 });
        },
        deadline);
    ok = std::all_of(children_.begin(), children_.end(), [](const child& c) { return c.state == child_state::ready; });
  }
  write_network_json();

  if (!ok) {
    for (const auto& c : children_) {
      if (c.state == child_state::ready) continue;
      std::string why = c.state == child_state::starting ? "not ready after " + std::to_string(ready_timeout.count()) + " ms"
                                                         : c.exit_text + (c.last_error.empty() ? "" : ": " + c.last_error);
      if (interrupted) why = "interrupted";
      std::cerr << "mailnet: " << c.name << " (" << c.listen << ") failed to start: " << why << "\n";
      break;
    }
    co_await stop_all();
    co_return interrupted ? 0 : 1;
  }

  std::cout << "mailnet: network " << net_.name << " is up (" << dir_.string() << ")\n";
  for (const auto& c : children_) {
    std::string padded = c.name;
    if (padded.size() < name_width_) padded.resize(name_width_, ' ');
    std::cout << "  " << padded << "  ready  " << c.listen << "  pid " << c.pid << "\n";
  }
  std::cout << "mailnet: press Ctrl-C to stop\n" << std::flush;

  co_await wait_until([&] { return interrupted; }, clock::time_point::max());
  std::cout << "mailnet: stopping\n" << std::flush;
  co_await stop_all();
  write_network_json();
  co_return 0;
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
  std::filesystem::path dir = options.dir ? *options.dir : std::filesystem::path("run") / net.name;
  try {
    if (options.fresh) std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "resolver");
    std::ofstream(dir / "topology.json") << to_json_text(net);
  } catch (const std::exception& e) {
    std::cerr << "mailnet: cannot prepare the output folder " << dir.string() << ": " << e.what() << "\n";
    return 1;
  }

  std::signal(SIGPIPE, SIG_IGN);
  asio::io_context io(1);
  supervisor sup(io, std::move(net), dir);
  int code = 1;
  asio::co_spawn(io, sup.run(options.ready_timeout), [&](std::exception_ptr e, int result) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "mailnet: internal error: " << ex.what() << "\n";
      }
    } else {
      code = result;
    }
    io.stop();
  });
  io.run();
  return code;
}

}  // namespace mailnet::launcher
