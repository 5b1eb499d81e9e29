#include "launcher/graph.hpp"

#include <fstream>
#include <map>

#include "common/terminal_text.hpp"

namespace mailnet::launcher {

namespace {

// The value of key=value in a node.log line (quoted values unquoted, escapes kept).
std::string field(const std::string& line, const std::string& key) {
  auto pos = line.find(" " + key + "=");
  if (pos == std::string::npos) return {};
  pos += key.size() + 2;
  if (pos < line.size() && line[pos] == '"') {
    auto end = line.find('"', pos + 1);
    return line.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
  }
  return line.substr(pos, line.find(' ', pos) - pos);
}

std::string users_text(const domain_config& d) {
  std::string out;
  for (const auto& u : d.users) out += (out.empty() ? "" : ", ") + u;
  return out;
}

}  // namespace

std::vector<relay_count> relay_counts_from_logs(const std::filesystem::path& run_dir, const topology& net) {
  std::map<std::pair<std::string, std::string>, std::size_t> counts;
  for (const auto& d : net.domains) {
    std::ifstream log(run_dir / d.name / "node.log");
    std::string line;
    while (std::getline(log, line)) {
      if (field(line, "event") != "relay_attempt") continue;  // the line's own event: its first one
      if (field(line, "reply").rfind("2", 0) != 0) continue;
      ++counts[{d.name, field(line, "domain")}];
    }
  }
  std::vector<relay_count> out;
  for (const auto& [edge, n] : counts) out.push_back({edge.first, edge.second, n});
  return out;
}

std::string render_graph(const topology& net, const std::vector<relay_count>& counts, graph_format format) {
  std::string out;
  const std::string resolver_label = "resolver\\n" + net.resolver.listen.to_string();
  if (format == graph_format::dot) {
    out += "digraph \"" + net.name + "\" {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n";
    out += "  \"resolver\" [shape=ellipse, label=\"" + resolver_label + "\"];\n";
    for (const auto& d : net.domains)
      out += "  \"" + d.name + "\" [label=\"" + d.name + "\\n" + d.listen.to_string() + "\\n" + users_text(d) + "\"];\n";
    for (const auto& d : net.domains) out += "  \"" + d.name + "\" -> \"resolver\" [style=dotted, arrowhead=none];\n";
    for (const auto& c : counts)
      out += "  \"" + c.from + "\" -> \"" + terminal_safe(c.to) + "\" [label=\"" + std::to_string(c.messages) +
             "\"];\n";  // c.to comes from a log: any domain a client named
    out += "}\n";
    return out;
  }
  // Mermaid: ids must be plain words, labels carry the names.
  std::map<std::string, std::string> ids;
  for (std::size_t i = 0; i < net.domains.size(); ++i) ids[net.domains[i].name] = "n" + std::to_string(i);
  out += "graph LR\n";
  out += "  resolver([\"resolver<br/>" + net.resolver.listen.to_string() + "\"])\n";
  for (const auto& d : net.domains)
    out += "  " + ids[d.name] + "[\"" + d.name + "<br/>" + d.listen.to_string() + "<br/>" + users_text(d) + "\"]\n";
  for (const auto& d : net.domains) out += "  " + ids[d.name] + " -.- resolver\n";
  for (const auto& c : counts)
    if (ids.count(c.from) && ids.count(c.to))
      out += "  " + ids[c.from] + " -->|" + std::to_string(c.messages) + "| " + ids[c.to] + "\n";
  return out;
}

}  // namespace mailnet::launcher
