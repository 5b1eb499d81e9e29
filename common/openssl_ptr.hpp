// Owning pointers for OpenSSL objects, for the files that use OpenSSL
// directly (the launcher's certificates, DKIM keys and mail client; the
// node's DKIM key check): each object freed by its own *_free, once.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>

namespace mailnet {

template <auto free_function>
struct openssl_free {
  template <typename T>
  void operator()(T* p) const {
    free_function(p);  // each of these takes a null pointer too
  }
};

using bio_ptr = std::unique_ptr<BIO, openssl_free<&BIO_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_free<&BN_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_free<&EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_free<&X509_free>>;
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, openssl_free<&SSL_CTX_free>>;
using ssl_ptr = std::unique_ptr<SSL, openssl_free<&SSL_free>>;

}  // namespace mailnet
