#include "node/dkim_signer.hpp"

// libopendkim's header is C (its own extern "C") and spells bool as C99's
// _Bool, which C++ does not have: the same type under its C++ name.
#define _Bool bool
#include <opendkim/dkim.h>
#undef _Bool

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "common/mail/mime_comments.hpp"
#include "common/openssl_ptr.hpp"

namespace mailnet::node {

namespace {

bool is_field(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  return std::equal(name.begin(), name.end(), line.begin(),
                    [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b)); });
}

// The header section's fields, each with its folded lines and without its
// final CRLF; body_start: where the body begins (after the empty line).
std::vector<std::string_view> header_fields(std::string_view message, std::size_t& body_start) {
  std::vector<std::string_view> fields;
  std::size_t pos = 0;
  body_start = message.size();
  while (pos < message.size()) {
    std::size_t eol = message.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = message.size();
    if (eol == pos) {  // the empty line
      body_start = std::min(message.size(), pos + 2);
      break;
    }
    if ((message[pos] == ' ' || message[pos] == '\t') && !fields.empty()) {
      const char* first = fields.back().data();
      fields.back() = std::string_view(first, static_cast<std::size_t>(message.data() + eol - first));  // a folded line
    } else {
      fields.push_back(message.substr(pos, eol - pos));
    }
    pos = eol + 2;
  }
  return fields;
}

// The signature header as libopendkim folds it, with CRLF line ends.
std::string with_crlf(const unsigned char* text, std::size_t len) {
  std::string out;
  out.reserve(len + 16);
  for (std::size_t i = 0; i < len; ++i) {
    const char c = static_cast<char>(text[i]);
    if (c == '\r') continue;
    if (c == '\n') out += "\r\n";
    else out += c;
  }
  return out;
}

u_char* name_list(const char* name) { return reinterpret_cast<u_char*>(const_cast<char*>(name)); }

// RFC 6376 §5.4.1's list (libopendkim's dkim_should_signhdrs), with the
// Message-ID and the MIME fields that shape the body, which it leaves out.
u_char* signed_fields[] = {
    name_list("from"),          name_list("reply-to"),     name_list("subject"),      name_list("date"),
    name_list("to"),            name_list("cc"),           name_list("message-id"),   name_list("mime-version"),
    name_list("content-type"),  name_list("content-transfer-encoding"),               name_list("resent-date"),
    name_list("resent-from"),   name_list("resent-to"),    name_list("resent-cc"),    name_list("in-reply-to"),
    name_list("references"),    name_list("list-id"),      name_list("list-help"),    name_list("list-unsubscribe"),
    name_list("list-subscribe"), name_list("list-post"),   name_list("list-owner"),   name_list("list-archive"),
    nullptr};
// From once more than it appears (§8.15): a From added after signing breaks it.
u_char* oversigned[] = {name_list("from"), nullptr};

}  // namespace

struct dkim_signer::library {
  DKIM_LIB* handle = nullptr;
  ~library() {
    if (handle) dkim_close(handle);
  }
};

namespace {

// The key is read once here with OpenSSL, so that a file that is not an RSA
// private key is reported when the node starts, and libopendkim never meets
// it: its own reading of a bad key loses memory on the way out (64 bytes in
// dkim_privkey_load per message, seen by LeakSanitizer).
void check_rsa_key(const std::string& pem) {
  bio_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) throw std::runtime_error("out of memory reading the key");
  pkey_ptr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    char text[256] = "unknown error";
    if (e) ERR_error_string_n(e, text, sizeof text);
    throw std::runtime_error(std::string("not a PEM private key (") + text + ")");
  }
  if (EVP_PKEY_base_id(key.get()) != EVP_PKEY_RSA)
    throw std::runtime_error("not an RSA key (rsa-sha256 signs with RSA only)");
}

}  // namespace

dkim_signer::dkim_signer(std::string domain, std::string selector, std::string key_pem)
    : lib_(std::make_unique<library>()), domain_(std::move(domain)), selector_(std::move(selector)),
      key_pem_(std::move(key_pem)) {
  check_rsa_key(key_pem_);
  lib_->handle = dkim_init(nullptr, nullptr);
  if (!lib_->handle) throw std::runtime_error("dkim_init failed");
  // Without a list libopendkim signs every field (Received too); with it,
  // only these.
  if (dkim_options(lib_->handle, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, signed_fields, sizeof(u_char**)) != DKIM_STAT_OK ||
      dkim_options(lib_->handle, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, oversigned, sizeof(u_char**)) != DKIM_STAT_OK)
    throw std::runtime_error("dkim_options failed");
}

dkim_signer::~dkim_signer() = default;

dkim_signer::result dkim_signer::sign(std::string_view message, const std::string& id) const {
  DKIM_STAT status = DKIM_STAT_OK;
  DKIM* dkim = dkim_sign(lib_->handle, reinterpret_cast<const u_char*>(id.c_str()), nullptr,
                         reinterpret_cast<dkim_sigkey_t>(const_cast<char*>(key_pem_.c_str())),
                         reinterpret_cast<const u_char*>(selector_.c_str()),
                         reinterpret_cast<const u_char*>(domain_.c_str()), DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
                         DKIM_SIGN_RSASHA256, -1, &status);
  if (!dkim) return {"", std::string("dkim_sign: ") + dkim_getresultstr(status)};
  struct closer {
    DKIM* d;
    ~closer() { dkim_free(d); }
  } owner{dkim};
  auto failed = [&](const char* step, DKIM_STAT st) {
    const char* detail = dkim_geterror(dkim);
    return result{"", std::string(step) + ": " + dkim_getresultstr(st) + (detail && *detail ? std::string(" (") + detail + ")" : "")};
  };
  std::size_t body_start = 0;
  for (auto field : header_fields(message, body_start)) {
    std::string copy(field);  // libopendkim takes non-const bytes
    if ((status = dkim_header(dkim, reinterpret_cast<u_char*>(copy.data()), copy.size())) != DKIM_STAT_OK)
      return failed("dkim_header", status);
  }
  if ((status = dkim_eoh(dkim)) != DKIM_STAT_OK) return failed("dkim_eoh", status);
  std::string body(message.substr(body_start));
  if (!body.empty() && (status = dkim_body(dkim, reinterpret_cast<u_char*>(body.data()), body.size())) != DKIM_STAT_OK)
    return failed("dkim_body", status);
  if ((status = dkim_eom(dkim, nullptr)) != DKIM_STAT_OK) return failed("dkim_eom", status);
  static constexpr std::string_view name = "DKIM-Signature: ";
  u_char* text = nullptr;
  std::size_t len = 0;
  if ((status = dkim_getsighdr_d(dkim, name.size(), &text, &len)) != DKIM_STAT_OK) return failed("dkim_getsighdr_d", status);
  return {std::string(name) + with_crlf(text, len) + "\r\n", ""};
}

std::string author_domain(std::string_view message) {
  std::size_t body_start = 0;
  std::string_view from;
  for (auto field : header_fields(message, body_start)) {
    if (!is_field(field, "from")) continue;
    if (!from.empty()) return "";  // RFC 5322 §3.6: exactly one From
    from = field.substr(5);
  }
  if (from.empty()) return "";
  std::string value = strip_comments(from);
  // The address: inside <> when there are brackets, else the whole value;
  // quoted display names may hold anything, so quotes are skipped.
  std::string address;
  bool quoted = false, in_brackets = false, seen_brackets = false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (quoted) {
      if (c == '\\') ++i;
      else if (c == '"') quoted = false;
      continue;
    }
    if (c == '"') quoted = true;
    else if (c == '<' && !seen_brackets) in_brackets = seen_brackets = true, address.clear();
    else if (c == '>') in_brackets = false;
    else if (c == ',' && !in_brackets) return "";  // several authors
    else if (in_brackets || !seen_brackets) address += c;
  }
  const auto at = address.rfind('@');
  if (at == std::string::npos) return "";
  std::string domain = address.substr(at + 1);
  domain.erase(std::remove_if(domain.begin(), domain.end(), [](unsigned char c) { return std::isspace(c); }), domain.end());
  std::transform(domain.begin(), domain.end(), domain.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!domain.empty() && domain.back() == '.') domain.pop_back();
  return domain;
}

}  // namespace mailnet::node
