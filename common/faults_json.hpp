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

// One rule at path ("$" for a rule given on its own, "$.steps[2].fault" in a
// scenario): the checks read_faults makes of each rule of a topology, with
// errors that name the path. Throws topology_error.
fault_rule read_fault_rule(const json_reader& r, const nlohmann::json& j, const std::string& path,
                           const std::vector<std::string>& domains);

// One rule in the resolved form (read back by read_fault_rule).
nlohmann::json fault_rule_to_json(const fault_rule& rule);

// The resolved form, read back by read_faults.
nlohmann::json faults_to_json(const fault_settings& f);

}  // namespace mailnet
