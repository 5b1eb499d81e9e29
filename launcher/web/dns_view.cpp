#include "launcher/web/dns_view.hpp"

#include <charconv>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/dns/zone_records.hpp"
#include "common/mail/durable_file.hpp"
#include "common/topology.hpp"
#include "launcher/web/trace.hpp"

namespace mailnet::launcher::web {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The latest query lines of resolver.log, newest first.
json latest_queries(const fs::path& run_dir, const dns_view_limits& limits, bool& cut) {
  cut = false;
  json out = json::array();
  const auto folder = run_dir / "resolver";
  const auto file = folder / "resolver.log";
  std::error_code ec;
  // Never through a link planted in the run folder (as `mailnet logs` reads).
  if (fs::is_symlink(fs::symlink_status(folder, ec)) || fs::is_symlink(fs::symlink_status(file, ec))) return out;
  if (!fs::exists(fs::symlink_status(file, ec))) return out;
  const std::string text = node::read_file_tail(file, limits.tail_bytes, cut);
  // Whole lines, then from the last back: only the lines shown are parsed.
  std::vector<std::string_view> lines;
  for (std::string_view rest(text); !rest.empty();) {
    const auto nl = rest.find('\n');
    if (nl == std::string_view::npos) break;  // a line still being written
    lines.push_back(rest.substr(0, nl));
    rest.remove_prefix(nl + 1);
  }
  for (auto it = lines.rbegin(); it != lines.rend() && out.size() < limits.queries; ++it) {
    const std::string line(*it);
    log_event e;
    if (!parse_log_event(line, e)) continue;
    const std::string event = e.value("event");
    if (event != "query" && event != "dropped") continue;
    const std::string client = e.value("client");
    int port = 0;
    if (const auto colon = client.rfind(':'); colon != std::string::npos)
      std::from_chars(client.data() + colon + 1, client.data() + client.size(), port);
    const std::string transport = e.value("transport");
    json q = {{"time", e.time},
              {"client", client},
              {"port", port},
              {"transport", transport.empty() ? "udp" : transport},
              {"answered", event == "query"},
              {"name", e.value("name")},
              {"type", e.value("type")},
              {"rcode", e.value("rcode")},
              {"answer", e.value("answer")}};
    if (!e.value("reason").empty()) q["reason"] = e.value("reason");
    out.push_back(std::move(q));
  }
  return out;
}

}  // namespace

json dns_document(const fs::path& run_dir, const dns_view_limits& limits) {
  const auto net = load_topology(run_dir / "topology.json");
  json domains = json::array();
  for (const auto& d : net.domains) domains.push_back({{"domain", d.name}, {"records", json::array()}});
  std::size_t i = 0;
  for (const auto& r : zone_records(net)) {
    // In the topology's order, three records a domain.
    while (i < net.domains.size() && net.domains[i].name != r.domain) ++i;
    if (i == net.domains.size()) break;
    domains[i]["records"].push_back(
        {{"name", r.name}, {"type", zone_type_name(r.type)}, {"ttl", net.resolver.ttl}, {"data", r.rdata}});
  }
  bool cut = false;
  json queries = latest_queries(run_dir, limits, cut);
  return {{"resolver", net.resolver.listen.to_string()},
          {"ttl", net.resolver.ttl},
          {"domains", std::move(domains)},
          {"queries_cut", cut},
          {"queries", std::move(queries)}};
}

}  // namespace mailnet::launcher::web
