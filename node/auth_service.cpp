#include "node/auth_service.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

extern "C" {
#include <spf2/spf.h>
}
// dkim.h is C: its _Bool is C++'s bool (same size and ABI on every Debian target).
#define _Bool bool
#include <opendkim/dkim.h>
#undef _Bool
#include <opendmarc/dmarc.h>

namespace mailnet::node {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A value as RFC 8601 takes it after "smtp.mailfrom=" and the like: a
// domain is a token; anything else is quoted (it came from the client).
std::string property_value(std::string_view v) {
  const bool token = !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == '@' || c == '+';
  });
  if (token) return std::string(v.substr(0, 255));
  std::string out = "\"";
  for (unsigned char c : v.substr(0, 255)) {
    if (c < 0x20 || c >= 0x7f) continue;  // a header field stays plain ASCII
    if (c == '"' || c == '\\') out += '\\';
    out += static_cast<char>(c);
  }
  return out + "\"";
}

// A reason for a comment in the field: printable ASCII, no parentheses.
std::string comment_text(std::string_view v, std::size_t max = 120) {
  std::string out;
  for (unsigned char c : v.substr(0, max)) {
    if (c < 0x20 || c >= 0x7f || c == '(' || c == ')' || c == '\\') out += ' ';
    else out += static_cast<char>(c);
  }
  return out;
}

// ---- SPF: a libspf2 DNS layer that asks only the lookup function ----

SPF_dns_rr_t* spf_answer(SPF_dns_server_t* layer, const char* domain, ns_type type, SPF_dns_stat_t herrno) {
  return SPF_dns_rr_new_init(layer, domain, type, 0, herrno);
}

SPF_dns_rr_t* spf_lookup(SPF_dns_server_t* layer, const char* domain, ns_type type, int /*should_cache*/) {
  const auto& lookup = *static_cast<const dns_lookup*>(layer->hook);
  std::uint16_t asked = 0;
  switch (type) {
    case ns_t_a: asked = dns_type::a; break;
    case ns_t_aaaa: asked = dns_type::aaaa; break;
    case ns_t_mx: asked = dns_type::mx; break;
    case ns_t_txt: asked = dns_type::txt; break;
    case ns_t_ptr: asked = dns_type::ptr; break;
    default: return spf_answer(layer, domain, type, NO_DATA);  // type 99 (SPF, obsolete) and the rest
  }
  std::string name = domain ? domain : "";
  if (!is_queryable_name(name)) return spf_answer(layer, domain, type, HOST_NOT_FOUND);
  const dns_reply reply = lookup(name, asked);
  if (reply.kind == reply_kind::failure) return spf_answer(layer, domain, type, TRY_AGAIN);
  if (reply.kind == reply_kind::nxdomain) return spf_answer(layer, domain, type, HOST_NOT_FOUND);
  if (reply.kind == reply_kind::nodata) return spf_answer(layer, domain, type, NO_DATA);
  SPF_dns_rr_t* rr = SPF_dns_rr_new_init(layer, domain, type, static_cast<int>(reply.ttl), NETDB_SUCCESS);
  if (!rr) return nullptr;
  int n = 0;
  auto add = [&](std::size_t len) -> SPF_dns_rr_data_t* {
    if (n >= 100 || SPF_dns_rr_buf_realloc(rr, n, len) != SPF_E_SUCCESS) return nullptr;
    return rr->rr[n];
  };
  auto add_text = [&](const std::string& s) {
    if (auto* data = add(s.size() + 1)) {
      std::memcpy(data->txt, s.c_str(), s.size() + 1);  // txt, mx and ptr share the storage
      ++n;
    }
  };
  if (asked == dns_type::a || asked == dns_type::aaaa) {
    for (const auto& a : reply.addresses) {
      const bool v6 = a.address.find(':') != std::string::npos;
      if (v6 != (asked == dns_type::aaaa)) continue;
      auto* data = add(v6 ? sizeof(in6_addr) : sizeof(in_addr));
      if (data && inet_pton(v6 ? AF_INET6 : AF_INET, a.address.c_str(), v6 ? static_cast<void*>(&data->aaaa)
                                                                             : static_cast<void*>(&data->a)) == 1)
        ++n;
    }
  } else if (asked == dns_type::mx) {
    for (const auto& m : reply.mx) add_text(m.exchange);
  } else if (asked == dns_type::txt) {
    for (const auto& t : reply.texts) add_text(t);
  } else {
    for (const auto& p : reply.names) add_text(p);
  }
  rr->num_rr = n;
  if (n == 0) rr->herrno = NO_DATA;
  return rr;
}

const char* spf_word(SPF_result_t r) {
  switch (r) {
    case SPF_RESULT_PASS: return "pass";
    case SPF_RESULT_FAIL: return "fail";
    case SPF_RESULT_SOFTFAIL: return "softfail";
    case SPF_RESULT_NEUTRAL: return "neutral";
    case SPF_RESULT_NONE: return "none";
    case SPF_RESULT_TEMPERROR: return "temperror";
    default: return "permerror";  // PERMERROR, and INVALID: a record libspf2 could not compile
  }
}

// libspf2's SPF_request_query_mailfrom() answers "pass" for any client on
// 127.0.0.0/8 or ::1 without looking at DNS ("localhost gets a free ride").
// In mailnet every host is on loopback, so this is the same query without
// that shortcut: the library's own record lookup and evaluation
// (SPF_server_get_record, SPF_record_interpret), with the identity chosen
// as SPF_request_prepare() would.
struct spf_outcome {
  std::string result;
  std::string detail;
};

spf_outcome spf_query(SPF_server_t* server, SPF_request_t* request, bool helo_identity) {
  request->use_helo = helo_identity ? 1 : 0;
  request->cur_dom = helo_identity ? request->helo_dom : request->env_from_dp;
  SPF_response_t* response = SPF_response_new(request);
  if (!response) return {"temperror", "out of memory"};
  SPF_record_t* record = nullptr;
  SPF_errcode_t err = SPF_server_get_record(server, request, response, &record);
  if (err != SPF_E_SUCCESS) {
    if (record) SPF_record_free(record);
    SPF_i_done(response, response->result, response->reason, response->err);
  } else {
    response->spf_record_exp = record;
    err = SPF_record_interpret(record, request, response, 0);
    SPF_record_free(record);
    response->spf_record_exp = nullptr;
  }
  spf_outcome out{spf_word(SPF_response_result(response)), {}};
  // Debian's libspf2 leaves the result unset (INVALID) when the record's
  // lookup fails for a while: the error code says it was DNS.
  if (SPF_response_result(response) == SPF_RESULT_INVALID && err == SPF_E_DNS_ERROR) out.result = "temperror";
  if (const char* c = SPF_response_get_header_comment(response)) out.detail = c;
  if (SPF_response_errors(response) > 0 || (out.detail.empty() && err != SPF_E_SUCCESS)) {
    // The first error says why (a record that does not compile, a DNS failure).
    for (int i = 0; i < SPF_response_messages(response); ++i) {
      SPF_error_t* e = SPF_response_message(response, i);
      if (e && SPF_error_errorp(e)) {
        out.detail = SPF_error_message(e);
        break;
      }
    }
    if (out.detail.empty()) out.detail = SPF_strerror(err);
  }
  SPF_response_free(response);
  return out;
}

bool spf_domain_ok(std::string_view d) { return !d.empty() && is_queryable_name(d) && d.find('.') != std::string_view::npos; }

// ---- DKIM: libopendkim's key lookup through the lookup function ----

DKIM_CBSTAT dkim_key_lookup(DKIM* dkim, DKIM_SIGINFO* sig, u_char* buf, size_t buflen) {
  const auto& lookup = *static_cast<const dns_lookup*>(dkim_get_user_context(dkim));
  const char* selector = reinterpret_cast<const char*>(dkim_sig_getselector(sig));
  const char* domain = reinterpret_cast<const char*>(dkim_sig_getdomain(sig));
  if (!selector || !domain || buflen == 0) return DKIM_CBSTAT_ERROR;
  const std::string name = std::string(selector) + "._domainkey." + domain;
  if (!is_queryable_name(name)) return DKIM_CBSTAT_NOTFOUND;
  const dns_reply reply = lookup(name, dns_type::txt);
  if (reply.kind == reply_kind::failure) return DKIM_CBSTAT_TRYAGAIN;
  if (reply.kind != reply_kind::answer || reply.texts.empty()) return DKIM_CBSTAT_NOTFOUND;
  const std::string& key = reply.texts.front();
  const std::size_t n = std::min(key.size(), buflen - 1);
  std::memcpy(buf, key.data(), n);
  buf[n] = '\0';
  return DKIM_CBSTAT_CONTINUE;
}

// RFC 8601 §2.7.1 words for one signature.
std::string dkim_word(DKIM_SIGINFO* sig) {
  if (DKIM_SIG_CHECK(sig)) return "pass";
  switch (dkim_sig_geterror(sig)) {
    case DKIM_SIGERROR_KEYFAIL: return "temperror";  // the key's DNS query failed
    case DKIM_SIGERROR_NOKEY:
    case DKIM_SIGERROR_DNSSYNTAX:
    case DKIM_SIGERROR_KEYTOOSMALL: return "permerror";
    case DKIM_SIGERROR_OK:
    case DKIM_SIGERROR_BADSIG: return "fail";
    default: break;
  }
  // A body hash that does not match, or a signature that did not verify.
  if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) return "fail";
  return (dkim_sig_getflags(sig) & DKIM_SIGFLAG_PROCESSED) ? "fail" : "permerror";
}

// ---- DMARC ----

// The RFC5322.From fields of the header section: each one's value, unfolded.
std::vector<std::string> from_fields(std::string_view message) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  std::string* current = nullptr;
  while (pos < message.size()) {
    std::size_t eol = message.find('\n', pos);
    std::string_view line = message.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') {
      if (current && current->size() < 2000) *current += std::string(line);
    } else if (line.size() >= 5 && lower(line.substr(0, 5)) == "from:") {
      out.emplace_back(line.substr(5));
      current = &out.back();
    } else {
      current = nullptr;
    }
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  return out;
}

struct dmarc_record {
  enum class state { found, none, temperror } outcome = state::none;
  std::string text;
  std::string detail;
};

// _dmarc.<domain> TXT: the one record that starts with "v=DMARC1" (RFC 7489
// §6.6.3: none, or more than one, is no record).
dmarc_record fetch_dmarc(const dns_lookup& lookup, const std::string& domain) {
  const std::string name = "_dmarc." + domain;
  if (!is_queryable_name(name)) return {dmarc_record::state::none, {}, "no DMARC record name for " + domain};
  const dns_reply reply = lookup(name, dns_type::txt);
  if (reply.kind == reply_kind::failure) return {dmarc_record::state::temperror, {}, "DNS: " + reply.detail};
  std::vector<std::string> records;
  for (const auto& t : reply.texts) {
    std::string_view v(t);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    if (v.starts_with("v=DMARC1") && (v.size() == 8 || v[8] == ';' || v[8] == ' ' || v[8] == '\t'))
      records.emplace_back(t);
  }
  if (records.size() == 1) return {dmarc_record::state::found, records.front(), {}};
  if (records.size() > 1) return {dmarc_record::state::none, {}, "several DMARC records at " + name};
  return {dmarc_record::state::none, {}, "no DMARC record at " + name};
}

const char* dmarc_policy_word(int p) {
  switch (p) {
    case DMARC_RECORD_P_NONE: return "none";
    case DMARC_RECORD_P_QUARANTINE: return "quarantine";
    case DMARC_RECORD_P_REJECT: return "reject";
    default: return "";
  }
}

}  // namespace

std::string organizational_domain(std::string_view domain) {
  std::string d = lower(domain);
  while (!d.empty() && d.back() == '.') d.pop_back();
  const auto last = d.rfind('.');
  if (last == std::string::npos || last == 0) return d;
  const auto before = d.rfind('.', last - 1);
  return before == std::string::npos ? d : d.substr(before + 1);
}

std::string auth_results::dkim_summary() const {
  if (dkim.empty()) return "none";
  for (const auto& d : dkim)
    if (d.result == "pass") return "pass";
  return dkim.front().result;
}

std::string authentication_results_field(std::string_view authserv_id, const auth_results& r) {
  std::string out = "Authentication-Results: " + std::string(authserv_id) + ";\r\n\tspf=" + r.spf.result;
  if (!r.spf.detail.empty() && r.spf.result != "pass") out += " (" + comment_text(r.spf.detail, 100) + ")";
  if (!r.spf.domain.empty())
    out += (r.spf.identity == "helo" ? " smtp.helo=" : " smtp.mailfrom=") + property_value(r.spf.domain);
  std::string dkim_part;
  if (r.dkim.empty()) {
    dkim_part = ";\r\n\tdkim=none";
  } else {
    for (const auto& d : r.dkim) {
      std::string one = ";\r\n\tdkim=" + d.result;
      if (d.result != "pass" && !d.detail.empty()) one += " (" + comment_text(d.detail, 60) + ")";
      one += " header.d=" + property_value(d.domain) + " header.s=" + property_value(d.selector);
      // Room for the DMARC part (at most ~300 bytes) is kept.
      if (out.size() + dkim_part.size() + one.size() > max_auth_results_field - 320) break;
      dkim_part += one;
    }
  }
  out += dkim_part;
  out += ";\r\n\tdmarc=" + r.dmarc.result;
  if (!r.dmarc.policy.empty() || !r.dmarc.detail.empty()) {
    std::string comment = r.dmarc.policy.empty() ? comment_text(r.dmarc.detail, 100)
                                                 : "p=" + r.dmarc.policy;
    out += " (" + comment + ")";
  }
  if (!r.dmarc.from_domain.empty()) out += " header.from=" + property_value(r.dmarc.from_domain);
  out += "\r\n";
  return out;
}

namespace {

// libspf2's server with the DNS layer it asks. SPF_server_new_dns compiles
// the default explanation and local policy and calls gethostname() each time
// (a share of each check's CPU when it was made per check), so servers are
// kept and reused. libspf2 writes only the request and the response while it
// evaluates, never the server; but the layer's hook is one check's lookup,
// so a server serves one check at a time: at most as many are made as checks
// ever ran at once (the worker threads).
struct spf_server_slot {
  SPF_dns_server_t layer{};  // no destroy function: the server never frees it
  SPF_server_t* server = nullptr;
  spf_server_slot() {
    layer.lookup = spf_lookup;
    layer.name = "mailnet";
    server = SPF_server_new_dns(&layer, 0);
  }
  ~spf_server_slot() {
    if (server) SPF_server_free(server);
  }
  spf_server_slot(const spf_server_slot&) = delete;
  spf_server_slot& operator=(const spf_server_slot&) = delete;
};

}  // namespace

struct auth_checker::libraries {
  DKIM_LIB* dkim = nullptr;
  OPENDMARC_LIB_T dmarc{};
  std::mutex spf_mutex;
  std::vector<std::unique_ptr<spf_server_slot>> spf_idle;  // servers no check is using

  // A server for one check, its layer asking `lookup`; back to the idle list
  // when the lease ends (also when the check throws).
  class spf_lease {
   public:
    spf_lease(libraries& libs, const dns_lookup& lookup) : libs_(libs) {
      {
        std::lock_guard lock(libs_.spf_mutex);
        if (!libs_.spf_idle.empty()) {
          slot_ = std::move(libs_.spf_idle.back());
          libs_.spf_idle.pop_back();
        }
      }
      if (!slot_) slot_ = std::make_unique<spf_server_slot>();
      slot_->layer.hook = const_cast<dns_lookup*>(&lookup);
    }
    ~spf_lease() {
      slot_->layer.hook = nullptr;  // the lookup dies with the check
      if (!slot_->server) return;   // out of memory when it was made: not kept
      std::lock_guard lock(libs_.spf_mutex);
      libs_.spf_idle.push_back(std::move(slot_));
    }
    spf_lease(const spf_lease&) = delete;
    spf_lease& operator=(const spf_lease&) = delete;
    SPF_server_t* server() const { return slot_->server; }

   private:
    libraries& libs_;
    std::unique_ptr<spf_server_slot> slot_;
  };
};

auth_checker::auth_checker(dns_lookup lookup) : lookup_(std::move(lookup)), libs_(std::make_unique<libraries>()) {
  libs_->dkim = dkim_init(nullptr, nullptr);
  if (!libs_->dkim) throw std::runtime_error("libopendkim: dkim_init failed");
  dkim_set_key_lookup(libs_->dkim, dkim_key_lookup);
  // No public suffix list (tld_type 0): see organizational_domain().
  std::memset(&libs_->dmarc, 0, sizeof libs_->dmarc);
  opendmarc_policy_library_init(&libs_->dmarc);
}

auth_checker::~auth_checker() {
  opendmarc_policy_library_shutdown(&libs_->dmarc);
  dkim_close(libs_->dkim);
}

spf_verdict auth_checker::check_spf(const auth_request& req, const dns_lookup& lookup) const {
  spf_verdict v;
  const libraries::spf_lease lease(*libs_, lookup);
  SPF_server_t* server = lease.server();
  if (!server) {
    v.result = "temperror";
    v.detail = "libspf2: out of memory";
    return v;
  }
  SPF_request_t* request = SPF_request_new(server);
  const bool v6 = req.client_ip.find(':') != std::string::npos;
  const SPF_errcode_t ip_err = v6 ? SPF_request_set_ipv6_str(request, req.client_ip.c_str())
                                  : SPF_request_set_ipv4_str(request, req.client_ip.c_str());
  const std::string helo = lower(req.helo);
  const bool helo_ok = spf_domain_ok(helo);
  if (ip_err != SPF_E_SUCCESS) {
    v.result = "permerror";
    v.detail = "client address " + req.client_ip + " not understood";
  } else {
    if (helo_ok) SPF_request_set_helo_dom(request, helo.c_str());
    // RFC 7208 §2.4: for the null sender, the HELO identity is the one checked.
    const auto at = req.mail_from.rfind('@');
    const std::string from_domain = at == std::string::npos ? std::string{} : lower(req.mail_from.substr(at + 1));
    if (helo_ok) v.helo_result = spf_query(server, request, true).result;
    if (!req.mail_from.empty() && spf_domain_ok(from_domain)) {
      SPF_request_set_env_from(request, req.mail_from.c_str());
      v.identity = "mailfrom";
      v.domain = from_domain;
      auto o = spf_query(server, request, false);
      v.result = o.result;
      v.detail = o.detail;
    } else if (req.mail_from.empty() && helo_ok) {
      v.identity = "helo";
      v.domain = helo;
      v.result = v.helo_result;
    } else {
      v.result = "none";
      v.detail = req.mail_from.empty() ? "null sender and no domain in HELO" : "no domain to check in MAIL FROM";
    }
  }
  SPF_request_free(request);
  return v;
}

std::vector<dkim_verdict> auth_checker::check_dkim(const auth_request& req, const dns_lookup& lookup) const {
  std::vector<dkim_verdict> out;
  DKIM_STAT status = DKIM_STAT_OK;
  DKIM* dkim = dkim_verify(libs_->dkim, reinterpret_cast<const u_char*>("mailnet"), nullptr, &status);
  if (!dkim) {
    out.push_back({"temperror", "", "", std::string("libopendkim: ") + dkim_getresultstr(status)});
    return out;
  }
  dkim_set_user_context(dkim, const_cast<dns_lookup*>(&lookup));
  // dkim_chunk takes the message as it came (CRLF line ends) and finds the
  // header's end itself; it copies what it keeps and never writes to buf.
  auto* bytes = reinterpret_cast<u_char*>(const_cast<char*>(req.message.data()));
  status = dkim_chunk(dkim, bytes, req.message.size());
  if (status == DKIM_STAT_OK) status = dkim_chunk(dkim, nullptr, 0);
  if (status == DKIM_STAT_OK) status = dkim_eom(dkim, nullptr);
  DKIM_SIGINFO** sigs = nullptr;
  int nsigs = 0;
  if (status != DKIM_STAT_NOSIG && dkim_getsiglist(dkim, &sigs, &nsigs) == DKIM_STAT_OK) {
    for (int i = 0; i < nsigs && i < 10; ++i) {
      DKIM_SIGINFO* sig = sigs[i];
      dkim_verdict v;
      if (const u_char* d = dkim_sig_getdomain(sig)) v.domain = lower(reinterpret_cast<const char*>(d));
      if (const u_char* s = dkim_sig_getselector(sig)) v.selector = reinterpret_cast<const char*>(s);
      v.result = dkim_word(sig);
      if (v.result != "pass") {
        const int e = dkim_sig_geterror(sig);
        if (e != DKIM_SIGERROR_OK) v.detail = dkim_sig_geterrorstr(e);
        else if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) v.detail = "body hash mismatch (the body was altered)";
        else v.detail = "signature did not verify";
      }
      out.push_back(std::move(v));
    }
  }
  if (out.empty() && status != DKIM_STAT_NOSIG && status != DKIM_STAT_OK) {
    // A signature was there but could not be taken apart at all.
    dkim_verdict v;
    v.result = status == DKIM_STAT_CBTRYAGAIN ? "temperror" : "permerror";
    v.detail = dkim_getresultstr(status);
    out.push_back(std::move(v));
  }
  dkim_free(dkim);
  return out;
}

dmarc_verdict auth_checker::check_dmarc(const auth_request& req, const spf_verdict& spf,
                                        const std::vector<dkim_verdict>& dkim, const dns_lookup& lookup) const {
  dmarc_verdict v;
  const auto froms = from_fields(req.message);
  if (froms.size() != 1) {
    v.result = froms.empty() ? "none" : "permerror";
    v.detail = froms.empty() ? "no From: field" : "several From: fields";
    return v;
  }
  {
    // The address's domain as libopendkim's address parser finds it.
    std::string value = froms.front();
    value.push_back('\0');
    u_char* user = nullptr;
    u_char* domain = nullptr;
    if (dkim_mail_parse(reinterpret_cast<u_char*>(value.data()), &user, &domain) == 0 && domain && *domain)
      v.from_domain = lower(reinterpret_cast<const char*>(domain));
  }
  if (v.from_domain.empty() || !is_queryable_name(v.from_domain)) {
    v.result = "permerror";
    v.detail = "no domain in the From: field";
    v.from_domain.clear();
    return v;
  }
  dmarc_record record = fetch_dmarc(lookup, v.from_domain);
  v.record_domain = v.from_domain;
  const std::string org = organizational_domain(v.from_domain);
  if (record.outcome == dmarc_record::state::none && org != v.from_domain) {
    record = fetch_dmarc(lookup, org);
    v.record_domain = org;
  }
  if (record.outcome != dmarc_record::state::found) {
    v.result = record.outcome == dmarc_record::state::temperror ? "temperror" : "none";
    v.detail = record.detail;
    v.record_domain.clear();
    return v;
  }
  const bool v6 = req.client_ip.find(':') != std::string::npos;
  std::string ip = req.client_ip;
  DMARC_POLICY_T* ctx = opendmarc_policy_connect_init(reinterpret_cast<u_char*>(ip.data()),
                                                      v6 ? DMARC_POLICY_IP_TYPE_IPV6 : DMARC_POLICY_IP_TYPE_IPV4);
  if (!ctx) {
    v.result = "temperror";
    v.detail = "libopendmarc: out of memory";
    return v;
  }
  std::string from = v.from_domain;
  std::string text = record.text;
  std::string org_copy = org;
  opendmarc_policy_store_from_domain(ctx, reinterpret_cast<u_char*>(from.data()));
  const OPENDMARC_STATUS_T parsed =
      opendmarc_policy_store_dmarc(ctx, reinterpret_cast<u_char*>(text.data()), reinterpret_cast<u_char*>(from.data()),
                                   v.record_domain == v.from_domain ? nullptr : reinterpret_cast<u_char*>(org_copy.data()));
  if (parsed != DMARC_PARSE_OKAY) {
    opendmarc_policy_connect_shutdown(ctx);
    v.result = "permerror";
    v.detail = "the DMARC record of " + v.record_domain + " does not parse";
    return v;
  }
  if (!spf.domain.empty()) {
    int outcome = DMARC_POLICY_SPF_OUTCOME_NONE;
    if (spf.result == "pass") outcome = DMARC_POLICY_SPF_OUTCOME_PASS;
    else if (spf.result == "fail" || spf.result == "softfail") outcome = DMARC_POLICY_SPF_OUTCOME_FAIL;
    else if (spf.result == "temperror") outcome = DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    std::string d = spf.domain;
    std::string human = spf.result;
    opendmarc_policy_store_spf(ctx, reinterpret_cast<u_char*>(d.data()), outcome,
                               spf.identity == "helo" ? DMARC_POLICY_SPF_ORIGIN_HELO : DMARC_POLICY_SPF_ORIGIN_MAILFROM,
                               reinterpret_cast<u_char*>(human.data()));
  }
  bool temporary = spf.result == "temperror";
  for (const auto& k : dkim) {
    if (k.domain.empty()) continue;
    int outcome = DMARC_POLICY_DKIM_OUTCOME_FAIL;
    if (k.result == "pass") outcome = DMARC_POLICY_DKIM_OUTCOME_PASS;
    else if (k.result == "temperror") outcome = DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
    else if (k.result == "none") outcome = DMARC_POLICY_DKIM_OUTCOME_NONE;
    temporary = temporary || k.result == "temperror";
    std::string d = k.domain, s = k.selector, human = k.result;
    opendmarc_policy_store_dkim(ctx, reinterpret_cast<u_char*>(d.data()), reinterpret_cast<u_char*>(s.data()), outcome,
                                reinterpret_cast<u_char*>(human.data()));
  }
  const OPENDMARC_STATUS_T policy = opendmarc_get_policy_to_enforce(ctx);
  int dkim_alignment = 0, spf_alignment = 0;
  opendmarc_policy_fetch_alignment(ctx, &dkim_alignment, &spf_alignment);
  v.dkim_aligned = dkim_alignment == DMARC_POLICY_DKIM_ALIGNMENT_PASS;
  v.spf_aligned = spf_alignment == DMARC_POLICY_SPF_ALIGNMENT_PASS;
  int p = 0;
  if (v.record_domain != v.from_domain) opendmarc_policy_fetch_sp(ctx, &p);
  if (dmarc_policy_word(p)[0] == '\0') opendmarc_policy_fetch_p(ctx, &p);
  v.policy = dmarc_policy_word(p);
  opendmarc_policy_connect_shutdown(ctx);
  switch (policy) {
    case DMARC_POLICY_PASS: v.result = "pass"; break;
    case DMARC_POLICY_REJECT:
    case DMARC_POLICY_QUARANTINE:
    case DMARC_POLICY_NONE:
      // Not aligned: a fail, unless a check could not be made now (RFC 7489 §6.6.2: temperror).
      v.result = temporary ? "temperror" : "fail";
      v.detail = std::string(v.spf_aligned ? "" : "SPF not aligned") +
                 (v.spf_aligned || v.dkim_aligned ? "" : ", ") + (v.dkim_aligned ? "" : "DKIM not aligned");
      break;
    default:
      v.result = "none";
      v.detail = "no DMARC policy";
      break;
  }
  return v;
}

auth_results auth_checker::check(const auth_request& req) const {
  // Once the resolver has not answered one question, the check's others get
  // the same answer at once: a dead resolver costs a message one deadline
  // (resolver.timeout × attempts), not one per question, before its 250.
  bool resolver_failed = false;
  std::string why;
  const dns_lookup lookup = [&](const std::string& name, std::uint16_t type) {
    if (resolver_failed) {
      dns_reply r;
      r.kind = reply_kind::failure;
      r.detail = why;
      return r;
    }
    dns_reply r = lookup_(name, type);
    // Unreachable, not a SERVFAIL for one name: the resolver client's
    // "no reply ... (3 attempts)", or the node's own wait that ran out.
    const bool unreachable = r.detail.find(" attempt") != std::string::npos ||
                             r.detail.find("resolver client") != std::string::npos ||
                             r.detail == "the node is stopping";
    if (r.kind == reply_kind::failure && unreachable) {
      resolver_failed = true;
      why = r.detail;
    }
    return r;
  };
  auth_results r;
  r.spf = check_spf(req, lookup);
  r.dkim = check_dkim(req, lookup);
  r.dmarc = check_dmarc(req, r.spf, r.dkim, lookup);
  return r;
}

auth_service::auth_service(dns_lookup lookup, unsigned threads)
    : checker_(std::move(lookup)), pool_(threads) {}

auth_service::~auth_service() { pool_.join(); }

void auth_service::submit(auth_request req, std::function<void(auth_results)> done) {
  pool_.post([this, req = std::move(req), done = std::move(done)] {
    auth_results r;
    try {
      r = checker_.check(req);
    } catch (const std::exception& e) {  // out of memory and the like: a worker must not die
      r.spf.result = "temperror";
      r.spf.detail = e.what();
      r.dmarc.result = "temperror";
    }
    done(std::move(r));
  });
}

}  // namespace mailnet::node
