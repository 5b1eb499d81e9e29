// DKIM signing (RFC 6376) with libopendkim: the node signs the mail of its
// own domain that it relays, with the key `up` made in <run>/<domain>/dkim.key
// (launcher/dkim_keys.hpp), whose public half the resolver serves at
// <selector>._domainkey.<domain>. rsa-sha256, relaxed/relaxed, the header
// fields RFC 6376 §5.4.1 recommends (From, To, Subject, Date, ...) with
// Message-ID and the MIME fields, From signed once more than it appears so
// that a From added on the way breaks the signature. No canonicalization is
// written here.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace mailnet::node {

class dkim_signer {
 public:
  // key_pem: the private key as dkim.key holds it (PEM).
  dkim_signer(std::string domain, std::string selector, std::string key_pem);
  ~dkim_signer();
  dkim_signer(const dkim_signer&) = delete;
  dkim_signer& operator=(const dkim_signer&) = delete;

  struct result {
    std::string header;  // "DKIM-Signature: v=1; a=rsa-sha256; ...\r\n" (folded, CRLF), empty on failure
    std::string error;   // why there is none, for event=dkim_unavailable
  };
  // message: the wire form (CRLF line ends, not dot-stuffed), header then
  // body. id: the node's queue id, for libopendkim's own messages. Safe to
  // call from several threads at once.
  result sign(std::string_view message, const std::string& id) const;

  const std::string& selector() const { return selector_; }

 private:
  struct library;
  std::unique_ptr<library> lib_;
  std::string domain_;
  std::string selector_;
  std::string key_pem_;
};

// The domain of the message's From: address (lower case, no trailing dot),
// or empty when the header section has no From field, several, or a From
// with more than one address: the author domain of RFC 7489 §3.1.
std::string author_domain(std::string_view message);

}  // namespace mailnet::node
