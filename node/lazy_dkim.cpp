#include "node/lazy_dkim.hpp"

#include <exception>

#include "common/private_files.hpp"
#include "node/dkim_signer.hpp"

namespace mailnet::node {

lazy_dkim::lazy_dkim(std::string domain, std::string selector, std::filesystem::path key_file,
                     std::function<void(const std::string&)> on_problem)
    : domain_(std::move(domain)), selector_(std::move(selector)), key_file_(std::move(key_file)),
      on_problem_(std::move(on_problem)) {}

lazy_dkim::~lazy_dkim() = default;

const dkim_signer* lazy_dkim::signer() {
  // call_once publishes signer_ and problem_ to every thread that returns
  // from it; nothing escapes the lambda, so it runs exactly once.
  std::call_once(made_, [this] {
    try {
      // The launcher made the key before starting the nodes (launcher/dkim_keys.hpp),
      // but the file may have changed since (a restarted node reads it anew).
      signer_ = std::make_unique<const dkim_signer>(domain_, selector_, read_private_file(key_file_, 1 << 16));
    } catch (const std::exception& e) {
      problem_ = "cannot use " + key_file_.string() + ": " + e.what();
      try {
        if (on_problem_) on_problem_(problem_);
      } catch (...) {  // the log could not take it: the per-message lines still say why
      }
    }
  });
  return signer_.get();
}

}  // namespace mailnet::node
