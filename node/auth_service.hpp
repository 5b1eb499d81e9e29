// Who sent this? SPF (libspf2), DKIM (libopendkim) and DMARC (libopendmarc)
// for a message received from another host, and the Authentication-Results:
// field (RFC 8601) that reports them. Every DNS question the libraries ask
// goes through one lookup function: the node's client of the network's
// resolver (no /etc/resolv.conf, no res_query). The libraries block while
// they wait for DNS, so the checks run on a small pool of threads of their
// own and the node's event loop never waits for them. No Asio here: the node
// resumes its session when done() runs (node_service.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/dns/dns_message.hpp"
#include "common/elastic_pool.hpp"

namespace mailnet::node {

// One question to the network's resolver, answered synchronously (on a
// worker thread). A reply of kind failure means "could not ask": temperror.
using dns_lookup = std::function<dns_reply(const std::string& name, std::uint16_t type)>;

struct auth_request {
  std::string client_ip;  // "127.0.1.2", "::1"
  std::string helo;       // as the client gave it
  std::string mail_from;  // empty: the null sender <>
  // As received: CRLF line ends, no dot-stuffing, none of our trace lines.
  // A view: the caller keeps the bytes until done() has run.
  std::string_view message;
};

// Results are the RFC 8601 words: pass, fail, softfail, neutral, none,
// temperror, permerror (DKIM and DMARC use the ones that apply to them).
struct spf_verdict {
  std::string result = "none";
  std::string domain;       // the identity checked: MAIL FROM's domain, or HELO for <>
  std::string identity;     // "mailfrom" or "helo"
  std::string helo_result;  // the HELO identity's own verdict ("" when HELO is no domain)
  std::string detail;       // libspf2's comment or error, readable
};

struct dkim_verdict {
  std::string result = "none";
  std::string domain;    // d=
  std::string selector;  // s=
  std::string detail;
};

struct dmarc_verdict {
  std::string result = "none";
  std::string from_domain;  // RFC5322.From's domain
  std::string policy;       // the record's policy for this domain: "none", "quarantine", "reject"; "" without one
  std::string record_domain;  // where the record was found: the From domain or its organizational domain
  bool spf_aligned = false;
  bool dkim_aligned = false;
  std::string detail;
};

struct auth_results {
  spf_verdict spf;
  std::vector<dkim_verdict> dkim;  // one per signature; empty: none
  dmarc_verdict dmarc;
  // The overall DKIM word for events and counters: pass when one signature
  // passed, else the first signature's result, "none" without any.
  std::string dkim_summary() const;
};

// "Authentication-Results: jaku.com;\r\n\tspf=pass smtp.mailfrom=...;\r\n\tdkim=...;\r\n\tdmarc=...\r\n",
// at most max_auth_results_field bytes (further DKIM signatures are left out).
std::string authentication_results_field(std::string_view authserv_id, const auth_results& r);
inline constexpr std::size_t max_auth_results_field = 1000;

// The organizational domain of a name as mailnet takes it: its last two
// labels (no public suffix list: every domain of a mailnet network is one
// registered name such as jaku.com).
std::string organizational_domain(std::string_view domain);

// Holds the libraries' handles. check() is synchronous and may be called from
// several threads at once.
class auth_checker {
 public:
  explicit auth_checker(dns_lookup lookup);
  ~auth_checker();
  auth_checker(const auth_checker&) = delete;
  auth_checker& operator=(const auth_checker&) = delete;

  auth_results check(const auth_request& req) const;

 private:
  // lookup: check()'s, which stops asking once the resolver has failed to answer.
  spf_verdict check_spf(const auth_request& req, const dns_lookup& lookup) const;
  std::vector<dkim_verdict> check_dkim(const auth_request& req, const dns_lookup& lookup) const;
  dmarc_verdict check_dmarc(const auth_request& req, const spf_verdict& spf, const std::vector<dkim_verdict>& dkim,
                            const dns_lookup& lookup) const;

  dns_lookup lookup_;
  struct libraries;
  std::unique_ptr<libraries> libs_;
};

// The checker on up to `threads` worker threads, started as checks need
// them (common/elastic_pool.hpp). submit() never blocks the caller; done
// runs on a worker thread. The destructor finishes the queued checks and
// joins the threads.
class auth_service {
 public:
  auth_service(dns_lookup lookup, unsigned threads);
  ~auth_service();
  auth_service(const auth_service&) = delete;
  auth_service& operator=(const auth_service&) = delete;

  // Throws std::system_error, with nothing queued, when no worker runs and
  // none can start (the process or memory limit).
  void submit(auth_request req, std::function<void(auth_results)> done);
  void need_thread() { pool_.need_thread(); }  // so that submit cannot throw; throws as it
  std::size_t threads() { return pool_.threads(); }

 private:
  auth_checker checker_;
  elastic_pool pool_;  // last: its threads end before the checker goes
};

}  // namespace mailnet::node
