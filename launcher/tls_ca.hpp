// The network's certificate authority (run/<name>/tls/): made by `up` with
// OpenSSL's C API, kept across restarts, new with --fresh. Each node gets a
// certificate signed by it for its domain, mx.<domain> and its listen
// address; the nodes use them for STARTTLS and check one another's against
// ca.pem. Every file is 0600 and written without following a link
// (common/private_files.hpp).
#pragma once

#include <filesystem>
#include <string>

#include "common/topology.hpp"

namespace mailnet::launcher {

// Where the files are, inside a run folder.
std::filesystem::path tls_folder(const std::filesystem::path& run_dir);
std::filesystem::path ca_certificate(const std::filesystem::path& run_dir);  // tls/ca.pem
// Dovecot's certificate and key (tls/imap.pem, tls/imap.key), made when the
// topology has "imap" or "pop3": localhost and their listen addresses.
inline std::filesystem::path mail_access_certificate(const std::filesystem::path& run_dir) {
  return run_dir / "tls" / "imap.pem";
}
inline std::filesystem::path mail_access_key(const std::filesystem::path& run_dir) { return run_dir / "tls" / "imap.key"; }

// Makes what is missing: the CA (ca.pem, ca.key) when it is missing or
// unusable, and for each domain node.<domain>.pem and node.<domain>.key when
// missing, not signed by the CA, expired or not naming the domain,
// mx.<domain> and the listen address; with "imap" or "pop3", imap.pem and
// imap.key likewise (localhost and the listen addresses). What is valid is kept. Throws
// std::runtime_error naming the file on failure.
void prepare_network_tls(const std::filesystem::path& run_dir, const topology& net);

}  // namespace mailnet::launcher
