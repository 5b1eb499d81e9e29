// SPF and DMARC through the real libraries (libspf2, libopendmarc) with a
// DNS of the test's own; the Authentication-Results: field; the trace-line
// accounting of that field. DKIM signatures are checked end to end
// (tests/e2e/test_mail_auth.py signs with dkimpy).
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "node/auth_service.hpp"
#include "node/trace_headers.hpp"

using namespace mailnet;
using namespace mailnet::node;

namespace {

// name+type → reply; a name marked down answers failure (the resolver is gone).
struct fake_dns {
  std::map<std::string, std::vector<std::string>> txt;
  bool down = false;
  int questions = 0;

  dns_lookup lookup() {
    return [this](const std::string& name, std::uint16_t type) {
      ++questions;
      dns_reply r;
      if (down) {
        r.kind = reply_kind::failure;
        r.detail = "no reply from 127.0.0.1:53 within 500 ms (3 attempts)";
        return r;
      }
      auto it = txt.find(canonical_name(name));
      if (it == txt.end()) {
        r.kind = reply_kind::nxdomain;
        return r;
      }
      if (type != dns_type::txt) {
        r.kind = reply_kind::nodata;
        return r;
      }
      r.kind = reply_kind::answer;
      r.texts = it->second;
      return r;
    };
  }
};

auth_request request(std::string ip, std::string from, const std::string& header_from) {
  static std::string message;
  message = "From: Someone <someone@" + header_from + ">\r\nSubject: hi\r\n\r\nbody\r\n";
  return {std::move(ip), "mx.example.org", std::move(from), message};
}

// Signed once with dkimpy (1024-bit key, selector "unit", d=deathstar.com); the public key below.
const char* const signed_message =
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=deathstar.com;\r\n"
    " i=@deathstar.com; q=dns/txt; s=unit; t=1796277268; h=from : to :\r\n"
    " subject : date; bh=3XIgQffHwZFBqYWVpBpu0F9UMOD33sOhvQwk7lx6Ix0=;\r\n"
    " b=ox7TLPnIdZOYUv4Dk9fn2N+cp0W9hCfOGYj7nx1OxpAb4c6n8mGmDMoaipZR5BKBEb96S\r\n"
    " qKnnIoGE67fj04+pN4OVgbi/wBjWy2uSZArqqMxCBpP2AkoYQvMlkqZ+e8vikFyUJsUTOt/\r\n"
    " jC+N1CyM0tvgkthckqBF0R1GO6zs0mE=\r\n"
    "From: Vader <vader@deathstar.com>\r\n"
    "To: rey@jaku.com\r\n"
    "Subject: plans\r\n"
    "Date: Thu, 03 Dec 2026 05:00:00 +0000\r\n"
    "\r\n"
    "The plans are in the droid.\r\n";
const char* const unit_key =
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDTe3/1w/ZMwH2u6npOBnfg"
    "1ldFdaIcmzvf9Y7x886/jFPgba2DVJyKXRTDoy6Y1b4ANvqMH5+ptACeXT8cIKZWhKA32NtdgDjFuzutJ/Yg5UEwvKMkIITUCUykl6quekb5BE7HRQ4NnotUjSd6qPquzIzbt+hGNMv0MPrV1LQuewIDAQAB";

}  // namespace

TEST_CASE("auth: DKIM through libopendkim: pass, an altered body fails, a missing key, a dead resolver") {
  fake_dns dns;
  dns.txt["deathstar.com"] = {"v=spf1 ip4:127.0.1.2 -all"};
  dns.txt["_dmarc.deathstar.com"] = {"v=DMARC1; p=reject"};
  dns.txt["unit._domainkey.deathstar.com"] = {unit_key};
  auth_checker checker(dns.lookup());
  const std::string good = signed_message;
  auth_request req{"127.0.1.9", "client.example", "vader@deathstar.com", good};
  auto r = checker.check(req);
  REQUIRE(r.dkim.size() == 1);
  CHECK(r.dkim[0].result == "pass");
  CHECK(r.dkim[0].domain == "deathstar.com");
  CHECK(r.dkim[0].selector == "unit");
  // SPF fails (127.0.1.9), but the aligned signature carries DMARC.
  CHECK(r.spf.result == "fail");
  CHECK(r.dmarc.result == "pass");
  CHECK(r.dmarc.dkim_aligned);

  std::string altered = good;
  altered.replace(altered.find("droid"), 5, "drone");
  req.message = altered;
  r = checker.check(req);
  REQUIRE(r.dkim.size() == 1);
  CHECK(r.dkim[0].result == "fail");
  CHECK(r.dmarc.result == "fail");

  dns.txt.erase("unit._domainkey.deathstar.com");
  req.message = good;
  CHECK(checker.check(req).dkim.at(0).result == "permerror");
  dns.down = true;
  CHECK(checker.check(req).dkim.at(0).result == "temperror");

  const std::string plain = "From: a@deathstar.com\r\n\r\nhi\r\n";
  req.message = plain;
  dns.down = false;
  CHECK(checker.check(req).dkim.empty());
}

TEST_CASE("auth: SPF verdicts from the records, loopback clients included") {
  fake_dns dns;
  dns.txt["jaku.com"] = {"v=spf1 ip4:127.0.1.1 ~all"};
  dns.txt["deathstar.com"] = {"v=spf1 ip4:127.0.1.2 -all"};
  dns.txt["neutral.org"] = {"v=spf1 ?all"};
  dns.txt["broken.org"] = {"v=spf1 ip4:300.1.1.1 -all"};
  dns.txt["twice.org"] = {"v=spf1 -all", "v=spf1 +all"};
  dns.txt["plain.org"] = {"just text"};
  auth_checker checker(dns.lookup());

  // libspf2's own entry point would pass every 127/8 client ("localhost"): ours asks DNS.
  CHECK(checker.check(request("127.0.1.2", "vader@deathstar.com", "deathstar.com")).spf.result == "pass");
  CHECK(checker.check(request("127.0.1.9", "vader@deathstar.com", "deathstar.com")).spf.result == "fail");
  CHECK(checker.check(request("127.0.1.9", "rey@jaku.com", "jaku.com")).spf.result == "softfail");
  CHECK(checker.check(request("127.0.1.9", "a@neutral.org", "neutral.org")).spf.result == "neutral");
  CHECK(checker.check(request("127.0.1.9", "a@plain.org", "plain.org")).spf.result == "none");
  CHECK(checker.check(request("127.0.1.9", "a@nowhere.org", "nowhere.org")).spf.result == "none");
  CHECK(checker.check(request("127.0.1.9", "a@broken.org", "broken.org")).spf.result == "permerror");
  CHECK(checker.check(request("127.0.1.9", "a@twice.org", "twice.org")).spf.result == "permerror");
  const auto checked = checker.check(request("127.0.1.2", "vader@deathstar.com", "deathstar.com")).spf;
  CHECK(checked.domain == "deathstar.com");
  CHECK(checked.identity == "mailfrom");
  dns.down = true;
  const auto down = checker.check(request("127.0.1.2", "vader@deathstar.com", "deathstar.com"));
  CHECK_MESSAGE(down.spf.result == "temperror", down.spf.detail);
  CHECK(down.dmarc.result == "temperror");
  // One question went unanswered: the check asked no more (one deadline per message, not one per question).
  dns.questions = 0;
  checker.check(request("127.0.1.2", "vader@deathstar.com", "deathstar.com"));
  CHECK(dns.questions == 1);
}

TEST_CASE("auth: SPF servers kept and reused on several threads give the verdicts of fresh ones") {
  // A pure DNS (safe on any thread): TXT and A records; names under down.test
  // are a resolver that does not answer, which ends the check's questions.
  const std::map<std::string, std::vector<std::string>> txt = {
      {"pass.test", {"v=spf1 ip4:127.0.1.2 -all"}},
      {"soft.test", {"v=spf1 ip4:127.0.1.2 ~all"}},
      {"neutral.test", {"v=spf1 ?all"}},
      {"include.test", {"v=spf1 include:pass.test -all"}},
      {"redirect.test", {"v=spf1 redirect=soft.test"}},
      {"macro.test", {"v=spf1 exists:%{l}.allowed.test -all"}},
      {"a.test", {"v=spf1 a -all"}},
      {"exp.test", {"v=spf1 ip4:127.0.1.3 -all exp=why.exp.test"}},
      {"why.exp.test", {"%{i} may not send for %{d} (%{s})"}},
      {"broken.test", {"v=spf1 ip4:300.1.1.1 -all"}},
      {"twice.test", {"v=spf1 -all", "v=spf1 +all"}},
      {"_dmarc.pass.test", {"v=DMARC1; p=reject"}},
  };
  const std::map<std::string, std::string> a = {{"rey.allowed.test", "127.0.0.2"}, {"a.test", "127.0.1.3"}};
  const dns_lookup lookup = [&](const std::string& asked, std::uint16_t type) {
    // Let the other threads' checks run in the middle of this one, as a
    // real question's wait does: servers used by two checks at once would
    // ask through each other's lookups (and their "resolver down" state).
    for (int i = 0; i < 3; ++i) std::this_thread::yield();
    const std::string name = canonical_name(asked);
    dns_reply r;
    if (name == "down.test" || name.ends_with(".down.test")) {
      r.kind = reply_kind::failure;
      r.detail = "no reply from 127.0.0.1:53 within 500 ms (3 attempts)";
      return r;
    }
    const auto t = txt.find(name);
    const auto addr = a.find(name);
    r.kind = t == txt.end() && addr == a.end() ? reply_kind::nxdomain : reply_kind::nodata;
    if (type == dns_type::txt && t != txt.end()) {
      r.kind = reply_kind::answer;
      r.texts = t->second;
    } else if (type == dns_type::a && addr != a.end()) {
      r.kind = reply_kind::answer;
      r.addresses.push_back({name, addr->second});
    }
    return r;
  };
  std::vector<std::string> messages;  // kept: a request holds a view
  std::vector<auth_request> requests;
  const char* froms[] = {"rey@pass.test", "rey@soft.test", "rey@neutral.test", "rey@include.test",
                         "rey@redirect.test", "rey@macro.test", "finn@macro.test", "rey@a.test", "rey@exp.test",
                         "rey@broken.test", "rey@twice.test", "rey@nowhere.test", "rey@down.test", "",
                         "not an address"};
  const char* helos[] = {"pass.test", "down.test", "[127.0.0.1]"};
  const char* ips[] = {"127.0.1.2", "127.0.1.3", "127.0.1.9", "::1"};
  messages.reserve(std::size(froms) * std::size(helos) * std::size(ips));
  for (const char* ip : ips)
    for (const char* helo : helos)
      for (const char* from : froms) {
        messages.push_back("From: <" + std::string(*from ? from : "x@pass.test") + ">\r\nSubject: s\r\n\r\nbody\r\n");
        requests.push_back({ip, helo, from, messages.back()});
      }

  auto same = [](const spf_verdict& x, const spf_verdict& y) {
    return x.result == y.result && x.domain == y.domain && x.identity == y.identity &&
           x.helo_result == y.helo_result && x.detail == y.detail;
  };
  std::vector<auth_results> fresh;  // each from a checker of its own: a server made for it
  for (const auto& r : requests) fresh.push_back(auth_checker(lookup).check(r));
  // The records above give every verdict, or the test says little.
  std::map<std::string, int> seen;
  for (const auto& f : fresh) ++seen[f.spf.result];
  for (const char* word : {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
    CHECK_MESSAGE(seen[word] > 0, word);

  const auth_checker shared(lookup);
  std::atomic<int> checked{0}, differed{0};
  std::mutex first_mutex;
  std::string first_difference;
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < requests.size(); ++i) {
          const std::size_t k = (i * (2 * t + 1) + t * 7) % requests.size();  // another order per thread
          const auto got = shared.check(requests[k]);
          ++checked;
          if (same(got.spf, fresh[k].spf) && got.dmarc.result == fresh[k].dmarc.result) continue;
          ++differed;
          std::lock_guard lock(first_mutex);
          if (first_difference.empty())
            first_difference = std::string(requests[k].client_ip) + " " + requests[k].helo + " <" +
                               requests[k].mail_from + ">: spf=" + got.spf.result + " (" + got.spf.detail +
                               ") dmarc=" + got.dmarc.result + ", fresh: spf=" + fresh[k].spf.result + " (" +
                               fresh[k].spf.detail + ") dmarc=" + fresh[k].dmarc.result;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(checked == static_cast<int>(4 * 3 * requests.size()));
  CHECK_MESSAGE(differed == 0, first_difference);
}

TEST_CASE("auth: the null sender is checked by its HELO name") {
  fake_dns dns;
  dns.txt["mx.example.org"] = {"v=spf1 ip4:127.0.0.5 -all"};
  auth_checker checker(dns.lookup());
  const auto r = checker.check(request("127.0.0.5", "", "example.org"));
  CHECK(r.spf.identity == "helo");
  CHECK(r.spf.domain == "mx.example.org");
  CHECK(r.spf.result == "pass");
}

TEST_CASE("auth: DMARC alignment, policies and the organizational domain") {
  fake_dns dns;
  dns.txt["deathstar.com"] = {"v=spf1 ip4:127.0.1.2 -all"};
  dns.txt["_dmarc.deathstar.com"] = {"v=DMARC1; p=reject"};
  dns.txt["jaku.com"] = {"v=spf1 ip4:127.0.1.1 -all"};
  dns.txt["_dmarc.jaku.com"] = {"v=DMARC1; p=quarantine; sp=none"};
  dns.txt["bad.org"] = {"v=spf1 -all"};
  dns.txt["_dmarc.bad.org"] = {"v=DMARC1; p=sometimes"};
  auth_checker checker(dns.lookup());

  auto pass = checker.check(request("127.0.1.2", "vader@deathstar.com", "deathstar.com"));
  CHECK(pass.dmarc.result == "pass");
  CHECK(pass.dmarc.spf_aligned);
  CHECK(pass.dmarc.policy == "reject");

  // SPF passes for jaku.com, but From says deathstar.com: not aligned.
  auto forged = checker.check(request("127.0.1.1", "rey@jaku.com", "deathstar.com"));
  CHECK(forged.spf.result == "pass");
  CHECK(forged.dmarc.result == "fail");
  CHECK_FALSE(forged.dmarc.spf_aligned);
  CHECK(forged.dmarc.policy == "reject");

  // A subdomain without a record of its own: the organizational domain's, with its sp=.
  auto sub = checker.check(request("127.0.1.9", "x@mail.jaku.com", "mail.jaku.com"));
  CHECK(sub.dmarc.record_domain == "jaku.com");
  CHECK(sub.dmarc.result == "fail");
  CHECK(sub.dmarc.policy == "none");

  auto none = checker.check(request("127.0.1.9", "x@nowhere.org", "nowhere.org"));
  CHECK(none.dmarc.result == "none");
  auto broken = checker.check(request("127.0.1.9", "x@bad.org", "bad.org"));
  CHECK(broken.dmarc.result == "permerror");

  CHECK(organizational_domain("a.b.mail.jaku.com") == "jaku.com");
  CHECK(organizational_domain("jaku.com.") == "jaku.com");
  CHECK(organizational_domain("localhost") == "localhost");
}

TEST_CASE("auth: Authentication-Results: names the node and every verdict, and counts as a trace line") {
  auth_results r;
  r.spf = {"fail", "deathstar.com", "mailfrom", "none", "127.0.1.9 is not allowed"};
  r.dkim.push_back({"pass", "deathstar.com", "mail", ""});
  r.dmarc.result = "fail";
  r.dmarc.policy = "reject";
  r.dmarc.from_domain = "deathstar.com";
  const std::string field = authentication_results_field("jaku.com", r);
  CHECK(field.starts_with("Authentication-Results: jaku.com;\r\n\tspf=fail"));
  CHECK(field.find("smtp.mailfrom=deathstar.com") != std::string::npos);
  CHECK(field.find("dkim=pass header.d=deathstar.com header.s=mail") != std::string::npos);
  CHECK(field.find("dmarc=fail (p=reject) header.from=deathstar.com") != std::string::npos);
  CHECK(field.ends_with("\r\n"));

  // Many signatures: the field stays within its bound.
  for (int i = 0; i < 40; ++i) r.dkim.push_back({"fail", "long-name-" + std::to_string(i) + ".example.org", "s", "x"});
  CHECK(authentication_results_field("jaku.com", r).size() <= max_auth_results_field);

  // Under the node's Received:, the field is one of the network's trace lines:
  // it does not count towards limits.message_size at the next hop.
  trace_info info{"deathstar.com", "127.0.1.2", "jaku.com", true, "Q1", "", std::chrono::system_clock::now(), "", false};
  header_facts facts;
  facts.has_message_id = true;
  facts.has_date = true;
  const std::string body = "Subject: x\r\n\r\nhello\r\n";
  std::string message = make_trace_headers(info, facts) + body;
  message.insert(first_field_size(message), field);
  CHECK(counted_size(message) == counted_size(body));
  // Another domain's field in that place is the sender's text, and counts.
  std::string forged = make_trace_headers(info, facts) + body;
  forged.insert(first_field_size(forged), authentication_results_field("evil.org", r));
  CHECK(counted_size(forged) > counted_size(body));
}

TEST_CASE("auth: Authentication-Results: fields in the node's own name that came with a message are removed") {
  std::string message = "Received: x\r\n"
                        "Authentication-Results: JAKU.com; dmarc=pass\r\n"
                        "Subject: hi\r\n"
                        "Authentication-Results: deathstar.com;\r\n\tdkim=pass\r\n"
                        "Authentication-Results:\r\n jaku.com; spf=pass\r\n"
                        "\r\n"
                        "Authentication-Results: jaku.com; in the body\r\n";
  CHECK(remove_auth_results_of(message, 0, "jaku.com") == 2);
  CHECK(message == "Received: x\r\n"
                   "Subject: hi\r\n"
                   "Authentication-Results: deathstar.com;\r\n\tdkim=pass\r\n"
                   "\r\n"
                   "Authentication-Results: jaku.com; in the body\r\n");
}
