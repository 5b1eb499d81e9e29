#include "launcher/dkim_keys.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/openssl_ptr.hpp"
#include "common/private_files.hpp"

namespace mailnet::launcher {

namespace {

// OpenSSL keeps its error queue per thread: each worker reads its own.
std::string ssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (!e) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + ssl_error()); }

constexpr std::size_t max_pem = 1 << 16;  // an RSA-2048 key is under 2 kB

// The key in file when it is one we can sign with, else null (a missing
// file, a link, not PEM, not RSA, too short: all made again).
pkey_ptr load_usable_key(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::symlink_status(file, ec).type() != std::filesystem::file_type::regular) return nullptr;
  const std::string pem = read_private_file(file, max_pem);  // ours, one link, no link followed
  bio_ptr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) fail("BIO_new_mem_buf");
  pkey_ptr key(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key || EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key.get()) < dkim_key_bits)
    return nullptr;
  return key;
}

std::string private_pem(EVP_PKEY* key) {
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("PEM_write_bio_PrivateKey");
  char* p = nullptr;
  const long n = BIO_get_mem_data(b.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

// RFC 6376 §3.6.1 p=: base64 of the DER SubjectPublicKeyInfo, as
// opendkim-genkey writes it and every verifier reads it.
std::string public_base64(EVP_PKEY* key) {
  const int der_size = i2d_PUBKEY(key, nullptr);
  if (der_size <= 0) fail("i2d_PUBKEY");
  std::vector<unsigned char> der(static_cast<std::size_t>(der_size));
  unsigned char* at = der.data();
  if (i2d_PUBKEY(key, &at) != der_size) fail("i2d_PUBKEY");
  std::string text(4 * ((der.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(text.data()), der.data(), der_size);
  text.resize(static_cast<std::size_t>(n));
  return text;
}

// The public key of the domain's usable key, made (and written) when needed.
std::string key_of(const std::filesystem::path& file) {
  try {
    if (auto kept = load_usable_key(file)) return public_base64(kept.get());
    pkey_ptr key(EVP_RSA_gen(static_cast<unsigned>(dkim_key_bits)));
    if (!key) fail("EVP_RSA_gen");
    // Written beside its name, then renamed: a node never reads half a key.
    auto tmp = file;
    tmp += ".tmp";
    write_private_file(tmp, private_pem(key.get()));  // 0600 whatever the umask, O_NOFOLLOW
    std::filesystem::rename(tmp, file);
    return public_base64(key.get());
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot make the DKIM key " + file.string() + ": " + e.what());
  }
}

}  // namespace

std::filesystem::path dkim_key_file(const std::filesystem::path& run_dir, const std::string& domain) {
  return run_dir / domain / "dkim.key";
}

void prepare_dkim_keys(const std::filesystem::path& run_dir, topology& net) {
  std::vector<domain_config*> signing;
  for (auto& d : net.domains)
    if (d.dns.dkim) signing.push_back(&d);
  if (signing.empty()) return;
  // Each worker takes the next domain: a kept key costs a file read, a new
  // one about a quarter of a second of one core, so a network of a thousand
  // fresh domains is dominated by this.
  std::atomic<std::size_t> next{0};
  std::mutex failure_mutex;
  std::exception_ptr failure;
  auto work = [&] {
    for (std::size_t i = next++; i < signing.size(); i = next++) {
      try {
        signing[i]->dns.dkim->public_key = key_of(dkim_key_file(run_dir, signing[i]->name));
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = signing.size();  // the others stop at their next domain
      }
    }
  };
  const std::size_t threads =
      std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, std::min<std::size_t>(signing.size(), 16));
  std::vector<std::jthread> workers;
  for (std::size_t t = 1; t < threads; ++t) workers.emplace_back(work);
  work();
  workers.clear();  // joined
  if (failure) std::rethrow_exception(failure);
}

}  // namespace mailnet::launcher
