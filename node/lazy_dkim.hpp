// The domain's DKIM signer (dkim_signer.hpp), made at the first message to
// sign, not at the node's start. Making it reads <run>/<domain>/dkim.key
// with OpenSSL, which loads OpenSSL 3's providers and key decoders, and
// opens a libopendkim library handle: about 0.26 MiB of private heap and a
// few milliseconds of CPU per node, which an idle node of a network of
// 1,000 never needs (bench/README.md, "Checks and signing at first use").
// A key that cannot be read or is not an RSA private key is told once, to
// on_problem, at that first use, and the signer stays unavailable: the mail
// goes unsigned (smtp_session.cpp logs event=dkim_unavailable for each).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace mailnet::node {

class dkim_signer;

class lazy_dkim {
 public:
  lazy_dkim(std::string domain, std::string selector, std::filesystem::path key_file,
            std::function<void(const std::string& problem)> on_problem);
  ~lazy_dkim();
  lazy_dkim(const lazy_dkim&) = delete;
  lazy_dkim& operator=(const lazy_dkim&) = delete;

  // The signer, made now if not yet; null when it cannot be made (problem()
  // says why). Safe from several threads at once: one makes it, the others
  // wait for it (the disk pool signs, so this is where the first signing
  // thread pays for it, not the event loop).
  const dkim_signer* signer();
  // Why signer() is null: "cannot use <key file>: <reason>". Set before
  // signer() returns null, never changed after.
  const std::string& problem() const { return problem_; }
  const std::string& selector() const { return selector_; }

 private:
  std::once_flag made_;
  std::string domain_;
  std::string selector_;
  std::filesystem::path key_file_;
  std::function<void(const std::string&)> on_problem_;
  std::unique_ptr<const dkim_signer> signer_;
  std::string problem_;
};

}  // namespace mailnet::node
