// The domains' DKIM keys: run/<name>/<domain>/dkim.key, an RSA-2048 key
// made by `up` with OpenSSL's C API, kept across restarts, new with --fresh
// (which empties the folder). The node signs with it; the resolver serves
// its public half at <selector>._domainkey.<domain>, which reaches it in the
// resolved topology (dkim_settings::public_key).
#pragma once

#include <filesystem>
#include <string>

#include "common/topology.hpp"

namespace mailnet::launcher {

inline constexpr int dkim_key_bits = 2048;

// <run>/<domain>/dkim.key
std::filesystem::path dkim_key_file(const std::filesystem::path& run_dir, const std::string& domain);

// For each domain with "dkim" on: keeps its dkim.key when it is an RSA key
// of at least dkim_key_bits, else makes one (0600, no link followed, written
// beside and renamed), and writes the public key into net. The keys to make
// are made on several threads at once (about a quarter of a second of CPU
// each). The domains' folders must exist. Throws std::runtime_error naming
// the file on failure.
void prepare_dkim_keys(const std::filesystem::path& run_dir, topology& net);

}  // namespace mailnet::launcher
