// The topology's "faults" object, read and written (used by topology.cpp).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/faults.hpp"
#include "common/json_reader.hpp"

namespace mailnet {

// Reads $.faults; domains: the network's domain names (lower case). Throws
// topology_error naming the file and the JSON path, also for rules of a kind
// that is not supported yet.
fault_settings read_faults(const json_reader& r, const nlohmann::json& j, const std::vector<std::string>& domains);

// The resolved form, read back by read_faults.
nlohmann::json faults_to_json(const fault_settings& f);

}  // namespace mailnet
