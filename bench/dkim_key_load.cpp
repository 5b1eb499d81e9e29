// What reading the DKIM signing key costs per signature, PEM against DER
// (node/dkim_signer.cpp): libopendkim reads the key it is handed for every
// signature, with PEM_read_bio_PrivateKey when the text starts with "-----",
// else (text starting "MII": base64 of DER, which it decodes) with
// d2i_PrivateKey_bio. Measures OpenSSL's readers alone and whole libopendkim
// signatures of a 4 KiB message with either form, and checks that both
// forms sign the same bytes (a fixed signing time).
//
//   g++ -std=c++20 -O2 bench/dkim_key_load.cpp -o /tmp/dkim_key_load -lopendkim -lcrypto
//   /tmp/dkim_key_load [ops per block (50)] [blocks (8)]
//
// CPU time of this thread (steadier than wall time on a shared machine),
// the cases in blocks whose order alternates, the median over blocks.
#define _Bool bool  // dkim.h is C; its _Bool is C++'s bool
#include <opendkim/dkim.h>
#undef _Bool
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace {

double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

std::string base64(const unsigned char* data, int size) {
  std::string out(4 * ((static_cast<std::size_t>(size) + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, size);
  out.resize(static_cast<std::size_t>(n));
  return out;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "dkim_key_load: %s failed\n", what);
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const int per_block = argc > 1 ? std::max(1, std::atoi(argv[1])) : 50;
  const int blocks = argc > 2 ? std::max(1, std::atoi(argv[2])) : 8;
  EVP_PKEY* key = EVP_RSA_gen(2048);  // as `up` makes them (launcher/dkim_keys.cpp)
  if (!key) fail("EVP_RSA_gen");
  BIO* out = BIO_new(BIO_s_mem());
  if (!out || PEM_write_bio_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr) != 1) fail("PEM write");
  char* pem_data = nullptr;
  const long pem_size = BIO_get_mem_data(out, &pem_data);
  const std::string pem(pem_data, static_cast<std::size_t>(pem_size));  // PKCS#8, as dkim.key holds it
  BIO_free(out);
  unsigned char* rsa_der = nullptr;  // PKCS#1 RSAPrivateKey
  const int rsa_der_size = i2d_PrivateKey(key, &rsa_der);
  PKCS8_PRIV_KEY_INFO* p8 = EVP_PKEY2PKCS8(key);
  unsigned char* p8_der = nullptr;
  const int p8_der_size = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &p8_der) : 0;
  if (rsa_der_size <= 0 || p8_der_size <= 0) fail("i2d");
  const std::string rsa_b64 = base64(rsa_der, rsa_der_size), p8_b64 = base64(p8_der, p8_der_size);

  DKIM_LIB* lib = dkim_init(nullptr, nullptr);
  std::uint64_t fixed = 1796277268;
  if (!lib || dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME, &fixed, sizeof fixed) != DKIM_STAT_OK)
    fail("dkim_init");
  std::string message = "From: Rey <rey@jaku.com>\r\nTo: vader@deathstar.com\r\nSubject: plans\r\n\r\n";
  while (message.size() < 4096) message += "The plans are in the droid; the exhaust port is two metres wide.\r\n";
  auto sign = [&](const std::string& k) {
    DKIM_STAT status = DKIM_STAT_OK;
    DKIM* d = dkim_sign(lib, reinterpret_cast<const u_char*>("bench"), nullptr,
                        reinterpret_cast<dkim_sigkey_t>(const_cast<char*>(k.c_str())),
                        reinterpret_cast<const u_char*>("mailnet"), reinterpret_cast<const u_char*>("jaku.com"),
                        DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &status);
    if (!d) fail("dkim_sign");
    std::string copy = message;
    if (dkim_chunk(d, reinterpret_cast<u_char*>(copy.data()), copy.size()) != DKIM_STAT_OK ||
        dkim_chunk(d, nullptr, 0) != DKIM_STAT_OK || dkim_eom(d, nullptr) != DKIM_STAT_OK)
      fail("signing");
    u_char* text = nullptr;
    std::size_t len = 0;
    if (dkim_getsighdr_d(d, 16, &text, &len) != DKIM_STAT_OK) fail("dkim_getsighdr_d");
    std::string header(reinterpret_cast<char*>(text), len);
    dkim_free(d);
    return header;
  };
  const std::string by_pem = sign(pem);
  std::printf("key: PEM %zu bytes; DER RSAPrivateKey %d bytes (base64 \"%.3s...\"), PKCS#8 %d (\"%.3s...\")\n",
              pem.size(), rsa_der_size, rsa_b64.c_str(), p8_der_size, p8_b64.c_str());
  std::printf("the same signature from PEM and from base64 DER: RSAPrivateKey %s, PKCS#8 %s\n",
              sign(rsa_b64) == by_pem ? "yes" : "NO", sign(p8_b64) == by_pem ? "yes" : "NO");

  auto read_bio = [](const void* data, int size, bool as_pem) {
    BIO* m = BIO_new_mem_buf(data, size);
    EVP_PKEY* k = as_pem ? PEM_read_bio_PrivateKey(m, nullptr, nullptr, nullptr) : d2i_PrivateKey_bio(m, nullptr);
    if (!k) fail("reading the key");
    EVP_PKEY_free(k);
    BIO_free(m);
  };
  const std::vector<std::pair<const char*, std::function<void()>>> cases = {
      {"PEM_read_bio_PrivateKey, PKCS#8 PEM", [&] { read_bio(pem.data(), static_cast<int>(pem.size()), true); }},
      {"d2i_PrivateKey_bio, RSAPrivateKey DER", [&] { read_bio(rsa_der, rsa_der_size, false); }},
      {"d2i_PrivateKey_bio, PKCS#8 DER", [&] { read_bio(p8_der, p8_der_size, false); }},
      {"libopendkim signature, PEM key", [&] { sign(pem); }},
      {"libopendkim signature, base64 RSAPrivateKey DER", [&] { sign(rsa_b64); }},
      {"libopendkim signature, base64 PKCS#8 DER", [&] { sign(p8_b64); }},
  };
  std::vector<std::vector<double>> us(cases.size());
  for (int b = 0; b < blocks; ++b) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const std::size_t c = b % 2 == 0 ? i : cases.size() - 1 - i;
      const double t0 = thread_cpu_us();
      for (int k = 0; k < per_block; ++k) cases[c].second();
      us[c].push_back((thread_cpu_us() - t0) / per_block);
    }
  }
  std::printf("\n| per operation (%d blocks of %d) | CPU µs median (min..max) |\n| --- | --- |\n", blocks, per_block);
  for (std::size_t c = 0; c < cases.size(); ++c) {
    auto v = us[c];
    std::sort(v.begin(), v.end());
    std::printf("| %s | %.0f (%.0f..%.0f) |\n", cases[c].first, v[v.size() / 2], v.front(), v.back());
  }
  OPENSSL_free(rsa_der);
  OPENSSL_free(p8_der);
  PKCS8_PRIV_KEY_INFO_free(p8);
  EVP_PKEY_free(key);
  dkim_close(lib);
  return 0;
}
