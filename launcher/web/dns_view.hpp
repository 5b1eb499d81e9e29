// GET /api/v1/dns: the zone the resolver serves, from the same list of
// records the resolver builds its zone of (common/dns/zone_records.hpp) and
// the same file it reads (the run folder's topology.json); and the latest queries it answered, from the tail of
// its resolver.log (one event=query line per query). Plain files, no HTTP.
#pragma once

#include <cstddef>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace mailnet::launcher::web {

struct dns_view_limits {
  std::size_t tail_bytes = 1u << 20;  // the last 1 MiB of resolver.log
  std::size_t queries = 100;          // the latest, newest first
};

// {"resolver", "ttl", "domains": [{"domain", "records": [{"name",
// "type", "ttl", "data"}]}], "queries_cut", "queries": [{"time", "client",
// "port", "transport", "name", "type", "rcode", "answer", "answered"}]}.
// Throws std::runtime_error naming the file when topology.json cannot be read.
nlohmann::json dns_document(const std::filesystem::path& run_dir, const dns_view_limits& limits = {});

}  // namespace mailnet::launcher::web
