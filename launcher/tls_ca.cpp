#include "launcher/tls_ca.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/openssl_ptr.hpp"
#include "common/private_files.hpp"

namespace mailnet::launcher {

namespace {

constexpr long day = 24L * 3600;
constexpr long ca_days = 3650;
constexpr long node_days = 825;
constexpr long renew_before_days = 30;  // a certificate this close to its end is made again
constexpr std::size_t certificate_threads = 8;  // at most, and no more than the cores

// The last OpenSSL error, for a message.
std::string ssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (!e) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + ssl_error()); }

constexpr std::size_t max_pem = 1 << 20;  // certificates and keys are a few kB

// The file's bytes, or nullopt when there is no regular file there.
std::optional<std::string> read_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::symlink_status(file, ec).type() != std::filesystem::file_type::regular) return std::nullopt;
  return read_private_file(file, max_pem);
}

bio_ptr memory_bio(const std::string& data) {
  bio_ptr b(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!b) fail("BIO_new_mem_buf");
  return b;
}

x509_ptr load_certificate(const std::filesystem::path& file) {
  auto data = read_file(file);
  if (!data) return nullptr;
  auto b = memory_bio(*data);
  x509_ptr x(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return x;
}

pkey_ptr load_key(const std::filesystem::path& file) {
  auto data = read_file(file);
  if (!data) return nullptr;
  auto b = memory_bio(*data);
  pkey_ptr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return k;
}

std::string to_pem(X509* x) {
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), x) != 1) fail("PEM_write_bio_X509");
  char* p = nullptr;
  long n = BIO_get_mem_data(b.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

std::string to_pem(EVP_PKEY* k) {
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("PEM_write_bio_PrivateKey");
  char* p = nullptr;
  long n = BIO_get_mem_data(b.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

// Written beside its name, then renamed: a reader never sees half a file.
void write_file(const std::filesystem::path& file, const std::string& data) {
  auto tmp = file;
  tmp += ".tmp";
  write_private_file(tmp, data);
  std::filesystem::rename(tmp, file);
}

pkey_ptr new_key() {
  pkey_ptr k(EVP_EC_gen("P-256"));
  if (!k) fail("EVP_EC_gen");
  return k;
}

// Still valid for a while: not before now, not within renew_before_days of its end.
bool fresh_enough(X509* x) {
  time_t soon = time(nullptr) + renew_before_days * day;
  return X509_cmp_current_time(X509_get0_notBefore(x)) < 0 && X509_cmp_time(X509_get0_notAfter(x), &soon) > 0;
}

void add_extension(X509* issuer, X509* subject, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, subject, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) fail(std::string("extension ") + value);
  const int ok = X509_add_ext(subject, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) fail("X509_add_ext");
}

// A certificate with a random serial, valid from an hour ago for days.
x509_ptr new_certificate(EVP_PKEY* key, const std::string& common_name, long days) {
  x509_ptr x(X509_new());
  if (!x) fail("X509_new");
  X509_set_version(x.get(), 2);  // v3
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) fail("RAND_bytes");
  serial[0] &= 0x7f;  // positive
  bignum_ptr bn(BN_bin2bn(serial, sizeof serial, nullptr));  // freed also when fail() throws
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x.get()))) fail("serial number");
  if (!X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) || !X509_gmtime_adj(X509_getm_notAfter(x.get()), days * day))
    fail("certificate validity");
  if (X509_set_pubkey(x.get(), key) != 1) fail("X509_set_pubkey");
  // A common name holds at most 64 bytes (RFC 5280's upper bound); the names
  // that matter are in the subjectAltName, so a longer one is cut.
  const std::string cn = common_name.substr(0, 64);
  X509_NAME* name = X509_get_subject_name(x.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("mailnet"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1)
    fail("certificate subject");
  return x;
}

void sign(X509* x, EVP_PKEY* key) {
  if (X509_sign(x, key, EVP_sha256()) <= 0) fail("X509_sign");
}

struct authority {
  x509_ptr cert;
  pkey_ptr key;
};

authority load_or_make_ca(const std::filesystem::path& dir, const std::string& network) {
  authority ca{load_certificate(dir / "ca.pem"), load_key(dir / "ca.key")};
  if (ca.cert && ca.key && X509_check_private_key(ca.cert.get(), ca.key.get()) == 1 && fresh_enough(ca.cert.get()) &&
      X509_check_ca(ca.cert.get()) >= 1)
    return ca;
  ERR_clear_error();
  ca.key = new_key();
  ca.cert = new_certificate(ca.key.get(), "mailnet " + network + " CA", ca_days);
  X509_set_issuer_name(ca.cert.get(), X509_get_subject_name(ca.cert.get()));
  add_extension(ca.cert.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_extension(ca.cert.get(), ca.cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(ca.cert.get(), ca.cert.get(), NID_subject_key_identifier, "hash");
  sign(ca.cert.get(), ca.key.get());
  // The key first: a ca.pem without its key is made again next time.
  write_file(dir / "ca.key", to_pem(ca.key.get()));
  write_file(dir / "ca.pem", to_pem(ca.cert.get()));
  return ca;
}

bool node_certificate_fits(const std::filesystem::path& dir, const authority& ca, const domain_config& d) {
  auto cert = load_certificate(dir / ("node." + d.name + ".pem"));
  auto key = load_key(dir / ("node." + d.name + ".key"));
  if (!cert || !key) return false;
  EVP_PKEY* ca_public = X509_get0_pubkey(ca.cert.get());
  const std::string mx = "mx." + d.name;
  const bool fits = X509_check_private_key(cert.get(), key.get()) == 1 && X509_verify(cert.get(), ca_public) == 1 &&
                    X509_check_issued(ca.cert.get(), cert.get()) == X509_V_OK && fresh_enough(cert.get()) &&
                    X509_check_host(cert.get(), d.name.c_str(), d.name.size(), X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1 &&
                    X509_check_host(cert.get(), mx.c_str(), mx.size(), X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1 &&
                    X509_check_ip_asc(cert.get(), d.listen.host.c_str(), 0) == 1;
  ERR_clear_error();
  return fits;
}

void make_node_certificate(const std::filesystem::path& dir, const authority& ca, const domain_config& d) {
  auto key = new_key();
  auto cert = new_certificate(key.get(), d.name, node_days);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get()));
  const std::string san = "DNS:" + d.name + ",DNS:mx." + d.name + ",IP:" + d.listen.host;
  add_extension(ca.cert.get(), cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(ca.cert.get(), cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(ca.cert.get(), cert.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  add_extension(ca.cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  add_extension(ca.cert.get(), cert.get(), NID_authority_key_identifier, "keyid:always");
  add_extension(ca.cert.get(), cert.get(), NID_subject_alt_name, san.c_str());
  sign(cert.get(), ca.key.get());
  write_file(dir / ("node." + d.name + ".key"), to_pem(key.get()));
  write_file(dir / ("node." + d.name + ".pem"), to_pem(cert.get()));
}

// Dovecot's certificate (imap.pem, imap.key): it names the addresses it
// listens on and localhost, which is what a mail client is given to connect to.
std::vector<std::string> mail_access_names(const topology& net) {
  std::vector<std::string> san{"DNS:localhost"};
  for (const auto* at : {&net.mail_access.imap, &net.mail_access.pop3}) {
    if (!*at) continue;
    const std::string ip = "IP:" + (*at)->host;
    if (std::find(san.begin(), san.end(), ip) == san.end()) san.push_back(ip);
  }
  return san;
}

bool mail_access_certificate_fits(const std::filesystem::path& dir, const authority& ca, const topology& net) {
  auto cert = load_certificate(dir / "imap.pem");
  auto key = load_key(dir / "imap.key");
  if (!cert || !key) return false;
  bool fits = X509_check_private_key(cert.get(), key.get()) == 1 &&
              X509_verify(cert.get(), X509_get0_pubkey(ca.cert.get())) == 1 &&
              X509_check_issued(ca.cert.get(), cert.get()) == X509_V_OK && fresh_enough(cert.get()) &&
              X509_check_host(cert.get(), "localhost", 9, X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1;
  for (const auto* at : {&net.mail_access.imap, &net.mail_access.pop3})
    if (*at) fits = fits && X509_check_ip_asc(cert.get(), (*at)->host.c_str(), 0) == 1;
  ERR_clear_error();
  return fits;
}

void make_mail_access_certificate(const std::filesystem::path& dir, const authority& ca, const topology& net) {
  auto key = new_key();
  auto cert = new_certificate(key.get(), "mailnet " + net.name + " IMAP and POP3", node_days);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get()));
  std::string san;
  for (const auto& name : mail_access_names(net)) san += (san.empty() ? "" : ",") + name;
  add_extension(ca.cert.get(), cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(ca.cert.get(), cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(ca.cert.get(), cert.get(), NID_ext_key_usage, "serverAuth");
  add_extension(ca.cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  add_extension(ca.cert.get(), cert.get(), NID_authority_key_identifier, "keyid:always");
  add_extension(ca.cert.get(), cert.get(), NID_subject_alt_name, san.c_str());
  sign(cert.get(), ca.key.get());
  write_file(dir / "imap.key", to_pem(key.get()));
  write_file(dir / "imap.pem", to_pem(cert.get()));
}

}  // namespace

std::filesystem::path tls_folder(const std::filesystem::path& run_dir) { return run_dir / "tls"; }
std::filesystem::path ca_certificate(const std::filesystem::path& run_dir) { return tls_folder(run_dir) / "ca.pem"; }

void prepare_network_tls(const std::filesystem::path& run_dir, const topology& net) {
  make_private_folders(run_dir, "tls");
  const auto dir = tls_folder(run_dir);
  try {
    const auto ca = load_or_make_ca(dir, net.name);
    // Each domain's check and new certificate on one thread per core: a key
    // and a signature take a millisecond or two of CPU, so 1,000 domains took
    // seconds on one thread. No more threads than cores: the work is CPU
    // only (the files are not synced), and OpenSSL 3's shared tables are
    // locked, so extra threads only wait on those locks (8 threads on 2
    // loaded cores took 1.4x the CPU of one, median of 3 paired runs). The
    // CA's certificate and key are only read.
    std::atomic<std::size_t> next{0};
    std::mutex failure_mutex;
    std::exception_ptr failure;
    auto work = [&] {
      for (std::size_t i; (i = next++) < net.domains.size();) {
        try {
          if (!node_certificate_fits(dir, ca, net.domains[i])) make_node_certificate(dir, ca, net.domains[i]);
        } catch (...) {
          std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = net.domains.size();  // the others stop too
        }
      }
    };
    const std::size_t threads = std::min<std::size_t>(
        {certificate_threads, net.domains.size(), std::max(1u, std::thread::hardware_concurrency())});
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);
    if (net.mail_access.enabled() && !mail_access_certificate_fits(dir, ca, net)) make_mail_access_certificate(dir, ca, net);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot make the network's certificates in " + dir.string() + ": " + e.what());
  }
}

}  // namespace mailnet::launcher
