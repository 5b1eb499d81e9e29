// The topology model: what a network is made of, with every default filled in.
// Parsing validates the whole document and reports the first problem with the
// file name, the JSON path and what was expected.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/faults.hpp"

namespace mailnet {

using millis = std::chrono::milliseconds;

struct endpoint {
  std::string host;  // a loopback address literal: 127.0.0.0/8 or ::1
  std::uint16_t port = 0;

  std::string to_string() const;  // "127.0.0.1:1025", "[::1]:1025"
  friend bool operator==(const endpoint&, const endpoint&) = default;
};

struct retry_policy {
  millis first{1000};
  millis max{30000};
  millis give_up_after{600000};
  friend bool operator==(const retry_policy&, const retry_policy&) = default;
};

// RFC 5321 §4.5.3.1 sizes and Postfix-like defaults.
struct limits {
  std::uint64_t message_size = 10485760;
  std::size_t recipients = 100;
  std::size_t command_line = 512;
  std::size_t text_line = 1000;
  std::size_t connections = 200;
  std::size_t errors = 20;
  std::size_t received_headers = 50;
  // Connections the relay opens to one destination at once, like Postfix's
  // default_destination_concurrency_limit; more mail for it waits its turn.
  std::size_t relay_connections_per_destination = 20;
  friend bool operator==(const limits&, const limits&) = default;
};

// RFC 5321 §4.5.3.2 timeouts (a scenario can shorten them).
struct timeouts {
  millis idle{300000};        // for the next command to begin (RFC 5321 §4.5.3.2.7: 5 minutes)
  millis command{300000};     // to receive one whole command line once it began (a trickle does not reset it)
  millis data_block{180000};  // between two reads inside DATA
  millis data{600000};        // the whole DATA phase
  millis greeting_pause{0};   // wait before the 220; a client that talks first is refused
  millis relay_connect{10000};
  millis relay_reply{60000};
  friend bool operator==(const timeouts&, const timeouts&) = default;
};

// STARTTLS on the node's own port (RFC 3207): offered, demanded before MAIL, or not offered.
enum class tls_policy { optional, required, off };
// What the relay asks of a peer: STARTTLS and a certificate from the
// network's CA naming the domain (else 4.7.5, retried), STARTTLS when
// offered without checking the certificate, or plain text.
enum class tls_relay_policy { verify, opportunistic, off };
// SPF, DKIM and DMARC checks on mail from other hosts (node/auth_service.hpp):
// report (the Authentication-Results: header only), enforce (DMARC p=reject
// refused with 550 5.7.1, p=quarantine delivered into .Junk) or off (no
// checks, no header).
enum class dmarc_policy { report, enforce, off };

struct policy {
  bool require_known_users = true;
  bool mailbox_by_local_part = false;
  bool require_helo_domain_match = false;
  // Forward-confirmed reverse DNS: a client whose address has no PTR record,
  // or whose PTR names do not resolve back to it, gets 550 5.7.25 at MAIL.
  bool require_fcrdns = false;
  // How a batch of new messages is made durable before their 250s:
  // "filesystem" (one syncfs of the file system holding the output folder:
  // the fastest, but it also flushes whatever else is being written there)
  // or "files" (an fsync of each file and folder).
  bool sync_whole_filesystem = true;
  tls_policy tls = tls_policy::optional;
  tls_relay_policy tls_relay = tls_relay_policy::verify;
  dmarc_policy dmarc = dmarc_policy::report;
  friend bool operator==(const policy&, const policy&) = default;
};

struct resolver_settings {
  endpoint listen{"127.0.0.1", 5353};
  millis query_timeout{500};
  int query_attempts = 3;
  // Seconds the nodes may keep a resolver answer (the records' TTL, and the
  // SOA minimum for "no such domain"); 0: never cached.
  std::uint32_t ttl = 5;
  bool restart_on_failure = false;  // "restart": "on-failure"
  friend bool operator==(const resolver_settings&, const resolver_settings&) = default;
};

// The launcher's HTTP server (the dashboard and its API); "web": false turns it off.
struct web_settings {
  bool enabled = true;
  endpoint listen{"127.0.0.1", 8025};
  std::string url() const { return "http://" + listen.to_string() + "/"; }
  friend bool operator==(const web_settings&, const web_settings&) = default;
};

// One record a domain adds to what the resolver serves ("dns": {"records": [...]}).
struct dns_record {
  std::string name;   // lower case, no trailing dot: the domain itself or a name under it
  std::string type;   // "TXT", "A", "AAAA", "MX", "CNAME"
  std::string value;  // TXT: the text (split into 255-byte strings when served);
                      // A/AAAA: a loopback address; MX: "10 mx.example.com"; CNAME: a name
  friend bool operator==(const dns_record&, const dns_record&) = default;
};

struct dns_settings {
  std::vector<dns_record> records;
  friend bool operator==(const dns_settings&, const dns_settings&) = default;
};

struct domain_config {
  std::string name;  // lower case, no trailing dot
  endpoint listen;
  struct dns_settings dns;
  std::vector<std::string> users;  // as written in the topology
  // Passwords written in the topology ({"name": "finn", "password": "..."}),
  // by user name as in users; the others get a generated one
  // (common/passwords.hpp).
  std::map<std::string, std::string> passwords;
  // "submission": a second listener that requires STARTTLS then AUTH before
  // MAIL and relays for the domain's own users (README: Submission).
  std::optional<endpoint> submission;
  retry_policy retry;
  struct limits limits;
  struct timeouts timeouts;
  struct policy policy;
  bool restart_on_failure = false;  // "restart": "on-failure": the launcher respawns it after a crash

  // The configured user whose mailbox receives mail for local_part, if any
  // (local parts are compared without regard to case).
  std::optional<std::string> find_user(std::string_view local_part) const;
  friend bool operator==(const domain_config&, const domain_config&) = default;
};

struct topology {
  std::string name;  // also the run folder's name: [A-Za-z0-9._-]+
  resolver_settings resolver;
  web_settings web;
  // "tls": false: no certificate authority, no certificates, no STARTTLS.
  bool tls = true;
  std::vector<domain_config> domains;
  fault_settings faults;  // "faults": failures on purpose (common/faults.hpp)

  const domain_config* find_domain(std::string_view domain) const;  // case-insensitive
  friend bool operator==(const topology&, const topology&) = default;
};

// Thrown for any invalid topology; what() is the whole user-facing message,
// e.g. "topo.json: $.domains[1].listen: expected \"host:port\" with a loopback host".
class topology_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

topology parse_topology(std::string_view json_text, std::string_view file_name);

// The file's text; topology_error naming the file when it cannot be read.
std::string read_topology_file(const std::filesystem::path& file);

topology load_topology(const std::filesystem::path& file);

// The resolved topology, every default written out (network.json, node input).
std::string to_json_text(const topology& t);

std::string_view to_string(tls_policy p);
std::string_view to_string(tls_relay_policy p);
std::string_view to_string(dmarc_policy p);

// "1500ms", "2s", "5m", "1h"; a bare number means seconds. nullopt if malformed.
std::optional<millis> parse_duration(std::string_view text);

bool is_valid_domain_name(std::string_view name);
bool is_valid_user_name(std::string_view name);  // letters, digits, . _ - +; no leading dot, no ".."
// A password of the topology: 1 to 128 printable ASCII characters (space
// included) but ':' (the passwords file is in Dovecot's passwd-file form).
bool is_valid_password(std::string_view password);
bool is_loopback_host(std::string_view host);
// A DNS owner name: labels of letters, digits, '-' and '_' (as in
// _dmarc.jaku.com), at most 63 octets each, 253 in all.
bool is_valid_record_name(std::string_view name);
// "2.0.0.127.in-addr.arpa." for "127.0.0.2", the ip6.arpa nibble name for an
// IPv6 address (RFC 3596 §2.5); empty when address is not an address literal.
std::string reverse_dns_name(std::string_view address);
// An address literal in its usual text form (inet_ntop's), or host unchanged
// when it is not one.
std::string canonical_host(std::string_view host);

// A domain with this name would be a folder beside the run folder's own
// files (topology.json, mailnet.sock, ...) or the resolver's folder.
bool is_run_folder_entry(std::string_view lower_case_name);

}  // namespace mailnet
